"""Embed once, prompt many: 3DSAM-adapter on crops already in the model's frame.

:class:`Sam3DAdapterPredictor` takes crops (z-scored, (D, H, W), 1 mm; a tensor already on
its device, or a numpy array) and clicks in crop voxels, runs the model under
``torch.inference_mode`` on its device, with autocast when a reduced precision is asked for,
and returns probabilities as a tensor on that device (nothing comes back to the host). The
session above it handles volumes, physical coordinates and crops.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from .sam3d_adapter import CropEmbedding, Sam3DAdapter

PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: plain float32).

    "auto" is bfloat16 (float16 where bfloat16 is unsupported) on CUDA and float32 elsewhere.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "float16" and device.type == "cpu":
        raise ValueError("float16 autocast is not supported on CPU; use bfloat16 or float32")
    return None if precision == "float32" else getattr(torch, precision)


@contextmanager
def _strict_float32(device: torch.device):
    """Disable TF32 for the duration of a float32 call on CUDA (restored afterwards), so that
    float32 means float32 as in the official matmuls."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class Sam3DAdapterPredictor:
    """A model on a device with a precision; crops and clicks in, probabilities out."""

    def __init__(self, model: Sam3DAdapter, device: torch.device | str = "cpu", precision: str = "auto") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.precision = precision
        self.autocast = autocast_dtype(self.device, precision)

    @property
    def crop_size(self) -> int:
        return self.model.config.crop_size

    def _context(self):
        if self.autocast is None:
            return _strict_float32(self.device)
        return torch.autocast(self.device.type, dtype=self.autocast)

    def embed(self, crop: torch.Tensor | np.ndarray) -> CropEmbedding:
        """crop: (S, S, S) z-scored intensities in (D, H, W) order, S = the model's crop size."""
        size = self.crop_size
        if crop.shape != (size, size, size):
            raise ValueError(f"expected a crop of shape {(size,) * 3} (D, H, W), got {tuple(crop.shape)}")
        tensor = torch.as_tensor(crop).to(self.device, torch.float32).contiguous()[None, None]
        with torch.inference_mode(), self._context():
            return self.model.embed(tensor)

    def predict(self, embedding: CropEmbedding, points_dwh: np.ndarray, labels: np.ndarray | None = None) -> torch.Tensor:
        """Tumour probability (S, S, S) in (D, H, W), float32 on the device, for clicks (N, 3)
        given as [d, w, h] crop voxels."""
        points = np.asarray(points_dwh, dtype=np.float32).reshape(-1, 3)
        if points.shape[0] == 0:
            raise ValueError("at least one click is needed")
        point_tensor = torch.from_numpy(points).to(self.device)
        label_tensor = None if labels is None else torch.as_tensor(np.asarray(labels), device=self.device).long()
        with torch.inference_mode(), self._context():
            logits = self.model.predict(embedding, point_tensor, label_tensor).float()
            return torch.softmax(logits, dim=1)[0, 1]
