"""3D window attention with decomposed relative positions, plus the window helpers.

Layouts: token grids are channels-last (B, H, W, D, C). Windows are ordered with the H window
index slowest, then W, then D; inside a window token t = w*w*p + w*q + r for offsets (p, q, r)
along (H, W, D). This is the official order and the order of the stored shift masks.

The attention logits of one head are

    (q * scale) . k  +  lr * (q . Rh[p_q, p_k] + q . Rw[q_q, q_k] + q . Rd[r_q, r_k])  (+ mask)

The relative terms depend on the query and on one key coordinate each, so they are inner
products too: appending ``lr * q . R[p_q, b]`` for b = 0..w-1 to the (scaled) query and a
one-hot of the key's coordinate to the key makes a single dot product produce the full logits.
That lets ``scaled_dot_product_attention`` run its fused kernel with only the shift mask as an
additive bias, instead of materialising (windows x heads x N x N) logits several times.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

#: Value the official shift mask puts between tokens of different regions (not -inf).
MASKED_LOGIT = -100.0


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, D, C) -> (B * nW, window, window, window, C); sizes must be multiples of window."""
    b, h, w, d, c = x.shape
    if h % window or w % window or d % window:
        raise ValueError(f"token grid {(h, w, d)} is not a multiple of the window size {window}")
    x = x.view(b, h // window, window, w // window, window, d // window, window, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, window, window, window, c)


def window_unpartition(windows: torch.Tensor, window: int, grid: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition` for a grid of size ``grid`` = (H, W, D)."""
    h, w, d = grid
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, d // window, window, window, window, c)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(-1, h, w, d, c)


@functools.lru_cache(maxsize=16)
def window_order(grid: tuple[int, int, int], window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Row of the flat (H, W, D) token grid that each token of the partitioned, rolled grid comes from.

    ``flat[window_order(...)]`` equals ``window_partition(roll(x, -shift))`` flattened, so a
    gather (and a scatter back) replaces the roll, the partition and their inverses.
    """
    h, w, d = grid
    index = torch.arange(h * w * d).view(1, h, w, d, 1)
    if shift:
        index = torch.roll(index, (-shift,) * 3, dims=(1, 2, 3))
    return window_partition(index, window).reshape(-1).to(device)


def shift_mask(grid: int, window: int, shift: int) -> torch.Tensor:
    """The (nW, N, N) additive mask of shifted-window attention on a ``grid``^3 token grid.

    Each axis is split into [0, grid - window), [grid - window, grid - shift), [grid - shift, grid);
    tokens of one window attend freely within their region and get -100 across regions. The
    label grid is partitioned unrolled, exactly as the official buffer was built.
    """
    bounds = (0, grid - window, grid - shift, grid)
    region = torch.zeros(grid, dtype=torch.long)
    for index in range(3):
        region[bounds[index]:bounds[index + 1]] = index
    labels = (9 * region[:, None, None] + 3 * region[None, :, None] + region[None, None, :]).float()
    windows = window_partition(labels[None, ..., None], window).reshape(-1, window ** 3)
    different = windows[:, None, :] != windows[:, :, None]
    return torch.zeros(different.shape).masked_fill_(different, MASKED_LOGIT)


def resample_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """Resample an (L, C) relative table to ``length`` rows by linear interpolation
    (align_corners=False), as SAM's ``get_rel_pos`` does; a table of the right length is kept."""
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table.reshape(1, table.shape[0], -1).permute(0, 2, 1), size=length, mode="linear")
    return resized.reshape(-1, length).permute(1, 0)


def relative_table(table: torch.Tensor, window: int) -> torch.Tensor:
    """R[a, b] = T[a - b + window - 1] of the resampled table: (window, window, C)."""
    resampled = resample_rel_pos(table, 2 * window - 1)
    offsets = torch.arange(window, device=table.device)
    return resampled[offsets[:, None] - offsets[None, :] + window - 1]


def key_offsets_one_hot(window: int, device, dtype) -> torch.Tensor:
    """(w^3, 3w): one-hot of each in-window token's (p, q, r) offsets, the key side of the
    relative terms."""
    offsets = torch.arange(window ** 3, device=device)
    coordinates = torch.stack([offsets // window ** 2, offsets // window % window, offsets % window], dim=1)
    return (coordinates[..., None] == torch.arange(window, device=device)).to(dtype).reshape(window ** 3, -1)


class WindowAttention3d(nn.Module):
    """Multi-head attention inside (window x window x window) token windows."""

    def __init__(self, dim: int, num_heads: int, window_size: int, rel_pos_length: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(rel_pos_length, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(rel_pos_length, head_dim))
        self.rel_pos_d = nn.Parameter(torch.zeros(rel_pos_length, head_dim))
        self.lr = nn.Parameter(torch.tensor(1.0))

    def forward(self, windows: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """windows: (nW, w, w, w, C); mask: (nW, N, N) additive or None -> (nW, w, w, w, C)."""
        n_windows, w = windows.shape[0], self.window_size
        n_tokens = w ** 3
        qkv = self.qkv(windows).reshape(n_windows, n_tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (nW, heads, N, head_dim) each
        head_dim = q.shape[-1]

        grid_q = q.reshape(n_windows, self.num_heads, w, w, w, head_dim)
        relative = [
            torch.einsum("bnhwdc,hkc->bnhwdk", grid_q, relative_table(self.rel_pos_h, w).to(q.dtype)),
            torch.einsum("bnhwdc,wkc->bnhwdk", grid_q, relative_table(self.rel_pos_w, w).to(q.dtype)),
            torch.einsum("bnhwdc,dkc->bnhwdk", grid_q, relative_table(self.rel_pos_d, w).to(q.dtype)),
        ]
        lr = self.lr.to(q.dtype)
        relative = torch.cat([lr * term.reshape(n_windows, self.num_heads, n_tokens, w) for term in relative], -1)
        query = torch.cat([q * self.scale, relative], dim=-1)
        key_extra = key_offsets_one_hot(w, k.device, k.dtype).expand(n_windows, self.num_heads, n_tokens, 3 * w)
        key = torch.cat([k, key_extra], dim=-1)
        # The fused CPU kernels need equal head sizes for q, k and v: pad v with zeros.
        value = F.pad(v, (0, 3 * w))
        bias = None if mask is None else mask[:, None].to(q.dtype)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=1.0)[..., :head_dim]
        out = out.transpose(1, 2).reshape(n_windows, w, w, w, -1)
        return self.proj(out)
