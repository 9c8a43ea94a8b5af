"""The folded patch stage (one strided 3D convolution on the crop) against the official path
(x4 trilinear upsampling -> per-slice 2D patch embedding -> 16-tap depth convolution)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from volsam.models.sam3d_adapter.patch_embedding import fold_patch_stage, folded_patch_embedding, upsample_taps

pytest_plugins = ["conftest_adapter"]


def unfolded(crop_dhw, patch_weight, patch_bias, slice_weight, slice_bias, factor):
    """The official stage, written as the spec states it; returns (1, E, G, G, G) in (H, W, D)."""
    patch = patch_weight.shape[-1]
    up = F.interpolate(crop_dhw, scale_factor=factor, mode="trilinear", align_corners=False)
    slices = up[0].transpose(0, 1)
    embedded = F.conv2d(slices, patch_weight, patch_bias, stride=patch).permute(0, 2, 3, 1)  # (D', G, G, E)
    x = embedded.permute(3, 1, 2, 0).unsqueeze(0)
    return F.conv3d(x, slice_weight, slice_bias, stride=(1, 1, patch), groups=x.shape[1])


def random_stage(embed, channels, patch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(embed, channels, patch, patch, generator=g) / patch, torch.randn(embed, generator=g),
            torch.randn(embed, 1, 1, 1, patch, generator=g) / 4, torch.randn(embed, generator=g))


def crop_with_sharp_borders(size, channels=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    crop = torch.randn(1, 1, size, size, size, generator=g)
    crop[..., 0, :, :] += 5.0  # strong values on every face, where the upsampling clamps
    crop[..., :, -1, :] -= 4.0
    crop[..., :, :, 0] += 3.0
    return crop.expand(1, channels, size, size, size).contiguous()


@pytest.mark.parametrize("factor,patch,size,embed", [(4, 16, 32, 768), (4, 16, 16, 32), (2, 8, 12, 16), (3, 12, 9, 8)])
def test_folded_equals_unfolded(factor, patch, size, embed):
    weights = random_stage(embed, 3, patch)
    crop = crop_with_sharp_borders(size)
    expected = unfolded(crop, *weights, factor)
    kernel, bias = fold_patch_stage(*weights, factor)
    assert kernel.shape == (embed, 3) + (patch // factor + 2,) * 3
    folded = folded_patch_embedding(crop.permute(0, 1, 3, 4, 2), kernel, bias, patch // factor)
    assert folded.shape == expected.shape
    scale = expected.abs().max()
    assert (folded - expected).abs().max() <= 2e-5 * scale
    # A grey crop (one channel) stands for three equal channels.
    grey = folded_patch_embedding(crop[:, :1].permute(0, 1, 3, 4, 2), kernel, bias, patch // factor)
    assert (grey - expected).abs().max() <= 2e-5 * scale


def test_border_tokens_need_the_clamping():
    """Zero padding instead of replicate padding changes exactly the border tokens: the
    upsampling clamps at both ends of each axis, and the fold reproduces that."""
    weights = random_stage(16, 3, 16)
    crop = crop_with_sharp_borders(16)
    expected = unfolded(crop, *weights, 4)
    kernel, bias = fold_patch_stage(*weights, 4)
    zero_padded = F.conv3d(F.pad(crop.permute(0, 1, 3, 4, 2), (1,) * 6), kernel, bias, stride=4)
    error = (zero_padded - expected).abs().amax(dim=(0, 1))  # (G, G, G)
    interior = error[1:-1, 1:-1, 1:-1]
    assert interior.max() < 1e-4
    for axis in range(3):
        assert error.select(axis, 0).max() > 1e-2 and error.select(axis, -1).max() > 1e-2


def test_upsample_taps_are_interpolation_weights():
    taps = upsample_taps(16, 4)
    assert taps.shape == (16, 6)
    assert torch.allclose(taps.sum(1), torch.ones(16, dtype=taps.dtype))
    # Sample 0 of a token sits 3/8 voxel before the token's first voxel: weights 5/8 and 3/8.
    assert taps[0, 0] == 0.375 and taps[0, 1] == 0.625
    assert taps[15, 4] == 0.625 and taps[15, 5] == 0.375


def test_encoder_patch_paths_agree_on_the_tiny_model():
    from conftest_adapter import tiny_model

    model = tiny_model(seed=2)
    crop = crop_with_sharp_borders(32)
    with torch.inference_mode():
        folded = model.image_encoder.embed_patches(crop)
        model.image_encoder.patch_path = "unfolded"
        reference = model.image_encoder.embed_patches(crop)
    assert (folded - reference).abs().max() < 1e-4
    with pytest.raises(ValueError, match="patch_path must be one of"):
        model.image_encoder.patch_path = "fast"
