"""Structure of the model against the specification's table, configuration checks, and the
official initialisation from SAM ViT-B."""

from __future__ import annotations

import dataclasses

import numpy as np

import pytest
import torch
from conftest_adapter import SPEC_BUFFER_ELEMENTS, SPEC_PARAMETERS, SPEC_TRAINABLE, layout_rows, tsv_shape

from volsam.models.sam3d_adapter import TINY, VIT_B, Sam3DAdapterConfig, build_sam3d_adapter
from volsam.models.sam3d_adapter.checkpoints import from_sam, official_sections
from volsam.models.sam3d_adapter.freezing import is_trainable_encoder_key
from volsam.weights import CheckpointError

pytest_plugins = ["conftest_adapter"]


@pytest.fixture(scope="module")
def meta_vit_b():
    return build_sam3d_adapter("vit_b", device="meta")


def test_layout_matches_the_table(meta_vit_b):
    sections = official_sections(meta_vit_b)
    rows = layout_rows()
    assert len(rows) == 610
    seen = set()
    for row in rows:
        section = row["section"]
        state = sections["feature_dict"][int(section[13])] if section.startswith("feature_dict[") else sections[section]
        assert tuple(state[row["key"]].shape) == tsv_shape(row["shape"]), row["key"]
        seen.add((section, row["key"]))
        if section == "encoder_dict":
            buffer = row["key"].endswith("attn_mask")
            assert is_trainable_encoder_key(row["key"]) == (row["trainable_in_official_training"] == "yes") or buffer
    total = len(sections["encoder_dict"]) + sum(map(len, sections["feature_dict"])) + len(sections["decoder_dict"])
    assert total == len(seen) == 610


def test_parameter_counts_match_the_spec(meta_vit_b):
    parameters = sum(p.numel() for p in meta_vit_b.parameters())
    trainable = sum(p.numel() for p in meta_vit_b.parameters() if p.requires_grad)
    buffers = sum(v.numel() for k, v in meta_vit_b.state_dict().items()
                  if k.endswith(("attn_mask", "positional_encoding_gaussian_matrix")))
    assert (parameters, trainable, buffers) == (SPEC_PARAMETERS, SPEC_TRAINABLE, SPEC_BUFFER_ELEMENTS)
    encoder = meta_vit_b.image_encoder
    assert sum(p.numel() for p in encoder.parameters()) == 104_056_588
    assert sum(p.numel() for p in encoder.parameters() if p.requires_grad) == 15_209_984


def test_shifted_blocks_share_one_mask_and_odd_blocks_have_none():
    model = build_sam3d_adapter("tiny")
    blocks = model.image_encoder.blocks
    assert blocks[0].attn_mask is blocks[2].attn_mask
    assert blocks[1].attn_mask is None and "blocks.1.attn_mask" not in model.image_encoder.state_dict()
    copy = build_sam3d_adapter("tiny")
    copy.load_state_dict(model.state_dict())
    assert copy.image_encoder.blocks[0].attn_mask is copy.image_encoder.blocks[2].attn_mask
    # A file with another mask for one block gets exactly that mask, the others keep theirs.
    state = model.state_dict()
    state["image_encoder.blocks.2.attn_mask"] = torch.zeros_like(state["image_encoder.blocks.2.attn_mask"])
    copy.load_state_dict(state)
    assert torch.equal(copy.image_encoder.blocks[2].attn_mask, torch.zeros_like(blocks[0].attn_mask))
    assert torch.equal(copy.image_encoder.blocks[0].attn_mask, blocks[0].attn_mask)


def test_configuration_errors_are_clear():
    bad = dataclasses.replace(TINY.image_encoder, window_size=3)
    with pytest.raises(ValueError, match="multiple of window_size"):
        build_sam3d_adapter(dataclasses.replace(TINY, image_encoder=bad))
    with pytest.raises(ValueError, match="unknown 3DSAM-adapter configuration 'vit_h'"):
        build_sam3d_adapter("vit_h")
    with pytest.raises(ValueError, match="unknown image_encoder configuration keys"):
        Sam3DAdapterConfig.from_dict({"image_encoder": {"depthh": 3}})
    assert Sam3DAdapterConfig.from_dict(TINY.to_dict()) == TINY
    model = build_sam3d_adapter("tiny")
    with pytest.raises(ValueError, match=r"expected a crop of shape \(1, 3 or 1, 32, 32, 32\)"):
        model.embed(torch.zeros(1, 3, 32, 32, 30))
    with pytest.raises(ValueError, match="at least one click"):
        model(torch.zeros(1, 1, 32, 32, 32), torch.zeros(0, 3))


def test_build_from_sam_vit_b_uses_the_official_split(sam_vit_b_checkpoint):
    from volsam.weights import load_checkpoint

    sam = load_checkpoint(sam_vit_b_checkpoint).content
    model = from_sam(sam_vit_b_checkpoint)
    parameters = dict(model.named_parameters())
    assert sum(p.numel() for p in parameters.values()) == SPEC_PARAMETERS
    assert sum(p.numel() for p in parameters.values() if p.requires_grad) == SPEC_TRAINABLE
    encoder = model.image_encoder
    for key, value in encoder.state_dict().items():
        sam_key = "image_encoder." + key
        if key.endswith("rel_pos_d"):
            block = key.split(".")[1]
            expected = 0.5 * (sam[f"image_encoder.blocks.{block}.attn.rel_pos_h"] +
                              sam[f"image_encoder.blocks.{block}.attn.rel_pos_w"])
            assert torch.equal(value, expected)
            assert parameters["image_encoder." + key].requires_grad
        elif sam_key in sam:
            assert torch.equal(value, sam[sam_key]), key
            trains = key.split(".")[2:3] in (["norm1"], ["norm2"])
            assert parameters["image_encoder." + key].requires_grad == trains, key
    assert torch.equal(encoder.depth_embed, torch.ones_like(encoder.depth_embed))
    assert all(float(block.attn.lr) == 1.0 and not block.attn.lr.requires_grad for block in encoder.blocks)
    assert not any(k.startswith("neck.") for k in encoder.state_dict())


def test_build_from_sam_refuses_other_sizes_and_files(tmp_path):
    for dim, name in ((1024, "ViT-L"), (1280, "ViT-H")):
        state = {"image_encoder.patch_embed.proj.weight": torch.zeros(dim, 3, 16, 16),
                 "mask_decoder.iou_token.weight": torch.zeros(1, 256)}
        torch.save(state, tmp_path / "sam.pth")
        with pytest.raises(CheckpointError, match=f"SAM {name} checkpoint; only SAM ViT-B fits 3DSAM-adapter"):
            from_sam(tmp_path / "sam.pth")
    torch.save({"model": {"image_encoder.trunk.pos_embed": torch.zeros(1)}}, tmp_path / "sam2.pt")
    with pytest.raises(CheckpointError, match=r"SAM 2 checkpoint.*expected SAM ViT-B \(sam_vit_b_01ec64.pth"):
        from_sam(tmp_path / "sam2.pt")


def test_vit_b_config_is_the_paper_model():
    encoder = VIT_B.image_encoder
    assert (encoder.token_grid, encoder.window_size, encoder.shift_size, encoder.voxels_per_token) == (32, 8, 4, 4)
    assert [encoder.rel_pos_length(i) for i in range(12)] == [27, 27, 127] * 4


def test_predictor_precisions():
    import numpy as np
    from conftest_adapter import tiny_model

    from volsam.models.sam3d_adapter.predictor import Sam3DAdapterPredictor, autocast_dtype

    model = tiny_model(seed=3)
    crop = np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32)
    points = np.array([[16.0, 16.0, 16.0]])
    exact = Sam3DAdapterPredictor(model, "cpu", "float32")
    reduced = Sam3DAdapterPredictor(model, "cpu", "bfloat16")
    probability = exact.predict(exact.embed(crop), points)
    assert probability.shape == (32, 32, 32) and probability.dtype == torch.float32
    assert (reduced.predict(reduced.embed(torch.from_numpy(crop)), points) - probability).abs().max() < 0.1
    assert autocast_dtype(torch.device("cpu"), "auto") is None
    with pytest.raises(ValueError, match="float16 autocast is not supported on CPU"):
        autocast_dtype(torch.device("cpu"), "float16")
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype(torch.device("cpu"), "int8")
    with pytest.raises(ValueError, match=r"expected a crop of shape \(32, 32, 32\)"):
        exact.embed(crop[:16])


# --- click maps (the demo configuration: where the clicks are, for negative clicks that work) ---
def _with_click_maps(config: Sam3DAdapterConfig) -> Sam3DAdapterConfig:
    return dataclasses.replace(config, mask_decoder=dataclasses.replace(config.mask_decoder, click_maps=True),
                               prompt_encoder=dataclasses.replace(config.prompt_encoder, point_label_embedding=True))


def test_click_maps_put_each_click_at_its_place_on_the_decoder_grid():
    from volsam.models.sam3d_adapter.click_maps import click_maps

    points = torch.tensor([[20.0, 9.0, 5.0], [4.0, 26.0, 28.0]])  # [d, w, h] on a 32^3 crop
    maps = click_maps(points, torch.tensor([1, 0]), 16, 32)
    assert maps.shape == (1, 3, 16, 16, 16)
    # Decoder voxel n holds crop voxels 2n and 2n + 1, in (H, W, D) order.
    assert tuple(int(v) for v in np.unravel_index(int(maps[0, 0].argmax()), (16,) * 3)) == (2, 4, 10)
    assert tuple(int(v) for v in np.unravel_index(int(maps[0, 1].argmax()), (16,) * 3)) == (14, 13, 2)
    side = maps[0, 2]
    assert side[14, 13, 2] > 0.99 and side[2, 4, 10] < 0.01  # the negative's side and the positive's
    alone = click_maps(points[:1], torch.tensor([1]), 16, 32)
    assert torch.equal(alone[0, 0], maps[0, 0]) and not alone[0, 1:].any()  # no negative: zero maps


def test_a_decoder_widened_for_click_maps_gives_the_same_logits_and_then_reads_them():
    from volsam.models.sam3d_adapter.mask_decoder import with_click_map_channels

    torch.manual_seed(0)
    plain = build_sam3d_adapter(dataclasses.replace(TINY, prompt_encoder=dataclasses.replace(
        TINY.prompt_encoder, point_label_embedding=True))).eval()
    config = _with_click_maps(TINY)
    widened = build_sam3d_adapter(config).eval()
    decoder = with_click_map_channels(plain.mask_decoder.state_dict(), config.mask_decoder)
    widened.load_state_dict({**plain.state_dict(), **{f"mask_decoder.{k}": v for k, v in decoder.items()}})
    crop = torch.randn(1, 1, 32, 32, 32)
    points, labels = torch.tensor([[16.0, 16.0, 16.0], [16.0, 16.0, 26.0]]), torch.tensor([1, 0])
    with torch.no_grad():
        assert torch.equal(widened(crop, points, labels), plain(crop, points, labels))
        head = config.mask_decoder.head_chans
        widened.mask_decoder.cls[0].weight[:, 4 * head + 3] = -1.0  # "nearer a negative click: background"
        moved = widened(crop, points, labels)[0, 1] - plain(crop, points, labels)[0, 1]
    assert moved.abs().max() > 0.1  # the negative click now changes the logits
    with pytest.raises(ValueError, match="does not fit"):
        with_click_map_channels({"cls.0.weight": torch.zeros(8, 7, 3, 3, 3)}, config.mask_decoder)
    with pytest.raises(ValueError, match="needs them"):
        widened.mask_decoder.decode(widened.embed(crop).decoder_cache, torch.zeros(1, 16, 8, 8, 8))
