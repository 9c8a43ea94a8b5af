"""How each model's training data is preprocessed, as data that checkpoints record.

3DSAM-adapter (spec section 8): the image is resampled to isotropic ``spacing_mm`` (1 mm in the
paper), clipped to a per-dataset range and z-scored with per-dataset constants; the binary
target label (``label == value``) is resampled linearly with it and thresholded at 0.5. The
four datasets of the paper have fixed constants (presets); any other dataset gets them from
its training cases the way nnU-Net does for CT: the 0.5 and 99.5 percentiles of the
foreground intensities are the clip range, their mean and standard deviation the z-score.

SAM2-3dMed (spec D2): no resampling (slices are resized to the model's image size when they
are fed); a CT window, or percentile clipping for other modalities, scales intensities to
[0, 1]. The ImageNet normalisation comes later, on the slices fed to the model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from ..preprocessing import CT_WINDOWS

#: Foreground voxels sampled per case for the intensity statistics (nnU-Net's figure).
FOREGROUND_SAMPLES_PER_CASE = 10_000


@dataclass(frozen=True)
class AdapterIntensity:
    """Clip range (HU for CT) and z-score constants of a dataset."""

    clip_low: float
    clip_high: float
    mean: float
    std: float

    def __post_init__(self):
        if not self.clip_low < self.clip_high:
            raise ValueError(f"clip range must have low < high, got [{self.clip_low}, {self.clip_high}]")
        if not self.std > 0:
            raise ValueError(f"z-score standard deviation must be positive, got {self.std}")


def _presets() -> dict[str, AdapterIntensity]:
    from ..models.sam3d_adapter.presets import PRESETS

    return {name: AdapterIntensity(float(p.clip_low), float(p.clip_high), float(p.mean), float(p.std))
            for name, p in PRESETS.items()}


#: The paper's datasets (spec section 8 table) and ``ct``, the inference default of
#: :class:`volsam.sessions.adapter_session.AdapterSession` (the mean of the four), taken from
#: the model package so that training and inference share one table.
ADAPTER_PRESETS = _presets()
PRESET_AUGMENTATION = {"kits": "zoom3d", "lits": "zoom3d", "pancreas": "inplane", "colon": "inplane", "ct": "zoom3d"}
#: robust: zoom3d with a zoom per axis, plus random contrast, noise and blur (for data from other scanners).
AUGMENTATIONS = ("zoom3d", "inplane", "robust", "none")


@dataclass(frozen=True)
class AdapterPreprocessing:
    spacing_mm: float
    intensity: AdapterIntensity
    kind: str = "sam3d-adapter"

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def to_dict(self) -> dict:
        return asdict(self)

    def image(self, volume):
        """Resample, clip and z-score: a float32 Volume on the isotropic grid."""
        from ..preprocessing import resample_to_spacing, zscore

        resampled = resample_to_spacing(volume.with_array(volume.array.astype(np.float32)),
                                        self.spacing_mm, "linear", default_value=self.intensity.clip_low)
        clipped = np.clip(resampled.array, self.intensity.clip_low, self.intensity.clip_high)
        return resampled.with_array(zscore(clipped, self.intensity.mean, self.intensity.std))

    def label(self, label_volume, value: int) -> np.ndarray:
        """Binary target on the isotropic grid: linear resampling of ``label == value``, > 0.5."""
        from ..preprocessing import resample_to_spacing

        target = label_volume.with_array((label_volume.array == value).astype(np.float32))
        return (resample_to_spacing(target, self.spacing_mm, "linear").array > 0.5).astype(np.uint8)


@dataclass(frozen=True)
class Sam2Preprocessing:
    """``window``: a name of :data:`volsam.preprocessing.CT_WINDOWS`, or "percentile"."""

    window: str = "soft_tissue"
    kind: str = "sam2-3dmed"

    def __post_init__(self):
        if self.window not in (*CT_WINDOWS, "percentile"):
            raise ValueError(f"window must be one of {', '.join((*CT_WINDOWS, 'percentile'))}, got {self.window!r}")

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def to_dict(self) -> dict:
        return asdict(self)

    def image(self, volume):
        from ..preprocessing import apply_window, clip_percentiles

        if self.window == "percentile":
            return volume.with_array(clip_percentiles(volume.array))
        return volume.with_array(apply_window(volume.array, CT_WINDOWS[self.window]))

    def label(self, label_volume, value: int) -> np.ndarray:
        return (label_volume.array == value).astype(np.uint8)


def default_sam2_window(is_ct: bool) -> str:
    """Spec D2: the soft-tissue window for CT, percentile clipping for MR and unknown modalities."""
    return "soft_tissue" if is_ct else "percentile"


def foreground_intensity(cases, progress: bool = True, seed: int = 0) -> AdapterIntensity:
    """nnU-Net-style constants from the foreground (label > 0) of the training cases."""
    from tqdm import tqdm

    from ..io import read_image

    rng = np.random.default_rng(seed)
    samples = []
    for case in tqdm(cases, desc="intensity statistics", unit="case", disable=not progress, leave=False):
        image, label = read_image(case.image).array, read_image(case.label).array
        values = image[label > 0]
        if values.size > FOREGROUND_SAMPLES_PER_CASE:
            values = rng.choice(values, FOREGROUND_SAMPLES_PER_CASE, replace=False)
        samples.append(values.astype(np.float64))
    values = np.concatenate(samples) if samples else np.zeros(0)
    if values.size < 2:
        raise ValueError("the training cases have no foreground voxels, so no intensity statistics can be "
                         "computed; pass --preset (kits, lits, pancreas, colon)")
    low, high = np.percentile(values, [0.5, 99.5])
    if high <= low:
        high = low + 1.0
    return AdapterIntensity(float(low), float(high), float(values.mean()), float(max(values.std(), 1e-6)))
