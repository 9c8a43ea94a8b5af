"""Intensity handling, resampling and crops shared by both methods.

Resampling keeps the physical extent: a grid resampled to another spacing covers the same
box of space (voxel faces, not centres), and a result on that grid maps back onto the
original grid with :func:`resample_like`. SimpleITK does the interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import Box, Volume, volume_from_sitk, volume_to_sitk

_INTERPOLATORS = ("linear", "nearest")


def _sitk_interpolator(name: str):
    import SimpleITK as sitk

    if name not in _INTERPOLATORS:
        raise ValueError(f"interpolation must be one of {_INTERPOLATORS}, got {name!r}")
    return sitk.sitkLinear if name == "linear" else sitk.sitkNearestNeighbor


def grid_with_spacing(volume: Volume, spacing) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The ijk_to_ras matrix and (i, j, k) size of a grid with ``spacing`` (mm, i/j/k order)
    along the volume's own axes, covering the volume's extent (rounded to whole voxels)."""
    spacing = np.broadcast_to(np.asarray(spacing, float), (3,))
    if np.any(spacing <= 0):
        raise ValueError(f"target spacing must be positive, got {spacing.tolist()}")
    extent = np.array(volume.shape_ijk) * volume.spacing
    size = np.maximum(1, np.round(extent / spacing)).astype(int)
    matrix = np.eye(4)
    matrix[:3, :3] = volume.direction_ras * spacing[None, :]
    # Keep the low corner (voxel face at index -0.5) fixed: move the first centre inwards.
    low_corner = volume.ijk_to_ras_points(np.full(3, -0.5))
    matrix[:3, 3] = low_corner + volume.direction_ras @ (spacing / 2)
    return matrix, tuple(int(n) for n in size)


def resample_to_spacing(volume: Volume, spacing, interpolation: str = "linear",
                        default_value: float = 0.0) -> Volume:
    """Resample onto a grid of ``spacing`` mm (i, j, k) with the same axes and extent.

    Use "linear" for images and "nearest" for labels.
    """
    matrix, size_ijk = grid_with_spacing(volume, spacing)
    target = Volume(np.zeros(size_ijk[::-1], dtype=np.uint8), matrix)
    return resample_like(volume, target, interpolation, default_value)


def resample_like(volume: Volume, reference: Volume, interpolation: str = "linear",
                  default_value: float = 0.0) -> Volume:
    """Resample ``volume`` onto ``reference``'s grid (e.g. a result back to the original image:
    "nearest" for labels, "linear" for probabilities). Outside ``volume`` the value is
    ``default_value``."""
    import SimpleITK as sitk

    source = volume.array
    if source.dtype == bool:
        source = source.astype(np.uint8)
    image = volume_to_sitk(volume, source)
    grid = volume_to_sitk(reference, np.zeros(reference.shape_kji, dtype=np.uint8))
    output_type = image.GetPixelID()
    if interpolation == "linear" and not np.issubdtype(source.dtype, np.floating):
        image = sitk.Cast(image, sitk.sitkFloat32)
        output_type = sitk.sitkFloat32
    resampled = sitk.Resample(image, grid, sitk.Transform(), _sitk_interpolator(interpolation),
                              float(default_value), output_type)
    return Volume(volume_from_sitk(resampled).array, reference.ijk_to_ras)


# --- intensities ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CTWindow:
    """A CT display window in Hounsfield units."""

    level: float
    width: float

    @property
    def low(self) -> float:
        return self.level - self.width / 2

    @property
    def high(self) -> float:
        return self.level + self.width / 2


CT_WINDOWS = {
    "soft_tissue": CTWindow(40, 400),
    "lung": CTWindow(-600, 1500),
    "bone": CTWindow(400, 1800),
}


def apply_window(array: np.ndarray, window: CTWindow) -> np.ndarray:
    """Clip to the window and scale it to [0, 1] (float32)."""
    clipped = np.clip(np.asarray(array, np.float32), window.low, window.high)
    return (clipped - window.low) / np.float32(window.width)


def percentile_range(array: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    lo, hi = np.percentile(np.asarray(array), [low, high])
    return float(lo), float(hi)


def clip_percentiles(array: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Clip at the given percentiles and scale to [0, 1] (float32); a constant image gives 0."""
    lo, hi = percentile_range(array, low, high)
    clipped = np.clip(np.asarray(array, np.float32), lo, hi)
    return (clipped - lo) / np.float32(hi - lo) if hi > lo else np.zeros_like(clipped)


def zscore(array: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(x - mean) / std with given statistics (float32)."""
    if std <= 0:
        raise ValueError(f"z-score needs a positive standard deviation, got {std}")
    return (np.asarray(array, np.float32) - np.float32(mean)) / np.float32(std)


# --- crops ----------------------------------------------------------------------------------
def crop_box_around(center_kji, size_kji) -> Box:
    """The box of ``size_kji`` voxels whose centre voxel is ``center_kji``: [c - s//2, c - s//2 + s).

    For an even size 128 this is [c - 64, c + 64), the 3DSAM-adapter convention.
    """
    center = np.asarray(center_kji, dtype=np.int64)
    size = np.broadcast_to(np.asarray(size_kji, dtype=np.int64), (3,))
    start = center - size // 2
    return Box(start, start + size)


def crop(array: np.ndarray, box: Box, pad_value: float = 0) -> np.ndarray:
    """Extract ``box`` from ``array`` (k, j, i), filling the part outside the array with ``pad_value``."""
    out = np.full(box.shape, pad_value, dtype=array.dtype)
    inside = box.clip_to(array.shape)
    if not inside.is_empty:
        offset = np.array(inside.start) - np.array(box.start)
        target = tuple(slice(o, o + n) for o, n in zip(offset, inside.shape))
        out[target] = array[inside.slices]
    return out


def crop_around_point(array: np.ndarray, center_kji, size_kji, pad_value: float = 0):
    """Crop a box of ``size_kji`` centred on a voxel, padding outside the image.

    Returns (crop, box) where ``box`` is the crop's unclipped place in ``array``.
    """
    box = crop_box_around(center_kji, size_kji)
    return crop(array, box, pad_value), box


def paste_crop(target: np.ndarray, values: np.ndarray, box: Box) -> Box:
    """Write the in-image part of a crop back into ``target`` in place; returns the box written."""
    if tuple(values.shape) != box.shape:
        raise ValueError(f"crop of shape {values.shape} does not fit box of shape {box.shape}")
    inside = box.clip_to(target.shape)
    if not inside.is_empty:
        offset = np.array(inside.start) - np.array(box.start)
        source = tuple(slice(o, o + n) for o, n in zip(offset, inside.shape))
        target[inside.slices] = values[source]
    return inside
