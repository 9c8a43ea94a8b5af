"""Slice relative position prediction (SRPP, spec P3, P4, D4): a training-only head.

From the memory-conditioned feature maps of the D slices of a clip (the output of memory
attention, which is trained, so the loss reaches the segmentation path), regress the signed
slice offset ``j - i`` for every ordered pair. The slice vectors carry no positional encoding:
the offset has to be read from the anatomy, which is the point of the task.
"""

from __future__ import annotations

import torch
from torch import nn


class SliceRelativePositionHead(nn.Module):
    """``(B, D, C, H, W)`` conditioned features -> ``(B, D, D)`` predicted offsets ``j - i``
    (entry ``[b, i, j]``; the diagonal is predicted too but not trained)."""

    def __init__(self, feature_dim: int, dim: int = 128, layers: int = 2, heads: int = 4,
                 mlp_hidden: int = 128):
        super().__init__()
        self.input_projection = nn.Linear(feature_dim, dim)
        encoder_layer = nn.TransformerEncoderLayer(d_model=dim, nhead=heads, dim_feedforward=2 * dim,
                                                   dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(encoder_layer, num_layers=layers, enable_nested_tensor=False)
        self.pair_mlp = nn.Sequential(nn.Linear(2 * dim, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, 1))

    def forward(self, conditioned_features: torch.Tensor) -> torch.Tensor:
        if conditioned_features.dim() != 5:
            raise ValueError("SRPP expects conditioned features of shape (B, D, C, H, W), got "
                             f"{tuple(conditioned_features.shape)}")
        b, d = conditioned_features.shape[:2]
        if d < 2:
            raise ValueError(f"SRPP needs clips of at least 2 slices, got {d}")
        pooled = conditioned_features.mean(dim=(-2, -1))  # global average pooling (D4)
        tokens = self.encoder(self.input_projection(pooled))  # (B, D, dim)
        first = tokens[:, :, None, :].expand(b, d, d, -1)
        second = tokens[:, None, :, :].expand(b, d, d, -1)
        return self.pair_mlp(torch.cat([first, second], dim=-1)).squeeze(-1)


def srpp_targets(num_slices: int, device=None) -> torch.Tensor:
    """``(D, D)`` matrix of ground-truth offsets, entry ``[i, j] = j - i`` (spec P3)."""
    index = torch.arange(num_slices, dtype=torch.float32, device=device)
    return index[None, :] - index[:, None]


def srpp_loss(predicted: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all ordered pairs ``i != j`` of the clip, i.e. the summed
    squared error divided by ``D (D - 1)`` and averaged over the batch (spec P3)."""
    if predicted.dim() != 3 or predicted.size(1) != predicted.size(2):
        raise ValueError(f"SRPP predictions must have shape (B, D, D), got {tuple(predicted.shape)}")
    d = predicted.size(1)
    target = srpp_targets(d, predicted.device)
    off_diagonal = ~torch.eye(d, dtype=torch.bool, device=predicted.device)
    squared = (predicted - target) ** 2
    return squared[:, off_diagonal].sum(dim=1).div(d * (d - 1)).mean()
