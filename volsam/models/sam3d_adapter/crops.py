"""Crop geometry of the 3DSAM-adapter session: the 1 mm crop grid, sampling volume <-> crop,
the clicked-object rule and the negative-click rule, all on the model's device.

The model sees S^3 crops at 1 mm (the configuration's crop size), resampled from the volume's
own grid onto a grid aligned with the volume's voxel axes: crop voxel n along axis a sits at
volume index ``center[a] + (n - S/2) / spacing[a]``. Because the crop grid is aligned with the
voxel axes, any direction matrix (oblique, flipped) costs nothing here: only the spacing enters.
Crops are in (D, H, W) = (k, j, i) order, like the volume array.

The grid arithmetic (a few hundred numbers per crop) is done on the host in float64; the
voxel work (sampling, thresholds, distances, connected parts) runs in torch on whatever device
the volume tensor lives on, so a CUDA session keeps its volume, crops and masks on the GPU and
a CPU session runs the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...clicks import connected_regions
from ...geometry import Box
from .click_maps import lower_to_nearest_squared


@dataclass
class CropGrid:
    """A crop's sampling grid: its centre (continuous volume (i, j, k)), the volume's spacing
    (mm per voxel along i, j, k) and the crop's edge length in voxels (= mm)."""

    center_ijk: np.ndarray
    spacing_ijk: np.ndarray
    size: int

    def crop_to_ijk(self, crop_dhw: np.ndarray) -> np.ndarray:
        """(N, 3) crop voxel coordinates (d, h, w) -> (N, 3) volume (i, j, k)."""
        crop_whd = np.asarray(crop_dhw, float)[..., ::-1]
        return self.center_ijk + (crop_whd - self.size // 2) / self.spacing_ijk

    def ijk_to_crop(self, ijk: np.ndarray) -> np.ndarray:
        """(N, 3) volume (i, j, k) -> (N, 3) crop (d, h, w), continuous."""
        whd = (np.asarray(ijk, float) - self.center_ijk) * self.spacing_ijk + self.size // 2
        return whd[..., ::-1]

    def contains_ijk(self, ijk: np.ndarray) -> np.ndarray:
        crop = self.ijk_to_crop(ijk)
        return np.all((crop >= -0.5) & (crop < self.size - 0.5), axis=-1)

    def volume_box(self, shape_kji) -> Box:
        """Volume voxels whose centres fall inside the crop's extent, clipped to the volume."""
        low = self.center_ijk + (-0.5 - self.size // 2) / self.spacing_ijk
        high = self.center_ijk + (self.size - 0.5 - self.size // 2) / self.spacing_ijk
        start_ijk = np.ceil(low - 1e-9).astype(int)
        stop_ijk = np.floor(high + 1e-9).astype(int) + 1
        return Box(start_ijk[::-1], stop_ijk[::-1]).clip_to(shape_kji)

    def volume_axes_kji(self) -> list[np.ndarray]:
        """The continuous volume index of every crop voxel, per axis (k, j, i)."""
        n = np.arange(self.size, dtype=np.float64) - self.size // 2
        return [self.center_ijk[a] + n / self.spacing_ijk[a] for a in (2, 1, 0)]

    def crop_axes_kji(self, box: Box) -> list[np.ndarray]:
        """The continuous crop index of every volume voxel in ``box``, per axis (k, j, i)."""
        axes = []
        for axis_kji in range(3):
            axis_ijk = 2 - axis_kji
            index = np.arange(box.start[axis_kji], box.stop[axis_kji], dtype=np.float64)
            axes.append((index - self.center_ijk[axis_ijk]) * self.spacing_ijk[axis_ijk] + self.size // 2)
        return axes


def inside_axes(axes_kji, shape_kji) -> list[np.ndarray]:
    """Per axis, where a continuous index lies within half a voxel of an array of ``shape_kji``."""
    return [(a >= -0.5) & (a <= n - 0.5) for a, n in zip(axes_kji, shape_kji)]


def outer_and(vectors, device) -> torch.Tensor:
    """The outer product (logical and) of three per-axis bool vectors, as a bool tensor."""
    k, j, i = (torch.from_numpy(np.ascontiguousarray(v)).to(device) for v in vectors)
    return k[:, None, None] & j[None, :, None] & i[None, None, :]


def sample_trilinear(volume: torch.Tensor, index_kji_axes) -> torch.Tensor:
    """Sample ``volume`` (k, j, i) at the outer product of per-axis continuous indices (three 1D
    numpy arrays, k, j, i), trilinearly, as float32 on the volume's device; positions beyond
    the border take the border voxels. Only the block of ``volume`` that the indices reach is
    read (a crop of a large volume stays cheap)."""
    sizes = volume.shape
    lows = [int(max(0, np.floor(a.min()))) for a in index_kji_axes]
    highs = [int(min(n - 1, np.ceil(a.max()))) + 1 for a, n in zip(index_kji_axes, sizes)]
    if any(h <= lo for lo, h in zip(lows, highs)):
        block = torch.zeros((1, 1, 1), dtype=torch.float32, device=volume.device)
        lows = [0, 0, 0]
    else:
        block = volume[lows[0]:highs[0], lows[1]:highs[1], lows[2]:highs[2]].to(torch.float32)
    coordinates = []
    for axis, positions in enumerate(index_kji_axes):
        local = np.clip(positions - lows[axis], 0, block.shape[axis] - 1)
        n = block.shape[axis]
        coordinates.append((2 * local / max(n - 1, 1) - 1).astype(np.float32))
    # One host-to-device copy for the three axes' grid coordinates.
    flat = torch.from_numpy(np.concatenate(coordinates)).to(volume.device)
    k, j, i = torch.meshgrid(*flat.split([len(c) for c in coordinates]), indexing="ij")
    grid = torch.stack([i, j, k], dim=-1)[None]
    return F.grid_sample(block.contiguous()[None, None], grid, mode="bilinear", padding_mode="border",
                         align_corners=True)[0, 0]


def spread_points(points: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` points spread over ``points``: the one nearest their centroid first,
    then farthest-point sampling (deterministic)."""
    chosen = [int(np.argmin(np.linalg.norm(points - points.mean(0), axis=1)))]
    distance = np.linalg.norm(points - points[chosen[0]], axis=1)
    while len(chosen) < min(count, len(points)):
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return points[chosen]


#: Kept-object methods: "label" (scipy's labelling on the host), "flood" (3x3x3 max-pool
#: flood fill from the clicks, on the tensor's device), "auto" (label on CPU, flood elsewhere).
KEEP_METHODS = ("auto", "label", "flood")
#: Flood-fill steps between the checks for convergence (each check is one device sync).
FLOOD_STEPS_PER_CHECK = 8


def keep_clicked_parts(mask: torch.Tensor, clicks_kji: np.ndarray, method: str = "auto") -> torch.Tensor:
    """``mask`` (bool tensor) reduced to its connected parts (26-neighbourhood, as lesions are
    counted) that hold one of ``clicks_kji`` (indices into ``mask``; those outside it are
    ignored); the whole mask if no click is on it.

    The parts holding a click are what a flood fill from the clicks through the mask reaches,
    so on a GPU no labelling is needed: 3x3x3 max-pooling, masked, until nothing grows. On the
    CPU scipy's labelling is faster than the iterations, and (on the tensor's own memory, no
    copy) gives the same voxels.
    """
    if method not in KEEP_METHODS:
        raise ValueError(f"method must be one of {', '.join(KEEP_METHODS)}, got {method!r}")
    clicks_kji = np.asarray(clicks_kji, dtype=np.int64).reshape(-1, 3)
    inside = np.all((clicks_kji >= 0) & (clicks_kji < mask.shape), axis=1)
    clicks_kji = clicks_kji[inside]
    if method == "auto":
        method = "label" if mask.device.type == "cpu" else "flood"
    if method == "label":
        parts, count = connected_regions(mask.cpu().numpy())
        hit = np.unique(parts[tuple(clicks_kji.T)]) if len(clicks_kji) else np.zeros(0, int)
        hit = hit[hit > 0]
        if count <= 1 or not len(hit):
            return mask
        return torch.from_numpy(np.isin(parts, hit)).to(mask.device)
    if not len(clicks_kji):
        return mask
    index = tuple(torch.from_numpy(clicks_kji.T.copy()).to(mask.device))
    allowed = mask.to(torch.float32)[None, None]
    reached = torch.zeros_like(allowed)
    reached[(0, 0, *index)] = allowed[(0, 0, *index)]
    count = int(reached.sum())
    if count == 0:
        return mask  # no click on the mask: all of it
    while True:
        for _ in range(FLOOD_STEPS_PER_CHECK):
            reached = F.max_pool3d(reached, 3, stride=1, padding=1).mul_(allowed)
        # The reached set only grows, so an unchanged count means nothing grew.
        grown = int(reached.sum())
        if grown == count:
            return reached[0, 0] > 0
        count = grown


class NearestClick:
    """Squared distance (crop voxels = mm) from every crop voxel to its nearest click, kept
    for the clicks it was made from, so that one more click costs one pass over the crop
    whatever the number of clicks before it."""

    def __init__(self, shape, device) -> None:
        self.shape = tuple(shape)
        self.device = device
        self.points: tuple[tuple[float, float, float], ...] = ()
        self.squared = torch.full(self.shape, float("inf"), dtype=torch.float32, device=device)
        self._axes = [torch.arange(n, dtype=torch.float32, device=device) for n in self.shape]

    def update(self, points_dhw: np.ndarray) -> torch.Tensor:
        """The map for ``points_dhw`` (N, 3): extended by the new points when the points seen so
        far begin the list (a further click), rebuilt otherwise (after an undo)."""
        points = tuple(tuple(float(v) for v in p) for p in np.asarray(points_dhw, np.float32).reshape(-1, 3))
        if points[:len(self.points)] != self.points:
            self.points = ()
            self.squared.fill_(float("inf"))
        lower_to_nearest_squared(self.squared, points[len(self.points):], self._axes)
        self.points = points
        return self.squared


def apply_negative_rule(probability: torch.Tensor, nearest_positive: torch.Tensor,
                        nearest_negative: torch.Tensor) -> torch.Tensor:
    """Zero the probability of crop voxels closer to a negative click than to every positive one
    (the two :class:`NearestClick` maps). Crops are 1 mm isotropic, so crop-voxel distances are
    millimetres. Ties keep the voxel."""
    return probability.masked_fill(nearest_negative < nearest_positive, 0.0)
