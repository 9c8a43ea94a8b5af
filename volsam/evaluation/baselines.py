"""Classical baselines that ``volsam evaluate --baseline`` scores next to a model, from the same clicks.

``region-growing``: SimpleITK's confidence-connected filter. The image is smoothed a little
(a Gaussian of ``smoothing_mm``), then grown from the positive clicks: voxels connected to a
seed whose intensity lies within ``multiplier`` standard deviations of the region's mean, the
statistics starting from a small neighbourhood of the seeds and re-estimated
``iterations`` times. Negative clicks split the grown region: each voxel goes to the nearest
click (in mm), and those nearer to a negative one are taken out; the result keeps only the
parts connected to a positive click. It is the tool a user would reach
for without a learned model, so a learned model has to beat it by a clear margin to be worth
running.

A baseline is a predictor like the models' (``open(volume)``, ``add_clicks(clicks)`` adds to
the earlier clicks and returns the mask on the volume's grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..clicks import SimulatedClick

BASELINES = ("region-growing",)


@dataclass(frozen=True)
class RegionGrowingConfig:
    """Defaults chosen on training phantoms (seed 21, ``--variation full``; never on a held-out
    set): of multipliers 1.5, 2, 2.5 and smoothing 0, 1, 2 mm, 2 and 1 mm scored best."""

    multiplier: float = 2.0
    iterations: int = 4
    initial_radius_voxels: int = 1
    smoothing_mm: float = 1.0

    def __post_init__(self):
        if not self.multiplier > 0 or self.iterations < 0 or self.initial_radius_voxels < 0 or self.smoothing_mm < 0:
            raise ValueError(f"region growing needs multiplier > 0 and iterations, radius, smoothing >= 0, got {self}")


class RegionGrowingPredictor:
    """Confidence-connected region growing from the clicks (see the module docstring)."""

    name = "region-growing"

    def __init__(self, config: RegionGrowingConfig = RegionGrowingConfig()):
        self.config = config
        self.image = None
        self.clicks: list[SimulatedClick] = []

    def open(self, volume) -> None:
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.asarray(volume.array, dtype=np.float32))
        image.SetSpacing(tuple(float(s) for s in volume.spacing))  # physical smoothing; grid order is what counts
        if self.config.smoothing_mm > 0:
            image = sitk.SmoothingRecursiveGaussian(image, self.config.smoothing_mm)
        self.image, self.clicks = image, []

    def _grow(self, seeds_kji) -> np.ndarray:
        import SimpleITK as sitk

        grown = sitk.ConfidenceConnected(
            self.image, seedList=[tuple(int(v) for v in seed[::-1]) for seed in seeds_kji],
            numberOfIterations=self.config.iterations, multiplier=self.config.multiplier,
            initialNeighborhoodRadius=self.config.initial_radius_voxels, replaceValue=1)
        return sitk.GetArrayViewFromImage(grown) > 0

    def add_clicks(self, clicks: list[SimulatedClick]) -> np.ndarray:
        from scipy import ndimage

        if self.image is None:
            raise ValueError("open a volume before adding clicks")
        self.clicks += list(clicks)
        positives = [c.kji for c in self.clicks if c.positive]
        negatives = [c.kji for c in self.clicks if not c.positive]
        shape = self.image.GetSize()[::-1]
        if not positives:
            return np.zeros(shape, dtype=bool)
        mask = self._grow(positives)
        if negatives:
            spacing = self.image.GetSpacing()[::-1]
            to_positive = ndimage.distance_transform_edt(~_points_mask(positives, shape), sampling=spacing)
            to_negative = ndimage.distance_transform_edt(~_points_mask(negatives, shape), sampling=spacing)
            mask &= to_positive <= to_negative
        parts, _ = ndimage.label(mask)
        kept = {int(parts[p]) for p in positives} - {0}
        return np.isin(parts, sorted(kept)) if kept else np.zeros(shape, dtype=bool)


def _points_mask(points_kji, shape) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(np.asarray(points_kji).T)] = True
    return mask


def load_baseline(name: str):
    if name == "region-growing":
        return RegionGrowingPredictor()
    raise ValueError(f"--baseline must be one of {', '.join(BASELINES)}, got {name!r}")
