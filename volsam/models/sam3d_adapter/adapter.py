"""The spatial adapter that precedes every ViT block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpatialAdapter(nn.Module):
    """Bottleneck MLP with a depth-wise 3x3x3 convolution, on (B, H, W, D, C) tokens.

    Applied to the residual stream itself (its output is the block's new shortcut), and the
    branch ends in a ReLU before the residual add, as in the official code.
    """

    def __init__(self, embed_dim: int, adapter_dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(embed_dim, adapter_dim)
        self.conv = nn.Conv3d(adapter_dim, adapter_dim, kernel_size=3, padding=1, groups=adapter_dim)
        self.linear2 = nn.Linear(adapter_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = F.relu(self.linear1(x))
        branch = self.conv(branch.permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1)
        branch = F.relu(self.linear2(F.relu(branch)))
        return x + branch
