"""One layer of the 3DSAM-adapter prompt transformer."""

from __future__ import annotations

import torch
from torch import nn

from .mlp import MLPBlock
from .token_attention import TokenAttention


class GlobalQueryBlock(nn.Module):
    """Learned global tokens and the point tokens attend to each other; image tokens attend to
    the global tokens.

    Unlike SAM's two-way block, the tokens never attend to the image: ``cross_attn_token_to_image``
    exists (the checkpoints hold its weights) but is not called. The global tokens are dropped
    after the layer; the next layer starts again from its own ``global_query``.
    """

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int, num_global_tokens: int,
                 attention_downsample_rate: int) -> None:
        super().__init__()
        self.num_global_tokens = num_global_tokens
        self.self_attn = TokenAttention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = TokenAttention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = TokenAttention(embedding_dim, num_heads, attention_downsample_rate)
        self.global_query = nn.Parameter(0.1 * torch.randn(1, num_global_tokens, embedding_dim))

    def forward(self, image_tokens: torch.Tensor, point_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image_tokens (1, M, C), point_tokens (1, N, C) -> updated (image_tokens, point_tokens)."""
        tokens = torch.cat([self.global_query.to(point_tokens.dtype), point_tokens], dim=1)
        attended = self.norm1(self.self_attn(tokens, tokens, tokens))
        tokens = self.norm2(tokens + attended)
        point_tokens = tokens[:, self.num_global_tokens:]
        global_tokens = tokens[:, :self.num_global_tokens]
        global_tokens = self.norm3(global_tokens + self.mlp(global_tokens))
        image_tokens = self.norm4(image_tokens + self.cross_attn_image_to_token(image_tokens, global_tokens,
                                                                                global_tokens))
        return image_tokens, point_tokens


class GlobalQueryTransformer(nn.Module):
    """A stack of :class:`GlobalQueryBlock` (the official ``TwoWayTransformer`` replacement)."""

    def __init__(self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int, num_global_tokens: int,
                 attention_downsample_rate: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            GlobalQueryBlock(embedding_dim, num_heads, mlp_dim, num_global_tokens, attention_downsample_rate)
            for _ in range(depth))

    def forward(self, image_tokens: torch.Tensor, point_tokens: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            image_tokens, point_tokens = layer(image_tokens, point_tokens)
        return image_tokens
