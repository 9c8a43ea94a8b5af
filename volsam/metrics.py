"""Overlap and surface metrics for binary 3-D segmentations.

Array and spacing conventions
    Masks are numpy arrays in (k, j, i) order, as in ``volsam.geometry.Volume``.
    Spacing is given as ``spacing_ijk``: (i, j, k) order in mm, exactly
    ``Volume.spacing``. Any nonzero voxel counts as foreground. Only the voxel
    grid and spacing matter: rotations in the IJK-to-RAS matrix preserve
    distances, so they need not be passed.

Surface metrics (NSD, HD95)
    These reproduce DeepMind's ``surface-distance`` package
    (github.com/google-deepmind/surface-distance, Apache 2.0) exactly: the
    surface is found on the grid of voxel corners from the 2x2x2 neighbour code,
    each surface element ("surfel") is weighted by its marching-cubes area taken
    from their neighbour-code lookup table, and distances are Euclidean
    distances in mm between surfel grid points. NSD is the area-weighted
    fraction of both surfaces lying within ``tolerance_mm`` of the other
    surface. HD95 is the larger of the two directed 95th percentiles, each the
    first area-sorted distance whose cumulative area fraction reaches 0.95.

Empty masks
    =================  ====  ===  ===  ====
    case               dice  iou  nsd  hd95
    =================  ====  ===  ===  ====
    both empty         1     1    1    0
    exactly one empty  0     0    0    inf
    =================  ====  ===  ===  ====

    (surface-distance itself returns NaN when both are empty; a segmentation
    that correctly finds nothing is a perfect result here.)
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

DEFAULT_TOLERANCE_MM = 5.0
HD_PERCENTILE = 95.0


@dataclass(frozen=True)
class SurfaceDistances:
    """Per-surfel distances (mm) to the other surface and surfel areas (mm^2).

    Each distance array is sorted ascending (ties by area, as surface-distance
    does) and its area array is in the same order.
    """

    distances_ref_to_pred: np.ndarray
    distances_pred_to_ref: np.ndarray
    surfel_areas_ref: np.ndarray
    surfel_areas_pred: np.ndarray


def dice(pred, ref) -> float:
    """Dice coefficient 2|P&R| / (|P| + |R|); 1.0 when both masks are empty."""
    pred_mask, ref_mask = _as_mask_pair(pred, ref)
    total = int(pred_mask.sum()) + int(ref_mask.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred_mask & ref_mask)) / total


def iou(pred, ref) -> float:
    """Intersection over union |P&R| / |P|R|; 1.0 when both masks are empty."""
    pred_mask, ref_mask = _as_mask_pair(pred, ref)
    union = int(np.count_nonzero(pred_mask | ref_mask))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(pred_mask & ref_mask)) / union


def compute_surface_distances(pred, ref, spacing_ijk) -> SurfaceDistances:
    """Surfels of both masks with their areas and distances to the other surface.

    ``pred`` and ``ref`` are (k, j, i) arrays; ``spacing_ijk`` is (i, j, k) mm.
    A mask that is empty has no surfels; the other mask's distances are inf.
    """
    pred_mask, ref_mask = _as_mask_pair(pred, ref)
    spacing_kji = _spacing_kji(spacing_ijk)
    union = pred_mask | ref_mask
    if not union.any():
        empty = np.zeros(0)
        return SurfaceDistances(empty, empty, empty, empty)

    # Crop to the union's bounding box plus one empty voxel on every side, so
    # that every surface corner is inside the corner grid.
    bounding_box = ndimage.find_objects(union.astype(np.uint8))[0]
    ref_codes = _neighbour_codes(np.pad(ref_mask[bounding_box], 1))
    pred_codes = _neighbour_codes(np.pad(pred_mask[bounding_box], 1))
    ref_border = (ref_codes != 0) & (ref_codes != 255)
    pred_border = (pred_codes != 0) & (pred_codes != 255)

    area_by_code = neighbour_code_to_surface_area(spacing_ijk)
    distances_ref_to_pred = _distance_to(pred_border, spacing_kji)[ref_border]
    distances_pred_to_ref = _distance_to(ref_border, spacing_kji)[pred_border]
    distances_ref_to_pred, areas_ref = _sorted_by_distance(
        distances_ref_to_pred, area_by_code[ref_codes[ref_border]])
    distances_pred_to_ref, areas_pred = _sorted_by_distance(
        distances_pred_to_ref, area_by_code[pred_codes[pred_border]])
    return SurfaceDistances(distances_ref_to_pred, distances_pred_to_ref,
                            areas_ref, areas_pred)


def normalized_surface_dice(pred, ref, spacing_ijk,
                            tolerance_mm: float = DEFAULT_TOLERANCE_MM) -> float:
    """Area-weighted fraction of both surfaces within ``tolerance_mm`` of the other."""
    _check_tolerance(tolerance_mm)
    return _nsd(compute_surface_distances(pred, ref, spacing_ijk), tolerance_mm)


def hausdorff_distance_95(pred, ref, spacing_ijk) -> float:
    """Max of the two directed, area-weighted 95th-percentile distances in mm."""
    return _robust_hausdorff(compute_surface_distances(pred, ref, spacing_ijk),
                             HD_PERCENTILE)


def compute_metrics(pred, ref, spacing_ijk,
                    tolerance_mm: float = DEFAULT_TOLERANCE_MM) -> dict:
    """Return {"dice", "iou", "nsd", "hd95"} as floats (hd95 may be inf).

    ``pred`` and ``ref`` are (k, j, i) arrays (nonzero = foreground);
    ``spacing_ijk`` is (i, j, k) mm, i.e. ``Volume.spacing``.
    """
    _check_tolerance(tolerance_mm)
    surface = compute_surface_distances(pred, ref, spacing_ijk)
    return {
        "dice": dice(pred, ref),
        "iou": iou(pred, ref),
        "nsd": _nsd(surface, tolerance_mm),
        "hd95": _robust_hausdorff(surface, HD_PERCENTILE),
    }


def neighbour_code_to_surface_area(spacing_ijk) -> np.ndarray:
    """Surfel area in mm^2 for each of the 256 2x2x2 neighbour codes."""
    s0, s1, s2 = _spacing_kji(spacing_ijk)
    normals = np.zeros((256, 4, 3))
    for code, code_normals in enumerate(_NEIGHBOUR_CODE_TO_NORMALS_IN_EIGHTHS):
        if code_normals:
            normals[code, :len(code_normals)] = np.asarray(code_normals) / 8.0
    # A triangle's normal scales with the product of the two other spacings;
    # the multiplication order follows surface-distance to match bit for bit.
    scaled = np.stack([normals[..., 0] * s1 * s2,
                       normals[..., 1] * s0 * s2,
                       normals[..., 2] * s0 * s1], axis=-1)
    return np.linalg.norm(scaled, axis=-1).sum(axis=1)


def _nsd(surface: SurfaceDistances, tolerance_mm: float) -> float:
    total_area = surface.surfel_areas_ref.sum() + surface.surfel_areas_pred.sum()
    if total_area == 0:
        return 1.0
    close_area = (
        surface.surfel_areas_ref[surface.distances_ref_to_pred <= tolerance_mm].sum()
        + surface.surfel_areas_pred[surface.distances_pred_to_ref <= tolerance_mm].sum())
    return float(close_area / total_area)


def _robust_hausdorff(surface: SurfaceDistances, percent: float) -> float:
    if surface.distances_ref_to_pred.size == 0 and surface.distances_pred_to_ref.size == 0:
        return 0.0
    return float(max(
        _directed_percentile(surface.distances_ref_to_pred, surface.surfel_areas_ref, percent),
        _directed_percentile(surface.distances_pred_to_ref, surface.surfel_areas_pred, percent)))


def _directed_percentile(sorted_distances, areas, percent: float) -> float:
    if sorted_distances.size == 0:
        return np.inf
    cumulative_fraction = np.cumsum(areas) / np.sum(areas)
    index = np.searchsorted(cumulative_fraction, percent / 100.0)
    return sorted_distances[min(index, sorted_distances.size - 1)]


def _neighbour_codes(padded_mask: np.ndarray) -> np.ndarray:
    """8-bit code of each voxel corner from the 2x2x2 voxels around it.

    Corner c lies between voxels c-1 and c of the unpadded mask; bit weights
    follow surface-distance's ENCODE_NEIGHBOURHOOD_3D_KERNEL (128 for the
    lowest-index voxel down to 1 for the highest).
    """
    corners_shape = tuple(n - 1 for n in padded_mask.shape)
    codes = np.zeros(corners_shape, dtype=np.uint8)
    for dk in (0, 1):
        for dj in (0, 1):
            for di in (0, 1):
                weight = np.uint8(1 << (7 - (4 * dk + 2 * dj + di)))
                shifted = padded_mask[dk:dk + corners_shape[0],
                                      dj:dj + corners_shape[1],
                                      di:di + corners_shape[2]]
                codes += shifted.astype(np.uint8) * weight
    return codes


def _distance_to(border: np.ndarray, spacing_kji) -> np.ndarray:
    """Euclidean distance in mm from every corner to the nearest border corner."""
    if not border.any():
        return np.full(border.shape, np.inf)
    return ndimage.distance_transform_edt(~border, sampling=spacing_kji)


def _sorted_by_distance(distances, areas):
    order = np.lexsort((areas, distances))
    return distances[order], areas[order]


# --- label images as inputs ----------------------------------------------------------------
#: A label image holds at most this many distinct foreground values (uint8 label maps); an
#: intensity image (CT in HU, MR) given as a mask has far more, or negative or fractional values.
MAX_LABELS = 255


def label_values(array, name: str) -> tuple[int, ...]:
    """The foreground labels of a label image, or a ValueError when ``array`` is not one
    (fractional or negative values, or more than :data:`MAX_LABELS` distinct labels)."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
        fractional = array[array != np.round(array)]
        if fractional.size:
            raise ValueError(f"{name} is not a label image: it holds non-integer values such as "
                             f"{float(fractional.flat[0]):g}; expected a mask of whole label values (0 = background)")
    elif array.dtype != bool and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} is not a label image (voxel type {array.dtype}); expected integer labels")
    if array.size and array.min() < 0:
        raise ValueError(f"{name} is not a label image: it holds negative values (down to {array.min():g}), "
                         "as an intensity image such as CT does; expected a mask (0 = background, labels >= 1)")
    values = np.unique(array)
    values = values[values != 0]
    if values.size > MAX_LABELS:
        raise ValueError(f"{name} is not a label image: it holds {values.size} distinct values (an intensity image?); "
                         f"expected a mask with at most {MAX_LABELS} labels")
    return tuple(int(v) for v in values)


def masks_for_label(pred, ref, label: int | None, pred_name: str = "pred", ref_name: str = "ref"):
    """The binary (pred, ref) masks that ``volsam metrics`` scores, checking both are label images.

    Without ``label`` every nonzero voxel is foreground. With ``label`` the reference's voxels
    equal to it are the target (the label must occur there), and the prediction's too, except
    that a prediction holding a single label (a binary mask, as ``volsam segment`` writes with
    value 1) is taken as a whole: it is the model's answer for that target. A prediction
    without the label scores 0 (an empty answer), not an error.
    """
    ref_labels = label_values(ref, ref_name)
    pred_labels = label_values(pred, pred_name)
    pred, ref = np.asarray(pred), np.asarray(ref)
    if label is None:
        return pred != 0, ref != 0
    if label <= 0:
        raise ValueError(f"--label {label}: labels are >= 1 (0 is the background); leave out --label to compare "
                         "all nonzero voxels")
    if label not in ref_labels:
        raise ValueError(f"{ref_name}: no voxel has label {label} (it holds {_labels_text(ref_labels)}); expected "
                         "the label to occur in the reference (leave out --label to compare all nonzero voxels)")
    pred_mask = pred != 0 if len(pred_labels) == 1 else pred == label
    return pred_mask, ref == label


def _labels_text(labels) -> str:
    if not labels:
        return "no label: it is empty"
    shown = ", ".join(map(str, labels[:10]))
    return f"label{'s' if len(labels) > 1 else ''} {shown}{' ...' if len(labels) > 10 else ''}"


def _as_mask_pair(pred, ref):
    pred_mask = np.asarray(pred) != 0
    ref_mask = np.asarray(ref) != 0
    if pred_mask.ndim != 3 or pred_mask.shape != ref_mask.shape:
        raise ValueError(f"pred and ref must be 3-D arrays of the same shape, "
                         f"got {pred_mask.shape} and {ref_mask.shape}")
    return pred_mask, ref_mask


def _spacing_kji(spacing_ijk):
    spacing = np.asarray(spacing_ijk, dtype=float)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"spacing_ijk must be three positive finite mm values in "
                         f"(i, j, k) order, got {spacing_ijk!r}")
    return tuple(float(s) for s in spacing[::-1])


def _check_tolerance(tolerance_mm):
    if not np.isfinite(tolerance_mm) or tolerance_mm < 0:
        raise ValueError(f"tolerance_mm must be a finite value >= 0, got {tolerance_mm!r}")


# Marching-cubes triangle normals for every 2x2x2 neighbour code, in units of
# 1/8 (each entry is one triangle; its length is the triangle's area in voxel
# units). Copied from surface-distance's lookup_tables.py
# (Copyright 2018 Google Inc., Apache License 2.0) so that surfel areas match
# that package exactly; Testing/test_metrics.py checks all 256 entries.
_NEIGHBOUR_CODE_TO_NORMALS_IN_EIGHTHS = (
    (),
    ((1, 1, 1),),
    ((-1, -1, 1),),
    ((-2, -2, 0), (2, 2, 0)),
    ((1, -1, 1),),
    ((-2, 0, -2), (2, 0, 2)),
    ((1, -1, 1), (-1, -1, 1)),
    ((4, 0, 0), (2, 2, 2), (1, 1, 1)),
    ((-1, 1, 1),),
    ((1, 1, 1), (-1, 1, 1)),
    ((-2, 0, 2), (-2, 0, 2)),
    ((4, 0, 0), (-2, -2, 2), (-1, -1, 1)),
    ((2, -2, 0), (2, -2, 0)),
    ((4, 0, 0), (2, -2, 2), (-1, 1, -1)),
    ((-4, 0, 0), (-2, 2, 2), (-1, 1, 1)),
    ((4, 0, 0), (4, 0, 0)),
    ((1, -1, -1),),
    ((0, -2, -2), (0, 2, 2)),
    ((-1, -1, 1), (1, -1, -1)),
    ((0, -4, 0), (2, 2, 2), (1, 1, 1)),
    ((1, -1, 1), (1, -1, -1)),
    ((0, 0, -4), (2, 2, 2), (-1, -1, -1)),
    ((-1, -1, 1), (1, -1, 1), (1, -1, -1)),
    ((-1, -1, -1), (-2, -2, -2), (2, 2, 2), (1, 1, 1)),
    ((-1, 1, 1), (1, -1, -1)),
    ((0, -2, -2), (0, 2, 2), (-1, 1, 1)),
    ((-2, 0, 2), (-2, 0, 2), (1, -1, -1)),
    ((1, 1, 1), (3, 3, 3), (0, -2, 2), (-2, 0, 2)),
    ((1, -1, -1), (2, -2, 0), (2, -2, 0)),
    ((3, 3, 3), (0, 2, -2), (-1, -1, -1), (-2, 2, 0)),
    ((-4, 0, 0), (-1, -1, -1), (-2, -2, -2), (1, 1, 1)),
    ((-4, 0, 0), (-1, -1, -1), (-2, -2, -2)),
    ((1, -1, 1),),
    ((1, 1, 1), (1, -1, 1)),
    ((0, -2, 2), (0, 2, -2)),
    ((0, -4, 0), (1, 1, -1), (2, 2, -2)),
    ((1, -1, 1), (1, -1, 1)),
    ((1, -1, 1), (-2, 0, -2), (2, 0, 2)),
    ((0, -2, 2), (0, 2, -2), (1, -1, 1)),
    ((-3, -3, 3), (0, 2, 2), (1, 1, -1), (-2, 0, -2)),
    ((-1, 1, 1), (1, -1, 1)),
    ((1, 1, 1), (1, -1, 1), (-1, 1, 1)),
    ((0, 0, 4), (-2, -2, 2), (-1, -1, 1)),
    ((2, 2, -2), (2, 2, -2), (1, 1, -1), (-1, -1, 1)),
    ((1, -1, 1), (2, -2, 0), (2, -2, 0)),
    ((4, 0, 0), (2, -2, 2), (-1, 1, -1), (1, -1, 1)),
    ((0, 2, -2), (3, -3, -3), (-1, 1, 1), (2, 2, 0)),
    ((-4, 0, 0), (-2, -2, 2), (-1, -1, 1)),
    ((2, -2, 0), (-2, 2, 0)),
    ((0, 4, 0), (-2, 2, 2), (1, -1, -1)),
    ((0, 4, 0), (1, -1, 1), (-2, 2, -2)),
    ((0, 4, 0), (0, -4, 0)),
    ((2, -2, 0), (-2, 2, 0), (1, -1, 1)),
    ((-3, -3, -3), (-2, 0, 2), (-1, -1, -1), (-2, 2, 0)),
    ((1, 1, 1), (0, -4, 0), (-2, -2, -2), (-1, -1, -1)),
    ((0, -4, 0), (-2, -2, -2), (-1, -1, -1)),
    ((-1, 1, 1), (2, -2, 0), (-2, 2, 0)),
    ((0, 4, 0), (2, 2, -2), (-1, -1, 1), (-1, -1, 1)),
    ((-3, 3, -3), (-2, -2, 0), (-1, 1, -1), (-2, 0, 2)),
    ((0, 4, 0), (2, 2, -2), (-1, -1, 1)),
    ((2, -2, 0), (-2, 2, 0), (2, -2, 0), (2, -2, 0)),
    ((-2, -2, 0), (-2, -2, 0), (-1, -1, 1)),
    ((1, 1, 1), (-2, -2, 0), (-2, -2, 0)),
    ((-2, -2, 0), (-2, -2, 0)),
    ((-1, -1, 1),),
    ((1, 1, 1), (-1, -1, 1)),
    ((-1, -1, 1), (-1, -1, 1)),
    ((-1, -1, 1), (-2, -2, 0), (2, 2, 0)),
    ((0, -2, 2), (0, -2, 2)),
    ((0, 0, 4), (2, -2, 2), (1, -1, 1)),
    ((0, -2, 2), (0, -2, 2), (-1, -1, 1)),
    ((3, -3, 3), (0, -2, -2), (-1, 1, -1), (2, 2, 0)),
    ((-1, -1, 1), (-1, 1, 1)),
    ((1, 1, 1), (-1, -1, 1), (-1, 1, 1)),
    ((-1, -1, 1), (-2, 0, 2), (-2, 0, 2)),
    ((4, 0, 0), (-2, -2, 2), (-1, -1, 1), (-1, -1, 1)),
    ((0, 4, 0), (-2, 2, -2), (1, -1, 1)),
    ((-2, 2, -2), (-2, 2, -2), (-1, 1, -1), (-1, 1, -1)),
    ((-2, 0, -2), (3, -3, -3), (0, 2, -2), (-1, 1, 1)),
    ((4, 0, 0), (-2, 2, -2), (1, -1, 1)),
    ((-2, 0, 2), (2, 0, -2)),
    ((0, 0, 4), (-2, 2, 2), (-1, 1, 1)),
    ((-1, -1, 1), (-2, 0, 2), (2, 0, -2)),
    ((-2, 0, -2), (-3, 3, 3), (-2, -2, 0), (-1, 1, 1)),
    ((0, 0, -4), (2, 2, -2), (-1, -1, 1)),
    ((0, 0, 4), (0, 0, 4)),
    ((1, 1, 1), (1, 1, 1), (2, 2, 2), (0, 0, 4)),
    ((1, 1, 1), (2, 2, 2), (0, 0, 4)),
    ((-2, 0, 2), (2, 0, -2), (-1, 1, 1)),
    ((0, 0, 4), (2, -2, 2), (1, -1, 1), (1, -1, 1)),
    ((-2, 0, 2), (-2, 0, 2), (-2, 0, 2), (2, 0, -2)),
    ((1, -1, 1), (2, 0, 2), (2, 0, 2)),
    ((2, 0, 2), (-3, -3, 3), (-2, 2, 0), (-1, -1, 1)),
    ((0, 0, 4), (2, -2, 2), (1, -1, 1)),
    ((1, 1, 1), (2, 0, 2), (2, 0, 2)),
    ((2, 0, 2), (2, 0, 2)),
    ((-1, -1, 1), (1, -1, 1)),
    ((1, 1, 1), (-1, -1, 1), (1, -1, 1)),
    ((-1, -1, 1), (0, -2, 2), (0, 2, -2)),
    ((0, -4, 0), (1, 1, -1), (2, 2, -2), (-1, -1, 1)),
    ((0, -2, 2), (0, -2, 2), (1, -1, 1)),
    ((0, 0, 4), (2, -2, 2), (1, -1, 1), (1, -1, 1)),
    ((0, -2, 2), (0, -2, 2), (0, -2, 2), (0, 2, -2)),
    ((0, 2, 2), (0, 2, 2), (1, -1, -1)),
    ((-1, 1, 1), (1, -1, 1), (-1, -1, 1)),
    ((-1, 1, 1), (1, -1, 1), (-1, -1, 1), (1, 1, 1)),
    ((0, 0, 4), (-2, -2, 2), (-1, -1, 1), (-1, -1, 1)),
    ((1, 1, 1), (1, -1, 1), (1, -1, -1)),
    ((0, 4, 0), (-2, 2, -2), (1, -1, 1), (1, -1, 1)),
    ((1, 1, 1), (-1, -1, 1), (1, -1, -1)),
    ((0, -2, -2), (0, 2, 2), (1, 1, 1)),
    ((1, 1, 1), (1, -1, -1)),
    ((4, 0, 0), (2, -2, -2), (1, -1, -1)),
    ((-2, 2, 2), (-1, 1, 1), (-2, 2, 2), (1, -1, -1)),
    ((3, -3, 3), (0, 2, 2), (-1, 1, -1), (-2, 0, 2)),
    ((0, -4, 0), (-2, 2, 2), (-1, 1, 1)),
    ((-3, -3, 3), (2, -2, 0), (0, 2, 2), (-1, -1, 1)),
    ((-1, 1, 1), (-2, 2, 2), (0, 0, 4)),
    ((1, 1, 1), (0, 2, 2), (0, 2, 2)),
    ((0, 2, 2), (0, 2, 2)),
    ((4, 0, 0), (2, 2, 2), (1, 1, 1), (1, 1, 1)),
    ((1, -1, 1), (-1, -1, 1), (1, 1, 1)),
    ((-2, 0, -2), (2, 0, 2), (1, 1, 1)),
    ((1, 1, 1), (1, -1, 1)),
    ((-2, -2, 0), (2, 2, 0), (1, 1, 1)),
    ((1, 1, 1), (-1, -1, 1)),
    ((1, 1, 1), (1, 1, 1)),
    ((1, 1, 1),),
    ((1, 1, 1),),
    ((1, 1, 1), (1, 1, 1)),
    ((1, 1, 1), (-1, -1, 1)),
    ((-2, -2, 0), (2, 2, 0), (1, 1, 1)),
    ((1, 1, 1), (1, -1, 1)),
    ((-2, 0, -2), (2, 0, 2), (1, 1, 1)),
    ((1, -1, 1), (-1, -1, 1), (1, 1, 1)),
    ((4, 0, 0), (2, 2, 2), (1, 1, 1), (1, 1, 1)),
    ((0, 2, 2), (0, 2, 2)),
    ((1, 1, 1), (0, 2, 2), (0, 2, 2)),
    ((-1, 1, 1), (-2, 2, 2), (0, 0, 4)),
    ((-3, -3, 3), (2, -2, 0), (0, 2, 2), (-1, -1, 1)),
    ((0, -4, 0), (-2, 2, 2), (-1, 1, 1)),
    ((3, -3, 3), (0, 2, 2), (-1, 1, -1), (-2, 0, 2)),
    ((-2, 2, 2), (-1, 1, 1), (-2, 2, 2), (1, -1, -1)),
    ((4, 0, 0), (2, -2, -2), (1, -1, -1)),
    ((1, 1, 1), (1, -1, -1)),
    ((0, -2, -2), (0, 2, 2), (1, 1, 1)),
    ((1, 1, 1), (-1, -1, 1), (1, -1, -1)),
    ((0, 4, 0), (-2, 2, -2), (1, -1, 1), (1, -1, 1)),
    ((1, 1, 1), (1, -1, 1), (1, -1, -1)),
    ((0, 0, 4), (-2, -2, 2), (-1, -1, 1), (-1, -1, 1)),
    ((-1, 1, 1), (1, -1, 1), (-1, -1, 1), (1, 1, 1)),
    ((-1, 1, 1), (1, -1, 1), (-1, -1, 1)),
    ((0, 2, 2), (0, 2, 2), (1, -1, -1)),
    ((0, -2, -2), (0, 2, 2), (0, 2, 2), (0, 2, 2)),
    ((0, 0, 4), (2, -2, 2), (1, -1, 1), (1, -1, 1)),
    ((0, -2, 2), (0, -2, 2), (1, -1, 1)),
    ((0, -4, 0), (1, 1, -1), (2, 2, -2), (-1, -1, 1)),
    ((-1, -1, 1), (0, -2, 2), (0, 2, -2)),
    ((1, 1, 1), (-1, -1, 1), (1, -1, 1)),
    ((-1, -1, 1), (1, -1, 1)),
    ((2, 0, 2), (2, 0, 2)),
    ((1, 1, 1), (2, 0, 2), (2, 0, 2)),
    ((0, 0, 4), (2, -2, 2), (1, -1, 1)),
    ((2, 0, 2), (-3, -3, 3), (-2, 2, 0), (-1, -1, 1)),
    ((1, -1, 1), (2, 0, 2), (2, 0, 2)),
    ((-2, 0, -2), (2, 0, 2), (2, 0, 2), (2, 0, 2)),
    ((0, 0, 4), (2, -2, 2), (1, -1, 1), (1, -1, 1)),
    ((-2, 0, 2), (2, 0, -2), (-1, 1, 1)),
    ((1, 1, 1), (2, 2, 2), (0, 0, 4)),
    ((1, 1, 1), (1, 1, 1), (2, 2, 2), (0, 0, 4)),
    ((0, 0, 4), (0, 0, 4)),
    ((0, 0, -4), (2, 2, -2), (-1, -1, 1)),
    ((-2, 0, -2), (-3, 3, 3), (-2, -2, 0), (-1, 1, 1)),
    ((-1, -1, 1), (-2, 0, 2), (2, 0, -2)),
    ((0, 0, 4), (-2, 2, 2), (-1, 1, 1)),
    ((-2, 0, 2), (2, 0, -2)),
    ((4, 0, 0), (-2, 2, -2), (1, -1, 1)),
    ((-2, 0, -2), (3, -3, -3), (0, 2, -2), (-1, 1, 1)),
    ((-2, 2, -2), (-2, 2, -2), (-1, 1, -1), (-1, 1, -1)),
    ((0, 4, 0), (-2, 2, -2), (1, -1, 1)),
    ((4, 0, 0), (-2, -2, 2), (-1, -1, 1), (-1, -1, 1)),
    ((-1, -1, 1), (-2, 0, 2), (-2, 0, 2)),
    ((1, 1, 1), (-1, -1, 1), (-1, 1, 1)),
    ((-1, -1, 1), (-1, 1, 1)),
    ((3, -3, 3), (0, -2, -2), (-1, 1, -1), (2, 2, 0)),
    ((0, -2, 2), (0, -2, 2), (-1, -1, 1)),
    ((0, 0, 4), (2, -2, 2), (1, -1, 1)),
    ((0, -2, 2), (0, -2, 2)),
    ((-1, -1, 1), (-2, -2, 0), (2, 2, 0)),
    ((-1, -1, 1), (-1, -1, 1)),
    ((1, 1, 1), (-1, -1, 1)),
    ((-1, -1, 1),),
    ((-2, -2, 0), (-2, -2, 0)),
    ((1, 1, 1), (-2, -2, 0), (-2, -2, 0)),
    ((-2, -2, 0), (-2, -2, 0), (-1, -1, 1)),
    ((-2, -2, 0), (-2, -2, 0), (-2, -2, 0), (2, 2, 0)),
    ((0, 4, 0), (2, 2, -2), (-1, -1, 1)),
    ((-3, 3, -3), (-2, -2, 0), (-1, 1, -1), (-2, 0, 2)),
    ((0, 4, 0), (2, 2, -2), (-1, -1, 1), (-1, -1, 1)),
    ((-1, 1, 1), (2, -2, 0), (-2, 2, 0)),
    ((0, -4, 0), (-2, -2, -2), (-1, -1, -1)),
    ((1, 1, 1), (0, -4, 0), (-2, -2, -2), (-1, -1, -1)),
    ((-3, -3, -3), (-2, 0, 2), (-1, -1, -1), (-2, 2, 0)),
    ((2, -2, 0), (-2, 2, 0), (1, -1, 1)),
    ((0, 4, 0), (0, -4, 0)),
    ((0, 4, 0), (1, -1, 1), (-2, 2, -2)),
    ((0, 4, 0), (-2, 2, 2), (1, -1, -1)),
    ((2, -2, 0), (-2, 2, 0)),
    ((-4, 0, 0), (-2, -2, 2), (-1, -1, 1)),
    ((0, 2, -2), (3, -3, -3), (-1, 1, 1), (2, 2, 0)),
    ((4, 0, 0), (2, -2, 2), (-1, 1, -1), (1, -1, 1)),
    ((1, -1, 1), (2, -2, 0), (2, -2, 0)),
    ((2, 2, -2), (2, 2, -2), (1, 1, -1), (-1, -1, 1)),
    ((0, 0, 4), (-2, -2, 2), (-1, -1, 1)),
    ((1, 1, 1), (1, -1, 1), (-1, 1, 1)),
    ((-1, 1, 1), (1, -1, 1)),
    ((-3, -3, 3), (0, 2, 2), (1, 1, -1), (-2, 0, -2)),
    ((0, -2, 2), (0, 2, -2), (1, -1, 1)),
    ((1, -1, 1), (-2, 0, -2), (2, 0, 2)),
    ((1, -1, 1), (1, -1, 1)),
    ((0, -4, 0), (1, 1, -1), (2, 2, -2)),
    ((0, -2, 2), (0, 2, -2)),
    ((1, 1, 1), (1, -1, 1)),
    ((1, -1, 1),),
    ((-4, 0, 0), (-1, -1, -1), (-2, -2, -2)),
    ((-4, 0, 0), (-1, -1, -1), (-2, -2, -2), (1, 1, 1)),
    ((3, 3, 3), (0, 2, -2), (-1, -1, -1), (-2, 2, 0)),
    ((1, -1, -1), (2, -2, 0), (2, -2, 0)),
    ((1, 1, 1), (3, 3, 3), (0, -2, 2), (-2, 0, 2)),
    ((-2, 0, 2), (-2, 0, 2), (1, -1, -1)),
    ((0, -2, -2), (0, 2, 2), (-1, 1, 1)),
    ((-1, 1, 1), (1, -1, -1)),
    ((-1, -1, -1), (-2, -2, -2), (2, 2, 2), (1, 1, 1)),
    ((-1, -1, 1), (1, -1, 1), (1, -1, -1)),
    ((0, 0, -4), (2, 2, 2), (-1, -1, -1)),
    ((1, -1, 1), (1, -1, -1)),
    ((0, -4, 0), (2, 2, 2), (1, 1, 1)),
    ((-1, -1, 1), (1, -1, -1)),
    ((0, -2, -2), (0, 2, 2)),
    ((1, -1, -1),),
    ((4, 0, 0), (4, 0, 0)),
    ((-4, 0, 0), (-2, 2, 2), (-1, 1, 1)),
    ((4, 0, 0), (2, -2, 2), (-1, 1, -1)),
    ((2, -2, 0), (2, -2, 0)),
    ((4, 0, 0), (-2, -2, 2), (-1, -1, 1)),
    ((-2, 0, 2), (-2, 0, 2)),
    ((1, 1, 1), (-1, 1, 1)),
    ((-1, 1, 1),),
    ((4, 0, 0), (2, 2, 2), (1, 1, 1)),
    ((1, -1, 1), (-1, -1, 1)),
    ((-2, 0, -2), (2, 0, 2)),
    ((1, -1, 1),),
    ((-2, -2, 0), (2, 2, 0)),
    ((-1, -1, 1),),
    ((1, 1, 1),),
    (),
)
