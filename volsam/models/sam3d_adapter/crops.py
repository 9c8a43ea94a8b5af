"""Crop geometry of the 3DSAM-adapter session: the 1 mm crop grid, sampling volume <-> crop,
the clicked-object rule and the negative-click rule.

The model sees S^3 crops at 1 mm (the configuration's crop size), resampled from the volume's
own grid onto a grid aligned with the volume's voxel axes: crop voxel n along axis a sits at
volume index ``center[a] + (n - S/2) / spacing[a]``. Because the crop grid is aligned with the
voxel axes, any direction matrix (oblique, flipped) costs nothing here: only the spacing enters.
Crops are in (D, H, W) = (k, j, i) order, like the volume array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...geometry import Box


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


def outside_mask(axes_kji, shape_kji) -> np.ndarray:
    """Where the outer product of per-axis indices falls more than half a voxel outside an
    array of ``shape_kji``."""
    inside = [(a >= -0.5) & (a <= n - 0.5) for a, n in zip(axes_kji, shape_kji)]
    return ~(inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :])


def sample_trilinear(array, index_kji_axes) -> np.ndarray:
    """Sample ``array`` (k, j, i) at the outer product of per-axis continuous indices (three 1D
    arrays, k, j, i), trilinearly; positions beyond the border take the border voxels. Only the
    block of ``array`` that the indices reach is read (a crop of a large volume stays cheap)."""
    import torch
    import torch.nn.functional as F

    sizes = array.shape
    lows = [int(max(0, np.floor(a.min()))) for a in index_kji_axes]
    highs = [int(min(n - 1, np.ceil(a.max()))) + 1 for a, n in zip(index_kji_axes, sizes)]
    if any(h <= lo for lo, h in zip(lows, highs)):
        block = np.zeros((1, 1, 1), np.float32)
        lows = [0, 0, 0]
    else:
        block = np.asarray(array[lows[0]:highs[0], lows[1]:highs[1], lows[2]:highs[2]], dtype=np.float32)
    coordinates = []
    for axis, positions in enumerate(index_kji_axes):
        local = np.clip(positions - lows[axis], 0, block.shape[axis] - 1)
        n = block.shape[axis]
        coordinates.append(torch.from_numpy((2 * local / max(n - 1, 1) - 1).astype(np.float32)))
    k, j, i = torch.meshgrid(*coordinates, indexing="ij")
    grid = torch.stack([i, j, k], dim=-1)[None]
    return F.grid_sample(torch.from_numpy(np.ascontiguousarray(block))[None, None], grid, mode="bilinear",
                         padding_mode="border", align_corners=True)[0, 0].numpy()


def spread_points(points: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` points spread over ``points``: the one nearest their centroid first,
    then farthest-point sampling (deterministic)."""
    chosen = [int(np.argmin(np.linalg.norm(points - points.mean(0), axis=1)))]
    distance = np.linalg.norm(points - points[chosen[0]], axis=1)
    while len(chosen) < min(count, len(points)):
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return points[chosen]


def keep_clicked_parts(mask: np.ndarray, clicks_kji: np.ndarray) -> np.ndarray:
    """``mask`` reduced to its connected parts (26-neighbourhood, as lesions are counted) that
    hold one of ``clicks_kji`` (indices into ``mask``; those outside it are ignored); the whole
    mask if no click is on it."""
    from ...clicks import connected_regions

    parts, count = connected_regions(mask)
    inside = np.all((clicks_kji >= 0) & (clicks_kji < mask.shape), axis=1)
    hit = np.unique(parts[tuple(clicks_kji[inside].T)]) if inside.any() else np.zeros(0, int)
    hit = hit[hit > 0]
    if count <= 1 or not len(hit):
        return mask
    return np.isin(parts, hit)


def apply_negative_rule(probability: np.ndarray, positives_dhw: np.ndarray, negatives_dhw: np.ndarray) -> np.ndarray:
    """Zero the probability of crop voxels closer to a negative click than to every positive one.

    Crops are 1 mm isotropic, so crop-voxel distances are millimetres. Ties keep the voxel.
    """
    size = probability.shape
    axes = [np.arange(n, dtype=np.float32) for n in size]

    def nearest(points):  # squared distances summed per axis by broadcasting: no coordinate grid
        best = np.full(size, np.inf, np.float32)
        for d, h, w in np.asarray(points, np.float32):
            squared = ((axes[0] - d) ** 2)[:, None, None] + ((axes[1] - h) ** 2)[None, :, None] + ((axes[2] - w) ** 2)
            np.minimum(best, squared, out=best)
        return best

    removed = nearest(negatives_dhw) < nearest(positives_dhw)
    result = probability.copy()
    result[removed] = 0.0
    return result
