"""SAM's 2D patch embedding and its fold with the x4 upsampling and the depth convolution.

The official encoder upsamples the (D, H, W) crop 4x (trilinear, align_corners=False), embeds
each of the 4*D axial slices with SAM's 16x16 patch convolution and merges every 16 slices with
a depth-wise convolution. All three steps are linear, so together they are one strided 3D
convolution of the crop: a token covers 4 crop voxels per axis, and its 16 upsampled samples per
axis read the 6 crop voxels from one before to one after it. The upsampling clamps source
positions at both ends of an axis; replicate-padding the crop by one voxel reproduces that
clamping exactly (a clamped sample and a blend of two equal padded voxels are the same value),
so border tokens need no special case. :func:`fold_patch_stage` derives the 6x6x6 kernel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed2d(nn.Module):
    """Conv2d patch embedding; (N, C, H, W) -> (N, H / p, W / p, E), channels last like SAM."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def upsample_taps(patch_size: int, factor: int, dtype=torch.float64) -> torch.Tensor:
    """(patch_size, patch_size // factor + 2) weights: row j holds the linear-interpolation
    weights that upsampled sample j of a token gives to the token's padded crop voxels.

    Sample j of token t sits at crop position (t * v) + (j + 0.5) / factor - 0.5 (v = voxels per
    token); counted from the token's first voxel of the one-voxel-padded crop that is
    s = (j + 0.5) / factor + 0.5, read from voxels floor(s) and floor(s) + 1.
    """
    taps = patch_size // factor + 2
    weights = torch.zeros(patch_size, taps, dtype=dtype)
    for j in range(patch_size):
        position = (j + 0.5) / factor + 0.5
        low = math.floor(position)
        fraction = position - low
        weights[j, low] += 1.0 - fraction
        if fraction:
            weights[j, low + 1] += fraction
    return weights


def fold_patch_stage(patch_weight: torch.Tensor, patch_bias: torch.Tensor, slice_weight: torch.Tensor,
                     slice_bias: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel (E, C, T, T, T) with axes (kH, kW, kD) and bias (E,) of the equivalent 3D convolution.

    patch_weight: (E, C, P, P) over (rows = H, columns = W); slice_weight: (E, 1, 1, 1, P) over
    the P consecutive upsampled slices; T = P / factor + 2; stride P / factor on the padded crop.
    Computed in float64 so that the folded kernel adds no rounding of its own.
    """
    patch = patch_weight.shape[-1]
    taps = upsample_taps(patch, factor).to(patch_weight.device)
    in_plane = torch.einsum("ecab,am,bn->ecmn", patch_weight.double(), taps, taps)
    depth = slice_weight.double().reshape(slice_weight.shape[0], patch) @ taps  # (E, T)
    kernel = in_plane[..., None] * depth[:, None, None, None, :]
    bias = slice_bias.double() + patch_bias.double() * slice_weight.double().reshape(-1, patch).sum(1)
    return kernel.to(patch_weight.dtype), bias.to(patch_weight.dtype)


def folded_patch_embedding(crop_hwd: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor,
                           voxels_per_token: int) -> torch.Tensor:
    """(1, C, H, W, D) crop -> (1, E, H / v, W / v, D / v) tokens with a folded kernel.

    A one-channel crop stands for the grey value copied into every input channel: the kernel's
    input channels are summed instead of copying the crop.
    """
    if crop_hwd.shape[1] == 1 and kernel.shape[1] != 1:
        kernel = kernel.sum(1, keepdim=True)
    padded = F.pad(crop_hwd, (1, 1, 1, 1, 1, 1), mode="replicate")
    return F.conv3d(padded, kernel.to(crop_hwd.dtype), bias.to(crop_hwd.dtype), stride=voxels_per_token)
