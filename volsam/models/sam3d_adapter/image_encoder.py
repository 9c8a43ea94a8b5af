"""The volumetric ViT image encoder of 3DSAM-adapter."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .block import AdapterBlock3d
from .config import ImageEncoderConfig
from .layer_norm import LayerNorm3d
from .patch_embedding import PatchEmbed2d, fold_patch_stage, folded_patch_embedding
from .window_attention import shift_mask

PATCH_PATHS = ("folded", "unfolded")


class ImageEncoderViT3d(nn.Module):
    """SAM ViT image encoder turned volumetric: crop (1, C, D, H, W) -> four (1, out, H, W, D) maps.

    ``patch_path`` chooses how the crop becomes tokens: "folded" runs the single equivalent 3D
    convolution (see :mod:`.patch_embedding`), "unfolded" the official upsample -> per-slice
    2D patch embedding -> depth convolution, which materialises the 4x-upsampled crop.
    """

    def __init__(self, config: ImageEncoderConfig, patch_path: str = "folded") -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.patch_path = patch_path
        grid, dim = config.token_grid, config.embed_dim
        self.pos_embed = nn.Parameter(torch.zeros(1, config.pos_embed_size, config.pos_embed_size, dim))
        self.depth_embed = nn.Parameter(torch.ones(1, grid, dim))
        self.patch_embed = PatchEmbed2d(config.patch_size, config.in_chans, dim)
        self.slice_embed = nn.Conv3d(dim, dim, kernel_size=(1, 1, config.patch_size),
                                     stride=(1, 1, config.patch_size), groups=dim)
        mask = shift_mask(grid, config.window_size, config.shift_size)
        self.blocks = nn.ModuleList(
            AdapterBlock3d(dim, config.num_heads, config.mlp_ratio, config.window_size,
                           config.shift_size if index % 2 == 0 else 0, config.rel_pos_length(index),
                           config.adapter_dim, config.layer_norm_eps,
                           attn_mask=mask if index % 2 == 0 else None)
            for index in range(config.depth))
        self.neck_3d = nn.ModuleList(
            nn.Sequential(
                nn.Conv3d(dim, config.out_chans, kernel_size=1, bias=False),
                LayerNorm3d(config.out_chans),
                nn.Conv3d(config.out_chans, config.out_chans, kernel_size=3, padding=1, bias=False),
                LayerNorm3d(config.out_chans),
            )
            for _ in range(4))

    @property
    def patch_path(self) -> str:
        return self._patch_path

    @patch_path.setter
    def patch_path(self, value: str) -> None:
        if value not in PATCH_PATHS:
            raise ValueError(f"patch_path must be one of {PATCH_PATHS}, got {value!r}")
        self._patch_path = value

    def forward(self, crop: torch.Tensor) -> list[torch.Tensor]:
        """crop: (1, C, D, H, W), C = in_chans or 1 (grey copied into every channel).

        Returns the neck outputs F1..F4, each (1, out_chans, G, G, G) in (H, W, D) order.
        """
        tokens = self.embed_patches(crop)
        pooled = F.avg_pool2d(self.pos_embed.permute(0, 3, 1, 2), kernel_size=2).permute(0, 2, 3, 1)
        tokens = tokens + (pooled.unsqueeze(3) + self.depth_embed[:, None, None])
        features = []
        taps = self.config.neck_taps
        for index, block in enumerate(self.blocks):
            tokens = block(tokens)
            if index in taps:
                features.append(self.neck_3d[taps.index(index)](tokens.permute(0, 4, 1, 2, 3)))
        return features

    def embed_patches(self, crop: torch.Tensor) -> torch.Tensor:
        """(1, C, D, H, W) crop -> (1, G, G, G, E) tokens in (H, W, D) order."""
        config = self.config
        expected = (config.crop_size,) * 3
        if crop.dim() != 5 or crop.shape[0] != 1 or tuple(crop.shape[2:]) != expected \
                or crop.shape[1] not in (1, config.in_chans):
            raise ValueError(f"expected a crop of shape (1, {config.in_chans} or 1, {expected[0]}, {expected[1]}, "
                             f"{expected[2]}) in (B, C, D, H, W), got {tuple(crop.shape)}")
        if self.patch_path == "folded":
            kernel, bias = fold_patch_stage(self.patch_embed.proj.weight, self.patch_embed.proj.bias,
                                            self.slice_embed.weight, self.slice_embed.bias,
                                            config.upsample_factor)
            tokens = folded_patch_embedding(crop.permute(0, 1, 3, 4, 2), kernel, bias, config.voxels_per_token)
            return tokens.permute(0, 2, 3, 4, 1)
        if crop.shape[1] == 1:
            crop = crop.expand(-1, config.in_chans, -1, -1, -1)
        upsampled = F.interpolate(crop, scale_factor=config.upsample_factor, mode="trilinear", align_corners=False)
        slices = upsampled[0].transpose(0, 1)  # (D', C, H', W'): axial slices as a batch
        del upsampled
        with torch.no_grad():  # frozen in the official code
            embedded = self.patch_embed(slices)  # (D', G, G, E)
        del slices
        tokens = self.slice_embed(embedded.permute(3, 1, 2, 0).unsqueeze(0))  # (1, E, G, G, G)
        return tokens.permute(0, 2, 3, 4, 1)

    def _apply(self, fn, recurse=True):
        # Moving the module gives each block its own copy of the shared shift mask; share again.
        result = super()._apply(fn, recurse)
        shared = None
        for block in self.blocks:
            if block.attn_mask is None:
                continue
            if shared is None:
                shared = block.attn_mask
            elif block.attn_mask is not shared and block.attn_mask.shape == shared.shape \
                    and block.attn_mask.device == shared.device and block.attn_mask.dtype == shared.dtype \
                    and torch.equal(block.attn_mask, shared):
                block.attn_mask = shared
        return result
