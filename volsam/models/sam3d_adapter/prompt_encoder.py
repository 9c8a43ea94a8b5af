"""The point-sampling prompt encoder: clicks pick features out of the last map, which then
refine the whole map through learned global tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import PromptEncoderConfig
from .global_query_block import GlobalQueryTransformer


class PointPromptEncoder(nn.Module):
    """(1, C, G, G, G) map in (H, W, D) + clicks -> refined map of the same shape.

    ``positional_encoding_gaussian_matrix`` is kept for strict loading only: the official code
    computes positional encodings from it that never reach the output.
    """

    def __init__(self, config: PromptEncoderConfig, crop_size: int) -> None:
        super().__init__()
        config.validate()
        self.crop_size = crop_size
        self.transformer = GlobalQueryTransformer(config.depth, config.embed_dim, config.num_heads, config.mlp_dim,
                                                  config.num_global_tokens, config.attention_downsample_rate)
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(3, config.num_pos_feats))
        self.point_label_embed = nn.Embedding(2, config.embed_dim) if config.point_label_embedding else None

    def forward(self, features: torch.Tensor, points_dwh: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        """features: (1, C, G, G, G) in (H, W, D). points_dwh: (N, 3) or (1, N, 3) crop voxel
        coordinates in the order [d, w, h] (slice, column, row), floats allowed. labels: (N,)
        1 positive / 0 negative, used only by models with a label embedding."""
        points = points_dwh.reshape(-1, 3).to(features.dtype)
        if points.shape[0] == 0:
            raise ValueError("the prompt encoder needs at least one click")
        # Voxel centre p -> normalised grid coordinate; component 0 indexes the map's last axis (D).
        grid = ((points + 0.5) * 2 / self.crop_size - 1).reshape(1, 1, 1, -1, 3)
        point_tokens = F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False).reshape(1, features.shape[1], -1).transpose(1, 2)
        if self.point_label_embed is not None:
            if labels is None:
                raise ValueError("this model has a point-label embedding and needs labels for its clicks")
            point_tokens = point_tokens + self.point_label_embed(labels.reshape(-1).long()).to(point_tokens.dtype)[None]
        image_tokens = features.flatten(2).transpose(1, 2)
        refined = self.transformer(image_tokens, point_tokens)
        return refined.transpose(1, 2).reshape(features.shape)
