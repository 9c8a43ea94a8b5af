"""Model inputs for the slices of a volume held in memory, made one slice at a time (spec D2, D3).

Intensities go to [0, 1] through a CT window (soft tissue by default) or, for MR and unknown
modality, clipping at the 0.5 and 99.5 percentiles of the whole volume. Each slice is then
resized to the model's square input, copied to 3 channels and normalised with the ImageNet
mean and std, as SAM2 was trained. No image files are involved, and no frame is kept: a slice's
input is made when the model needs its features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...preprocessing import CT_WINDOWS, CTWindow
from .slicing import SlicePlane

if TYPE_CHECKING:
    import torch

MODALITIES = ("ct", "mr", "unknown")
#: Below this 1st-percentile value an image is taken as CT in Hounsfield units (air is -1000).
CT_AIR_THRESHOLD = -500.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Percentiles are estimated on at most this many voxels (an evenly strided sample), so that
#: a large volume is not copied in full.
PERCENTILE_SAMPLE_VOXELS = 4_000_000


@dataclass(frozen=True)
class IntensityConfig:
    """How voxel values become [0, 1].

    ``modality``: "ct" uses ``ct_window`` (a preset name from ``volsam.preprocessing.CT_WINDOWS``
    or a ``(level, width)`` pair in HU); "mr" and "unknown" clip at ``percentiles`` of the volume.
    """

    modality: str = "ct"
    ct_window: str | tuple[float, float] = "soft_tissue"
    percentiles: tuple[float, float] = (0.5, 99.5)

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ValueError(f"unknown modality {self.modality!r}; expected one of {', '.join(MODALITIES)}")
        if isinstance(self.ct_window, str):
            if self.ct_window not in CT_WINDOWS:
                raise ValueError(f"unknown CT window preset {self.ct_window!r}; expected one of "
                                 f"{', '.join(CT_WINDOWS)} or a (level, width) pair")
        else:
            level, width = (float(v) for v in self.ct_window)
            if not width > 0:
                raise ValueError(f"a CT window needs a positive width, got (level, width) = ({level}, {width})")
            object.__setattr__(self, "ct_window", (level, width))
        low, high = (float(v) for v in self.percentiles)
        if not 0 <= low < high <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got ({low}, {high})")
        object.__setattr__(self, "percentiles", (low, high))

    @property
    def window(self) -> CTWindow:
        return CT_WINDOWS[self.ct_window] if isinstance(self.ct_window, str) else CTWindow(*self.ct_window)

    def value_range(self, array: np.ndarray) -> tuple[float, float]:
        """The (low, high) voxel values mapped to 0 and 1 for this volume."""
        if self.modality == "ct":
            return self.window.low, self.window.high
        flat = np.asarray(array).reshape(-1)
        sample = flat[:: max(1, flat.size // PERCENTILE_SAMPLE_VOXELS)]
        low, high = np.percentile(sample, self.percentiles)
        return float(low), float(high)


def guess_modality(array: np.ndarray) -> str:
    """"ct" when the darkest voxels look like air in HU, else "unknown" (percentile clipping)."""
    flat = np.asarray(array).reshape(-1)
    sample = flat[:: max(1, flat.size // 1_000_000)]
    return "ct" if float(np.percentile(sample, 1)) <= CT_AIR_THRESHOLD else "unknown"


class SliceFrames:
    """The model input of each slice of ``array`` across ``plane``, made on demand.

    ``frame(s)`` returns a float32 tensor (3, S, S) on ``device``. The volume is held by
    reference; nothing per slice is kept.
    """

    def __init__(self, array: np.ndarray, plane: SlicePlane, value_range: tuple[float, float],
                 image_size: int, device=None):
        import torch

        if tuple(array.shape) != plane.shape_kji:
            raise ValueError(f"array of shape {array.shape} does not match the slicing plane's "
                             f"{plane.shape_kji}")
        self.array = array
        self.plane = plane
        low, high = value_range
        self.low = float(low)
        # A constant image (high == low) maps to 0 everywhere rather than dividing by zero.
        self.scale = 1.0 / (float(high) - self.low) if high > low else 0.0
        self.image_size = int(image_size)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=self.device)[:, None, None]
        self._std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=self.device)[:, None, None]

    def __len__(self) -> int:
        return self.plane.num_slices

    @property
    def slice_shape(self) -> tuple[int, int]:
        return self.plane.slice_shape

    def frame(self, slice_index: int) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        if not 0 <= slice_index < len(self):
            raise IndexError(f"slice {slice_index} outside 0..{len(self) - 1}")
        values = np.asarray(self.plane.take(self.array, slice_index), dtype=np.float32)
        unit = torch.from_numpy(np.ascontiguousarray(values)).to(self.device)
        unit = ((unit - self.low) * self.scale).clamp_(0.0, 1.0)
        size = (self.image_size, self.image_size)
        if tuple(unit.shape) != size:
            unit = F.interpolate(unit[None, None], size=size, mode="bilinear", align_corners=False,
                                 antialias=True)[0, 0]
        return (unit.expand(3, *size) - self._mean) / self._std
