"""The fast model against the specification's math written out plainly.

The reference below works on the state dict only (no model code), in float64, step by step as
the spec states it: explicit trilinear upsampling (interpolation matrices from the spec's
source-index formula), a 2D patch embedding per upsampled slice, the 16-tap depth convolution,
explicit window partition, explicit logits with the decomposed relative terms, the -100 shift
mask, softmax, explicit point sampling, the prompt layers and the concatenating decoder.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest_adapter import tiny_model

from volsam.models.sam3d_adapter import TINY

pytest_plugins = ["conftest_adapter"]
DOUBLE = torch.float64


# --- interpolation as matrices ---------------------------------------------------------------
def interpolation_matrix(n_in: int, n_out: int, align_corners: bool) -> torch.Tensor:
    """(n_out, n_in) linear interpolation weights; the spec's section 1 source-index rules."""
    matrix = torch.zeros(n_out, n_in, dtype=DOUBLE)
    for dst in range(n_out):
        if align_corners:
            src = dst * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        else:
            src = max((dst + 0.5) * n_in / n_out - 0.5, 0.0)
        low = min(math.floor(src), n_in - 1)
        high = min(low + 1, n_in - 1)
        fraction = src - low
        matrix[dst, low] += 1 - fraction
        matrix[dst, high] += fraction
    return matrix


def resize_3d(x: torch.Tensor, size: int, align_corners: bool) -> torch.Tensor:
    """Separable trilinear resize of the last three axes of x to size^3."""
    for axis in (-3, -2, -1):
        m = interpolation_matrix(x.shape[axis], size, align_corners)
        x = torch.movedim(torch.tensordot(torch.movedim(x, axis, -1), m, dims=([-1], [1])), -1, axis)
    return x


# --- small pieces -----------------------------------------------------------------------------
def linear(x, sd, prefix):
    return x @ sd[prefix + ".weight"].T + sd[prefix + ".bias"]


def layer_norm_last(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def layer_norm_channels(x, weight, bias, eps=1e-6):  # (1, C, ...) over C
    return layer_norm_last(x.movedim(1, -1), weight, bias, eps).movedim(-1, 1)


def instance_norm(x, eps=1e-5):
    mean = x.mean(dim=(2, 3, 4), keepdim=True)
    var = x.var(dim=(2, 3, 4), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def resampled_table(table, window):
    n = 2 * window - 1
    length = table.shape[0]
    rows = []
    for r in range(n):
        src = min(max((r + 0.5) * length / n - 0.5, 0.0), length - 1)
        low = math.floor(src)
        high = min(low + 1, length - 1)
        rows.append((1 - (src - low)) * table[low] + (src - low) * table[high])
    t = torch.stack(rows)
    return torch.stack([torch.stack([t[a - b + window - 1] for b in range(window)]) for a in range(window)])


def shift_labels(grid, window, shift):
    labels = torch.zeros(grid, grid, grid, dtype=DOUBLE)
    ranges = [(0, grid - window), (grid - window, grid - shift), (grid - shift, grid)]
    for rh, (h0, h1) in enumerate(ranges):
        for rw, (w0, w1) in enumerate(ranges):
            for rd, (d0, d1) in enumerate(ranges):
                labels[h0:h1, w0:w1, d0:d1] = 9 * rh + 3 * rw + rd
    return labels


def windows_of(x, window):
    """x (G, G, G, C) -> list of (w^3, C) in window order H, W, D; token order p, q, r."""
    grid = x.shape[0] // window
    out = []
    for a in range(grid):
        for b in range(grid):
            for c in range(grid):
                block = x[a * window:(a + 1) * window, b * window:(b + 1) * window, c * window:(c + 1) * window]
                out.append(block.reshape(window ** 3, -1))
    return out


def from_windows(windows, grid_size, window):
    grid = grid_size // window
    x = torch.zeros(grid_size, grid_size, grid_size, windows[0].shape[-1], dtype=DOUBLE)
    n = 0
    for a in range(grid):
        for b in range(grid):
            for c in range(grid):
                x[a * window:(a + 1) * window, b * window:(b + 1) * window, c * window:(c + 1) * window] = \
                    windows[n].reshape(window, window, window, -1)
                n += 1
    return x


# --- the reference forward ----------------------------------------------------------------------
def reference_block(x, sd, prefix, config, shift):
    w, heads = config.window_size, config.num_heads
    # adapter
    a = torch.relu(linear(x, sd, prefix + "adapter.linear1"))
    a = F.conv3d(a.permute(3, 0, 1, 2)[None], sd[prefix + "adapter.conv.weight"], sd[prefix + "adapter.conv.bias"],
                 padding=1, groups=a.shape[-1])[0].permute(1, 2, 3, 0)
    x = x + torch.relu(linear(torch.relu(a), sd, prefix + "adapter.linear2"))
    y = layer_norm_last(x, sd[prefix + "norm1.weight"], sd[prefix + "norm1.bias"], 1e-6)
    if shift:
        y = torch.roll(y, shifts=(-shift,) * 3, dims=(0, 1, 2))
    mask_windows = windows_of(shift_labels(x.shape[0], w, shift)[..., None], w) if shift else None
    tables = [resampled_table(sd[prefix + f"attn.rel_pos_{axis}"], w) for axis in "hwd"]
    lr = sd[prefix + "attn.lr"]
    offsets = torch.tensor([(t // (w * w), t // w % w, t % w) for t in range(w ** 3)])
    outputs = []
    for n, tokens in enumerate(windows_of(y, w)):
        qkv = linear(tokens, sd, prefix + "attn.qkv").reshape(w ** 3, 3, heads, -1)
        merged = []
        for h in range(heads):
            q, k, v = qkv[:, 0, h], qkv[:, 1, h], qkv[:, 2, h]
            logits = (q * q.shape[-1] ** -0.5) @ k.T
            for axis in range(3):
                r = tables[axis][offsets[:, axis][:, None], offsets[:, axis][None, :]]  # (N, N, C)
                logits = logits + lr * torch.einsum("qc,qkc->qk", q, r)
            if shift:
                labels = mask_windows[n][:, 0]
                logits = logits + torch.where(labels[:, None] == labels[None, :], 0.0, -100.0).to(DOUBLE)
            merged.append(torch.softmax(logits, -1) @ v)
        outputs.append(linear(torch.cat(merged, -1), sd, prefix + "attn.proj"))
    y = from_windows(outputs, x.shape[0], w)
    if shift:
        y = torch.roll(y, shifts=(shift,) * 3, dims=(0, 1, 2))
    x = x + y
    hidden = gelu(linear(layer_norm_last(x, sd[prefix + "norm2.weight"], sd[prefix + "norm2.bias"], 1e-6),
                         sd, prefix + "mlp.lin1"))
    return x + linear(hidden, sd, prefix + "mlp.lin2")


def reference_encoder(crop, sd, config):
    """crop (3, D, H, W) -> F1..F4 (1, C, H, W, D), state dict keys without 'image_encoder.'."""
    up = resize_3d(crop, crop.shape[-1] * config.upsample_factor, align_corners=False)  # (3, D', H', W')
    slices = up.transpose(0, 1)
    embedded = F.conv2d(slices, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"],
                        stride=config.patch_size)  # (D', E, G, G)
    taps = sd["slice_embed.weight"].reshape(embedded.shape[1], config.patch_size)
    grid = embedded.shape[-1]
    tokens = torch.zeros(grid, grid, grid, embedded.shape[1], dtype=DOUBLE)  # (H, W, D, E)
    for d in range(grid):
        group = embedded[d * config.patch_size:(d + 1) * config.patch_size]  # (16, E, H, W)
        tokens[:, :, d] = (torch.einsum("seHW,es->HWe", group, taps) + sd["slice_embed.bias"])
    pos = sd["pos_embed"][0]
    pooled = (pos[0::2, 0::2] + pos[1::2, 0::2] + pos[0::2, 1::2] + pos[1::2, 1::2]) / 4
    tokens = tokens + pooled[:, :, None] + sd["depth_embed"][0][None, None]
    features = []
    for index in range(config.depth):
        shift = config.window_size // 2 if index % 2 == 0 else 0
        tokens = reference_block(tokens, sd, f"blocks.{index}.", config, shift)
        if index in config.neck_taps:
            n = config.neck_taps.index(index)
            f = tokens.permute(3, 0, 1, 2)[None]
            f = F.conv3d(f, sd[f"neck_3d.{n}.0.weight"])
            f = layer_norm_channels(f, sd[f"neck_3d.{n}.1.weight"], sd[f"neck_3d.{n}.1.bias"])
            f = F.conv3d(f, sd[f"neck_3d.{n}.2.weight"], padding=1)
            features.append(layer_norm_channels(f, sd[f"neck_3d.{n}.3.weight"], sd[f"neck_3d.{n}.3.bias"]))
    return features


def sample_trilinear(feature, point_dwh, crop_size):
    """feature (C, H, W, D); the spec's grid_sample (zeros padding, align_corners=False)."""
    grid = feature.shape[1]
    g = [(p + 0.5) * 2 / crop_size - 1 for p in point_dwh]  # [d, w, h]
    coordinates = [((g[2] + 1) * grid - 1) / 2, ((g[1] + 1) * grid - 1) / 2, ((g[0] + 1) * grid - 1) / 2]
    value = torch.zeros(feature.shape[0], dtype=DOUBLE)
    lows = [math.floor(c) for c in coordinates]
    for corner in range(8):
        index, weight = [], 1.0
        for axis in range(3):
            bit = (corner >> axis) & 1
            i = lows[axis] + bit
            weight *= (coordinates[axis] - lows[axis]) if bit else (1 - (coordinates[axis] - lows[axis]))
            index.append(i)
        if all(0 <= i < grid for i in index):
            value = value + weight * feature[:, index[0], index[1], index[2]]
    return value


def attention(q_in, k_in, v_in, sd, prefix, heads):
    q = linear(q_in, sd, prefix + ".q_proj")
    k = linear(k_in, sd, prefix + ".k_proj")
    v = linear(v_in, sd, prefix + ".v_proj")
    c = q.shape[-1] // heads
    out = []
    for h in range(heads):
        qs, ks, vs = q[:, h * c:(h + 1) * c], k[:, h * c:(h + 1) * c], v[:, h * c:(h + 1) * c]
        out.append(torch.softmax(qs @ ks.T / math.sqrt(c), -1) @ vs)
    return linear(torch.cat(out, -1), sd, prefix + ".out_proj")


def reference_prompt_encoder(f4, points, sd, config):
    feature = f4[0]
    points_tokens = torch.stack([sample_trilinear(feature, p, TINY.crop_size) for p in points.tolist()])
    image = feature.reshape(feature.shape[0], -1).T
    heads, n_global = config.num_heads, config.num_global_tokens
    ln = lambda x, name: layer_norm_last(x, sd[name + ".weight"], sd[name + ".bias"], 1e-5)
    for layer in range(config.depth):
        p = f"transformer.layers.{layer}"
        tokens = torch.cat([sd[p + ".global_query"][0], points_tokens])
        attended = ln(attention(tokens, tokens, tokens, sd, p + ".self_attn", heads), p + ".norm1")
        tokens = ln(tokens + attended, p + ".norm2")
        points_tokens, global_tokens = tokens[n_global:], tokens[:n_global]
        mlp = linear(torch.relu(linear(global_tokens, sd, p + ".mlp.lin1")), sd, p + ".mlp.lin2")
        global_tokens = ln(global_tokens + mlp, p + ".norm3")
        image = ln(image + attention(image, global_tokens, global_tokens, sd, p + ".cross_attn_image_to_token", heads),
                   p + ".norm4")
    return image.T.reshape(f4.shape)


def reference_decoder(features, grey, sd):
    def head(x, name):
        x = torch.relu(instance_norm(F.conv3d(x, sd[name + ".0.weight"], padding=1)))
        x = torch.relu(instance_norm(F.conv3d(x, sd[name + ".3.weight"], padding=1)))
        return resize_3d(x, x.shape[-1] * 2, align_corners=True)

    x = torch.cat([head(f, f"mlahead.head{n + 2}") for n, f in enumerate(features)] + [grey], 1)
    x = torch.relu(instance_norm(F.conv3d(x, sd["cls.0.weight"], padding=1)))
    x = F.conv3d(x, sd["cls.3.weight"], padding=1)
    return resize_3d(x, x.shape[-1] * 2, align_corners=True)


def section(sd, prefix):
    return {k[len(prefix):]: v.to(DOUBLE) for k, v in sd.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def tiny_and_reference():
    model = tiny_model(seed=3)
    generator = torch.Generator().manual_seed(5)
    crop = torch.randn(1, 1, 32, 32, 32, generator=generator).expand(1, 3, 32, 32, 32).contiguous()
    points = torch.tensor([[16.0, 16.0, 16.0], [3.0, 30.0, 7.5], [0.0, 31.0, 31.0]])
    sd = model.state_dict()
    encoder_sd = section(sd, "image_encoder.")
    features = reference_encoder(crop[0].to(DOUBLE), encoder_sd, TINY.image_encoder)
    refined = reference_prompt_encoder(features[3], points, section(sd, "prompt_encoders.3."), TINY.prompt_encoder)
    grey = resize_3d(crop[0, :1].permute(0, 2, 3, 1)[None].to(DOUBLE), 16, align_corners=False)
    logits = reference_decoder(features[:3] + [refined], grey, section(sd, "mask_decoder.")).permute(0, 1, 4, 2, 3)
    return model, crop, points, features, refined, logits


@pytest.mark.parametrize("patch_path", ["folded", "unfolded"])
def test_neck_outputs_match_reference(tiny_and_reference, patch_path):
    model, crop, _, features, _, _ = tiny_and_reference
    model.image_encoder.patch_path = patch_path
    with torch.inference_mode():
        fast = model.image_encoder(crop)
    model.image_encoder.patch_path = "folded"
    for mine, expected in zip(fast, features):
        assert mine.shape == expected.shape
        assert (mine.double() - expected).abs().max() < 1e-4


def test_prompt_encoder_and_logits_match_reference(tiny_and_reference):
    model, crop, points, _, refined, logits = tiny_and_reference
    with torch.inference_mode():
        embedding = model.embed(crop)
        mine_refined = model.prompt_encoder(embedding.image_features, points.clone())
        mine_logits = model.predict(embedding, points)
        grey_only = model(crop[:, :1], points)
    assert (mine_refined.double() - refined).abs().max() < 1e-4
    assert mine_logits.shape == (1, 2, 32, 32, 32)
    assert (mine_logits.double() - logits).abs().max() < 1e-4
    # One grey channel stands for three equal channels.
    assert (grey_only - mine_logits).abs().max() < 1e-4


def test_training_path_gives_the_same_numbers(tiny_and_reference):
    model, crop, points, _, _, logits = tiny_and_reference
    with torch.enable_grad():
        out = model(crop, points)
        out[:, 1].mean().backward()
    assert (out.detach().double() - logits).abs().max() < 1e-4
    encoder = model.image_encoder
    assert encoder.blocks[0].adapter.linear1.weight.grad is not None
    assert encoder.blocks[0].attn.qkv.weight.grad is None  # frozen SAM weight
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("grid,window,shift", [(8, 4, 2), (32, 8, 4)])
def test_shift_mask_matches_the_spec_definition(grid, window, shift):
    from volsam.models.sam3d_adapter.window_attention import shift_mask

    mask = shift_mask(grid, window, shift)
    labels = windows_of(shift_labels(grid, window, shift)[..., None], window)
    expected = torch.stack([torch.where(lab[:, 0][:, None] == lab[:, 0][None, :], 0.0, -100.0) for lab in labels])
    assert torch.equal(mask, expected.float())
    assert set(mask.unique().tolist()) == {0.0, -100.0}


@pytest.mark.parametrize("length", [27, 127, 15, 9])
def test_relative_tables_are_resampled_as_the_spec_says(length):
    from volsam.models.sam3d_adapter.window_attention import relative_table

    table = torch.randn(length, 64, dtype=DOUBLE)
    assert torch.allclose(relative_table(table, 8), resampled_table(table, 8), atol=1e-12)
