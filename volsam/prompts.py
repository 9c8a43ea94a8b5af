"""Prompts in voxel coordinates.

Users give points in RAS mm (Slicer), LPS mm (ITK, DICOM tools) or voxel indices; every
conversion goes through :mod:`volsam.geometry`. Inside the engine a prompt holds continuous
``(i, j, k)`` indices of the volume it was made for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import Volume, nearest_index

SPACES = ("ras", "lps", "ijk")


@dataclass(frozen=True)
class PointPrompt:
    """A click at continuous voxel index ``ijk``; ``positive`` False marks background."""

    ijk: tuple[float, float, float]
    positive: bool = True

    @property
    def voxel_ijk(self) -> np.ndarray:
        return nearest_index(self.ijk)

    @property
    def voxel_kji(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.voxel_ijk[::-1])


@dataclass(frozen=True)
class BoxPrompt:
    """An axis-aligned box in voxel indices, corners inclusive (``min_ijk <= max_ijk``)."""

    min_ijk: tuple[float, float, float]
    max_ijk: tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class MaskPrompt:
    """A binary mask on the volume's grid, (k, j, i)."""

    mask: np.ndarray


def to_ijk(volume: Volume, coordinates, space: str = "ras") -> np.ndarray:
    """Convert (3,) or (N, 3) coordinates given in ``space`` into continuous (i, j, k)."""
    coordinates = np.asarray(coordinates, dtype=np.float64)
    if coordinates.shape[-1:] != (3,):
        raise ValueError(f"a point needs 3 coordinates, got {coordinates.shape[-1:] or 'a scalar'}")
    if space == "ras":
        return volume.ras_to_ijk_points(coordinates)
    if space == "lps":
        return volume.lps_to_ijk_points(coordinates)
    if space == "ijk":
        return coordinates.copy()
    raise ValueError(f"coordinate space must be one of {SPACES}, got {space!r}")


def _describe(coordinates, space: str) -> str:
    values = ", ".join(f"{v:g}" for v in np.asarray(coordinates, float))
    return f"({values}) {'voxel index' if space == 'ijk' else space.upper() + ' mm'}"


def point_prompt(volume: Volume, coordinates, space: str = "ras", positive: bool = True) -> PointPrompt:
    """A point prompt from user coordinates; a point outside the image is a ValueError."""
    ijk = to_ijk(volume, coordinates, space)
    if ijk.shape != (3,):
        raise ValueError(f"one point needs 3 coordinates, got shape {ijk.shape}")
    if not volume.contains_ijk(ijk):
        low, high = volume.bounds_ras()
        raise ValueError(f"point {_describe(coordinates, space)} lies outside the image "
                         f"(voxel index {np.round(ijk, 2).tolist()}, image size {list(volume.shape_ijk)} "
                         f"(i, j, k); RAS extent {np.round(low, 1).tolist()} to {np.round(high, 1).tolist()})")
    return PointPrompt(tuple(float(v) for v in ijk), bool(positive))


def box_prompt(volume: Volume, corner_a, corner_b, space: str = "ras") -> BoxPrompt:
    """A box prompt from two opposite corners; both must lie in the image."""
    a, b = to_ijk(volume, corner_a, space), to_ijk(volume, corner_b, space)
    for corner, given in ((a, corner_a), (b, corner_b)):
        if not volume.contains_ijk(corner):
            raise ValueError(f"box corner {_describe(given, space)} lies outside the image "
                             f"(image size {list(volume.shape_ijk)} (i, j, k))")
    return BoxPrompt(tuple(np.minimum(a, b).tolist()), tuple(np.maximum(a, b).tolist()))


def mask_prompt(volume: Volume, mask: np.ndarray) -> MaskPrompt:
    mask = np.asarray(mask)
    if mask.shape != volume.shape_kji:
        raise ValueError(f"mask prompt of shape {mask.shape} does not match the image's "
                         f"(k, j, i) shape {volume.shape_kji}")
    return MaskPrompt(mask.astype(bool))
