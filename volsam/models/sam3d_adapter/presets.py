"""Intensity presets: CT clipping range and z-score statistics per training dataset.

The official pipeline clips to the dataset's HU range, then z-scores with fixed constants
(spec section 8). A model trained on one dataset expects that dataset's preset. ``ct`` is a
generic default for other CT: the mean of the four ranges and statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class IntensityPreset:
    name: str
    clip_low: float
    clip_high: float
    mean: float
    std: float
    description: str = ""

    def apply(self, hounsfield: np.ndarray) -> np.ndarray:
        """Clip to [clip_low, clip_high], then (x - mean) / std, as float32."""
        clipped = np.clip(np.asarray(hounsfield, dtype=np.float32), self.clip_low, self.clip_high)
        return (clipped - np.float32(self.mean)) / np.float32(self.std)


_DATASETS = (
    IntensityPreset("kits", -54, 247, 59.53867, 55.457336, "KiTS21 kidney tumours"),
    IntensityPreset("lits", -48, 163, 60.057533, 40.198017, "LiTS17 liver tumours"),
    IntensityPreset("pancreas", -39, 204, 68.45214, 63.422806, "MSD Task07 pancreas tumours"),
    IntensityPreset("colon", -57, 175, 65.175035, 32.651197, "MSD Task10 colon cancer"),
)
GENERIC = IntensityPreset(
    "ct", float(np.mean([p.clip_low for p in _DATASETS])), float(np.mean([p.clip_high for p in _DATASETS])),
    float(np.mean([p.mean for p in _DATASETS])), float(np.mean([p.std for p in _DATASETS])),
    "generic CT (mean of the four dataset presets)")
PRESETS: dict[str, IntensityPreset] = {p.name: p for p in (*_DATASETS, GENERIC)}
DEFAULT_PRESET = "ct"


def get_preset(name: str | None) -> IntensityPreset:
    name = DEFAULT_PRESET if name in (None, "") else str(name).lower()
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown intensity preset {name!r}; expected one of {', '.join(PRESETS)}") from None


def preset_matching(intensity: dict) -> str | None:
    """The preset whose constants equal a checkpoint's training intensities
    (``clip_low``, ``clip_high``, ``mean``, ``std``), if one does."""
    for name, preset in PRESETS.items():
        if np.allclose([preset.clip_low, preset.clip_high, preset.mean, preset.std],
                       [intensity["clip_low"], intensity["clip_high"], intensity["mean"], intensity["std"]]):
            return name
    return None
