"""Slices of a volume as frames: which voxel axis to slice across, and prompts on a slice.

A slice is a plane of the voxel grid. The slice axis is the index axis (i, j or k) closest to
the requested anatomical direction (axial, coronal, sagittal) or to the normal of the view the
user prompted in (a RAS vector), so slicing never resamples. On a slice, image ``x`` is the
faster in-plane index axis and ``y`` the slower one (``array[s]`` read as rows and columns).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...geometry import ANATOMICAL_AXES, Box, Volume, closest_voxel_axis, nearest_index
from ...prompts import BoxPrompt, PointPrompt

_AXIS_NAMES = "ijk"


def slice_axis_for(volume: Volume, direction) -> int:
    """Index axis (0 = i, 1 = j, 2 = k) to slice across for ``direction``: "axial",
    "coronal", "sagittal", or a view normal in RAS (3 numbers, any length but zero)."""
    if isinstance(direction, str):
        if direction not in ANATOMICAL_AXES:
            raise ValueError(f"unknown slice direction {direction!r}; expected one of "
                             f"{', '.join(ANATOMICAL_AXES)} or a RAS normal vector")
        direction = ANATOMICAL_AXES[direction]
    return closest_voxel_axis(volume, direction)


@dataclass(frozen=True)
class SlicePlane:
    """Slicing of a ``(k, j, i)`` array of ``shape_kji`` across index axis ``index_axis``."""

    shape_kji: tuple[int, int, int]
    index_axis: int

    def __post_init__(self):
        if self.index_axis not in (0, 1, 2):
            raise ValueError(f"index_axis must be 0 (i), 1 (j) or 2 (k), got {self.index_axis!r}")
        object.__setattr__(self, "shape_kji", tuple(int(n) for n in self.shape_kji))

    @property
    def axis_name(self) -> str:
        return _AXIS_NAMES[self.index_axis]

    @property
    def array_axis(self) -> int:
        return 2 - self.index_axis

    @property
    def num_slices(self) -> int:
        return self.shape_kji[self.array_axis]

    @property
    def in_plane_axes(self) -> tuple[int, int]:
        """Index axes of image (x, y) on a slice."""
        x, y = (a for a in range(3) if a != self.index_axis)
        return x, y

    @property
    def slice_shape(self) -> tuple[int, int]:
        """(rows, columns) = (size along y, size along x)."""
        x, y = self.in_plane_axes
        return self.shape_kji[2 - y], self.shape_kji[2 - x]

    def take(self, array: np.ndarray, slice_index: int) -> np.ndarray:
        """The 2D (rows, columns) view of slice ``slice_index`` of ``array`` (no copy)."""
        index = [slice(None)] * 3
        index[self.array_axis] = slice_index
        return array[tuple(index)]

    def slab_box(self, first: int, stop: int) -> Box:
        """The array box of slices ``first <= s < stop``."""
        start, end = [0, 0, 0], list(self.shape_kji)
        start[self.array_axis], end[self.array_axis] = first, stop
        return Box(start, end)

    def as_slab(self, slice_values: np.ndarray) -> np.ndarray:
        """A (rows, columns) slice as the one-slice array block of :meth:`slab_box` (a view)."""
        return np.expand_dims(slice_values, self.array_axis)

    # --- prompts ------------------------------------------------------------------------------
    def locate(self, points_ijk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Continuous (i, j, k) points (N, 3) -> nearest slice indices (N,) and image (x, y) (N, 2)."""
        points = np.asarray(points_ijk, dtype=np.float64).reshape(-1, 3)
        x, y = self.in_plane_axes
        return nearest_index(points[:, self.index_axis]), points[:, [x, y]]

    def points_on_one_slice(self, points: list[PointPrompt]) -> tuple[int, np.ndarray, np.ndarray]:
        """Slice index, (N, 2) image coordinates and (N,) labels (1 positive, 0 negative) of
        clicks that must all lie on one slice."""
        if not points:
            raise ValueError("no points given")
        slices, xy = self.locate(np.array([p.ijk for p in points]))
        if len(set(slices.tolist())) > 1:
            raise ValueError(f"all points of one prompt must lie on one slice across axis {self.axis_name}; "
                             f"got slices {sorted(set(slices.tolist()))}")
        labels = np.array([1 if p.positive else 0 for p in points], dtype=np.int32)
        return int(slices[0]), xy, labels

    def box_on_one_slice(self, box: BoxPrompt) -> tuple[int, np.ndarray]:
        """Slice index and (x0, y0, x1, y1) image box of a box drawn on one slice."""
        slices, xy = self.locate(np.array([box.min_ijk, box.max_ijk]))
        if slices[0] != slices[1]:
            raise ValueError(f"a box is drawn on one slice, but its corners lie on slices {int(slices[0])} "
                             f"and {int(slices[1])} across axis {self.axis_name}")
        (x0, y0), (x1, y1) = np.minimum(xy[0], xy[1]), np.maximum(xy[0], xy[1])
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            x, y = (_AXIS_NAMES[a] for a in self.in_plane_axes)
            raise ValueError(f"a box needs a nonzero extent along both in-plane axes ({x} and {y}); got "
                             f"{x} {x0:g}..{x1:g}, {y} {y0:g}..{y1:g} (voxel index)")
        return int(slices[0]), np.array([x0, y0, x1, y1], dtype=np.float64)
