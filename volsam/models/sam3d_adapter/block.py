"""One volumetric ViT block: spatial adapter, (shifted) 3D window attention, MLP."""

from __future__ import annotations

import torch
from torch import nn

from .adapter import SpatialAdapter
from .mlp import MLPBlock
from .window_attention import WindowAttention3d, window_order, window_partition, window_unpartition


class AdapterBlock3d(nn.Module):
    """SAM ViT block on a (1, H, W, D, C) token grid, preceded by a spatial adapter.

    Shifted blocks (even indices in 3DSAM-adapter) roll the normalised tokens by -shift on every
    axis before partitioning and back afterwards, and add ``attn_mask`` to the logits. The mask
    is a persistent buffer because the official checkpoints store it; blocks built together
    share one tensor (see :meth:`_load_from_state_dict`).

    Without autograd the block works in chunks of windows and tokens so that no activation
    larger than the token grid itself is alive at once; with autograd it runs unchunked.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int, shift_size: int,
                 rel_pos_length: int, adapter_dim: int, eps: float = 1e-6,
                 attn_mask: torch.Tensor | None = None) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        if shift_size and attn_mask is None:
            raise ValueError("a shifted block needs its attention mask")
        if shift_size:
            self.register_buffer("attn_mask", attn_mask, persistent=True)
        else:
            self.attn_mask = None
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = WindowAttention3d(dim, num_heads, window_size, rel_pos_length)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)
        self.adapter = SpatialAdapter(dim, adapter_dim)
        #: Work sizes of the chunked (inference) path: memory against per-call overhead.
        self.windows_per_chunk = 8
        self.tokens_per_chunk = 8192

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.adapter(x)
        if not torch.is_grad_enabled():
            return self._forward_chunked(x)
        grid = tuple(x.shape[1:4])
        shifted = torch.roll(x, (-self.shift_size,) * 3, dims=(1, 2, 3)) if self.shift_size else x
        windows = window_partition(shifted, self.window_size)
        y = window_unpartition(self.attn(self.norm1(windows), self.attn_mask), self.window_size, grid)
        if self.shift_size:
            y = torch.roll(y, (self.shift_size,) * 3, dims=(1, 2, 3))
        x = x + y
        return x + self.mlp(self.norm2(x))

    def _forward_chunked(self, x: torch.Tensor) -> torch.Tensor:
        """The same block without autograd, a few windows and tokens at a time.

        The roll and the window partition are one gather of token rows (and their inverse one
        scatter), so no rolled or partitioned copy of the grid is made. The layer norm is per
        token, so it commutes with both.
        """
        x = x.contiguous()
        channels = x.shape[-1]
        flat = x.view(-1, channels)
        order = window_order(tuple(x.shape[1:4]), self.window_size, self.shift_size, x.device)
        tokens_per_window = self.window_size ** 3
        n_windows = order.numel() // tokens_per_window
        attended = torch.empty_like(flat)
        w = self.window_size
        for start in range(0, n_windows, self.windows_per_chunk):
            stop = min(start + self.windows_per_chunk, n_windows)
            rows = order[start * tokens_per_window:stop * tokens_per_window]
            windows = flat.index_select(0, rows).view(stop - start, w, w, w, channels)
            mask = None if self.attn_mask is None else self.attn_mask[start:stop]
            result = self.attn(self.norm1(windows), mask).reshape(-1, channels)
            attended.index_copy_(0, rows, result.to(attended.dtype))
        flat = attended.add_(flat)
        for start in range(0, flat.shape[0], self.tokens_per_chunk):
            part = flat[start:start + self.tokens_per_chunk]
            part += self.mlp(self.norm2(part)).to(part.dtype)
        return flat.view(x.shape)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # Shifted blocks share one deterministic mask tensor. Loading the same values into it
        # keeps it shared; a file with a different mask for this block gets a private copy,
        # so the forward uses exactly what the file holds without touching the other blocks.
        key = prefix + "attn_mask"
        incoming = state_dict.get(key)
        if self.shift_size and isinstance(incoming, torch.Tensor) and incoming.shape == self.attn_mask.shape \
                and self.attn_mask.device.type != "meta" \
                and not torch.equal(incoming.to(self.attn_mask.device, self.attn_mask.dtype), self.attn_mask):
            self.attn_mask = torch.empty_like(self.attn_mask)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
