"""Volume geometry: the one place where voxel indices and physical coordinates meet.

An engine :class:`Volume` is a numpy array in ``(k, j, i)`` order (slowest axis first, as
SimpleITK and Slicer's ``arrayFromVolume`` return it) plus a 4x4 ``ijk_to_ras`` matrix that
maps a voxel index ``(i, j, k, 1)`` to RAS millimetres. Everything else in volsam (prompts,
crops, Slicer nodes, files) converts through the functions here.

Conventions:

* Index vectors are ``(i, j, k)``; array indices are ``(k, j, i)``. ``kji`` in a name means
  array order.
* Voxel ``(i, j, k)`` is the *centre* of a voxel; its extent is index +-0.5.
* The nearest voxel of a continuous index rounds half up (``floor(x + 0.5)``), so a point on
  a voxel face goes to the higher voxel on every axis, whatever the axis direction.
* Files store LPS (DICOM, ITK); Slicer and this module's API use RAS. ``lps_to_ras`` flips x, y.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # SimpleITK is imported lazily by the converters
    import SimpleITK as sitk

#: Physical tolerance for comparing geometries read from files. NIfTI keeps its affine in
#: float32, so the same grid written by two tools can differ by about 1e-5 mm.
FILE_GEOMETRY_TOLERANCE_MM = 1e-4

_LPS_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(points: np.ndarray) -> np.ndarray:
    """Convert LPS points (..., 3) to RAS (the conversion is its own inverse)."""
    points = np.asarray(points, dtype=np.float64)
    return points * np.array([-1.0, -1.0, 1.0])


ras_to_lps = lps_to_ras


@dataclass(frozen=True)
class Box:
    """A half-open box of array indices in ``(k, j, i)`` order: ``start <= index < stop``.

    Used for crops and for "what changed" reports. An empty box has ``stop <= start`` on
    some axis.
    """

    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    def __post_init__(self):
        object.__setattr__(self, "start", tuple(int(v) for v in self.start))
        object.__setattr__(self, "stop", tuple(int(v) for v in self.stop))

    @classmethod
    def full(cls, shape_kji) -> Box:
        return cls((0, 0, 0), tuple(shape_kji))

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> Box | None:
        """Bounding box of the nonzero voxels, or None for an all-zero mask."""
        nonzero = np.nonzero(mask)
        if nonzero[0].size == 0:
            return None
        return cls(tuple(int(a.min()) for a in nonzero), tuple(int(a.max()) + 1 for a in nonzero))

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(max(0, b - a) for a, b in zip(self.start, self.stop))

    @property
    def is_empty(self) -> bool:
        return any(b <= a for a, b in zip(self.start, self.stop))

    def union(self, other: Box | None) -> Box:
        if other is None or other.is_empty:
            return self
        if self.is_empty:
            return other
        return Box(np.minimum(self.start, other.start), np.maximum(self.stop, other.stop))

    def intersection(self, other: Box) -> Box:
        start = np.maximum(self.start, other.start)
        # An empty result keeps stop == start so that its slices select nothing (a negative
        # stop would count from the array's end).
        return Box(start, np.maximum(start, np.minimum(self.stop, other.stop)))

    def clip_to(self, shape_kji) -> Box:
        return self.intersection(Box.full(shape_kji))

    def contains_kji(self, index_kji) -> bool:
        return all(a <= int(v) < b for v, a, b in zip(index_kji, self.start, self.stop))


def union_boxes(*boxes: Box | None) -> Box | None:
    """Union of the non-empty boxes given, or None if there are none."""
    result = None
    for box in boxes:
        if box is not None and not box.is_empty:
            result = box if result is None else result.union(box)
    return result


def _validated_matrix(ijk_to_ras) -> np.ndarray:
    matrix = np.array(ijk_to_ras, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise ValueError(f"ijk_to_ras must be a 4x4 matrix, got shape {matrix.shape}")
    if not np.allclose(matrix[3], [0, 0, 0, 1]):
        raise ValueError(f"ijk_to_ras must be affine (last row 0 0 0 1), got {matrix[3].tolist()}")
    if abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise ValueError("ijk_to_ras is singular: voxel spacing must be nonzero on every axis")
    return matrix


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image: ``array`` in (k, j, i) order and its voxel-to-RAS matrix.

    The array is held by reference (not copied); ``with_array`` makes a volume of the same
    geometry around another array.
    """

    array: np.ndarray
    ijk_to_ras: np.ndarray

    def __post_init__(self):
        if self.array.ndim != 3:
            raise ValueError(f"a volume needs a 3D array in (k, j, i) order, got {self.array.ndim}D "
                             f"of shape {self.array.shape}")
        object.__setattr__(self, "ijk_to_ras", _validated_matrix(self.ijk_to_ras))

    @classmethod
    def from_spacing(cls, array, spacing=(1.0, 1.0, 1.0), origin_ras=(0.0, 0.0, 0.0),
                     direction_ras=np.eye(3)) -> Volume:
        """Build from spacing (i, j, k) mm, RAS origin of voxel (0,0,0) and a 3x3 matrix whose
        columns are the RAS unit directions of the i, j and k axes."""
        matrix = np.eye(4)
        matrix[:3, :3] = np.asarray(direction_ras, float) * np.asarray(spacing, float)[None, :]
        matrix[:3, 3] = origin_ras
        return cls(np.asarray(array), matrix)

    # --- derived geometry -------------------------------------------------------------------
    @property
    def shape_kji(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        return tuple(self.array.shape[::-1])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along i, j, k."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def direction_ras(self) -> np.ndarray:
        """3x3 matrix whose columns are the RAS unit vectors of the i, j, k axes."""
        return self.ijk_to_ras[:3, :3] / self.spacing[None, :]

    @property
    def origin_ras(self) -> np.ndarray:
        """RAS position of the centre of voxel (0, 0, 0)."""
        return self.ijk_to_ras[:3, 3].copy()

    @property
    def ras_to_ijk(self) -> np.ndarray:
        return np.linalg.inv(self.ijk_to_ras)

    @property
    def orientation_code(self) -> str:
        return orientation_code(self.ijk_to_ras)

    def with_array(self, array: np.ndarray) -> Volume:
        if tuple(array.shape) != self.shape_kji:
            raise ValueError(f"array shape {tuple(array.shape)} does not match the volume's "
                             f"(k, j, i) shape {self.shape_kji}")
        return Volume(array, self.ijk_to_ras)

    # --- point conversions --------------------------------------------------------------------
    def ras_to_ijk_points(self, points_ras) -> np.ndarray:
        """RAS mm (N, 3) or (3,) -> continuous (i, j, k) indices of the same shape."""
        return _apply_affine(self.ras_to_ijk, points_ras)

    def ijk_to_ras_points(self, points_ijk) -> np.ndarray:
        """Continuous (i, j, k) indices (N, 3) or (3,) -> RAS mm."""
        return _apply_affine(self.ijk_to_ras, points_ijk)

    def lps_to_ijk_points(self, points_lps) -> np.ndarray:
        return self.ras_to_ijk_points(lps_to_ras(points_lps))

    def ijk_to_lps_points(self, points_ijk) -> np.ndarray:
        return ras_to_lps(self.ijk_to_ras_points(points_ijk))

    def ras_to_nearest_ijk(self, points_ras) -> np.ndarray:
        """RAS mm -> integer (i, j, k) of the voxel holding the point (may lie outside)."""
        return nearest_index(self.ras_to_ijk_points(points_ras))

    def contains_ijk(self, points_ijk) -> np.ndarray | bool:
        """Whether continuous indices fall in a voxel of the image (index in [-0.5, n - 0.5))."""
        points = np.asarray(points_ijk, dtype=np.float64)
        nearest = nearest_index(points)
        inside = np.all((nearest >= 0) & (nearest < np.array(self.shape_ijk)), axis=-1)
        return bool(inside) if points.ndim == 1 else inside

    # --- physical extent ----------------------------------------------------------------------
    def corners_ras(self) -> np.ndarray:
        """RAS positions of the 8 outer corners of the voxel grid (voxel faces, not centres)."""
        low = np.full(3, -0.5)
        high = np.array(self.shape_ijk, float) - 0.5
        corners = np.array(list(itertools.product(*zip(low, high))))
        return self.ijk_to_ras_points(corners)

    def bounds_ras(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned RAS bounding box (min, max) of the image's physical extent."""
        corners = self.corners_ras()
        return corners.min(axis=0), corners.max(axis=0)

    def same_geometry(self, other: Volume, tolerance_mm: float = FILE_GEOMETRY_TOLERANCE_MM) -> bool:
        """Same voxel grid, index for index: equal shapes and every grid corner and voxel
        centre axis within ``tolerance_mm``. Grids that cover the same voxels in another index
        order are *not* the same geometry here (see :func:`reorient_like`)."""
        return self.shape_kji == other.shape_kji and geometry_distance_mm(
            self.ijk_to_ras, other.ijk_to_ras, self.shape_ijk) <= tolerance_mm


def _apply_affine(matrix: np.ndarray, points) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-1] != 3:
        raise ValueError(f"points need 3 coordinates on their last axis, got shape {points.shape}")
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def nearest_index(points_ijk) -> np.ndarray:
    """Round continuous indices half up to integers (see the module docstring)."""
    return np.floor(np.asarray(points_ijk, dtype=np.float64) + 0.5).astype(np.int64)


def geometry_distance_mm(ijk_to_ras_a, ijk_to_ras_b, shape_ijk) -> float:
    """Largest distance in mm between the two mappings over the grid's corner voxels.

    The mappings are affine, so the maximum over the whole grid is reached at a corner.
    """
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in shape_ijk])), float)
    a = _apply_affine(np.asarray(ijk_to_ras_a, float), corners)
    b = _apply_affine(np.asarray(ijk_to_ras_b, float), corners)
    return float(np.max(np.linalg.norm(a - b, axis=1)))


def orientation_code(ijk_to_ras) -> str:
    """Three letters naming where the i, j and k axes point (e.g. 'RAS', 'LPS', 'LPI').

    Follows nibabel's convention: the letter is the anatomical direction the index increases
    towards, judged by the axis' largest RAS component.
    """
    positive, negative = "RAS", "LPI"
    letters = []
    for column in np.asarray(ijk_to_ras, float)[:3, :3].T:
        axis = int(np.argmax(np.abs(column)))
        letters.append(positive[axis] if column[axis] > 0 else negative[axis])
    return "".join(letters)


def reorient_like(volume: Volume, reference: Volume,
                  tolerance_mm: float = FILE_GEOMETRY_TOLERANCE_MM) -> Volume:
    """Return ``volume`` re-indexed onto ``reference``'s grid when both cover the same voxels.

    Two readers may store one file's voxels in different index orders (Slicer flips k for
    some left-handed NIfTI files that SimpleITK keeps). This finds the axis permutation and
    flips that map one grid onto the other, so arrays can be compared voxel for voxel.
    Raises ValueError when the grids differ physically.
    """
    for perm in itertools.permutations(range(3)):  # perm[a]: volume index axis for reference axis a
        if sorted(volume.shape_ijk[p] for p in perm) != sorted(reference.shape_ijk):
            continue
        if any(volume.shape_ijk[perm[a]] != reference.shape_ijk[a] for a in range(3)):
            continue
        for flips in itertools.product((False, True), repeat=3):
            # Index map reference ijk -> volume ijk, as a 4x4 matrix.
            ref_to_vol = np.zeros((4, 4))
            ref_to_vol[3, 3] = 1.0
            for a in range(3):
                n = reference.shape_ijk[a]
                ref_to_vol[perm[a], a] = -1.0 if flips[a] else 1.0
                ref_to_vol[perm[a], 3] = (n - 1) if flips[a] else 0.0
            candidate = volume.ijk_to_ras @ ref_to_vol
            if geometry_distance_mm(candidate, reference.ijk_to_ras, reference.shape_ijk) <= tolerance_mm:
                array = volume.array
                for a in range(3):  # flips are per reference axis, applied in volume axes
                    if flips[a]:
                        array = np.flip(array, axis=2 - perm[a])
                # array axes are (k, j, i) = index axes (2, 1, 0); reorder to reference's
                kji_order = [2 - perm[2 - axis] for axis in range(3)]
                array = np.transpose(array, kji_order)
                return Volume(np.ascontiguousarray(array), reference.ijk_to_ras)
    raise ValueError("the two images do not share one voxel grid in physical space "
                     f"(shapes {volume.shape_ijk} and {reference.shape_ijk} (i, j, k), orientations "
                     f"{volume.orientation_code} and {reference.orientation_code})")


def closest_voxel_axis(volume: Volume, direction_ras) -> int:
    """Index axis (0 = i, 1 = j, 2 = k) whose direction is closest to a RAS direction (sign
    ignored), e.g. the slice axis for an axial view uses direction (0, 0, 1)."""
    direction = np.asarray(direction_ras, float)
    norm = np.linalg.norm(direction)
    if direction.shape != (3,) or norm == 0:
        raise ValueError(f"a direction needs 3 coordinates and a nonzero length, got {direction_ras!r}")
    return int(np.argmax(np.abs(volume.direction_ras.T @ (direction / norm))))


ANATOMICAL_AXES = {"sagittal": (1.0, 0.0, 0.0), "coronal": (0.0, 1.0, 0.0), "axial": (0.0, 0.0, 1.0)}


# --- SimpleITK --------------------------------------------------------------------------------
def volume_from_sitk(image: "sitk.Image") -> Volume:
    """Convert a 3D scalar SimpleITK image (LPS geometry) into a Volume (RAS)."""
    import SimpleITK as sitk

    if image.GetDimension() != 3:
        raise ValueError(f"expected a 3D image, got a {image.GetDimension()}D image "
                         f"of size {image.GetSize()}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"expected a scalar (one value per voxel) image, got "
                         f"{image.GetNumberOfComponentsPerPixel()} components per voxel")
    ijk_to_lps = np.eye(4)
    direction = np.array(image.GetDirection(), float).reshape(3, 3)
    ijk_to_lps[:3, :3] = direction * np.array(image.GetSpacing(), float)[None, :]
    ijk_to_lps[:3, 3] = image.GetOrigin()
    return Volume(sitk.GetArrayFromImage(image), _LPS_FLIP @ ijk_to_lps)


def volume_to_sitk(volume: Volume, array: np.ndarray | None = None) -> "sitk.Image":
    """Convert a Volume (or another array on its grid) into a SimpleITK image (LPS)."""
    import SimpleITK as sitk

    data = volume.array if array is None else array
    if tuple(data.shape) != volume.shape_kji:
        raise ValueError(f"array shape {tuple(data.shape)} does not match the volume's {volume.shape_kji}")
    if data.dtype == bool:
        data = data.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data))
    ijk_to_lps = _LPS_FLIP @ volume.ijk_to_ras
    spacing = volume.spacing
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(v) for v in ijk_to_lps[:3, 3]))
    image.SetDirection(tuple(float(v) for v in (ijk_to_lps[:3, :3] / spacing[None, :]).ravel()))
    return image
