"""Channel-first layer norm for 5D feature maps (the necks' norm)."""

from __future__ import annotations

import torch
from torch import nn


class LayerNorm3d(nn.Module):
    """Normalise over the channel axis of a (B, C, X, Y, Z) map: biased variance, then a
    per-channel affine map. Written out (not ``F.layer_norm`` on a permuted copy) to keep the
    official arithmetic order."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        centred = x - mean
        variance = centred.pow(2).mean(1, keepdim=True)
        x = centred / torch.sqrt(variance + self.eps)
        return self.weight[:, None, None, None] * x + self.bias[:, None, None, None]
