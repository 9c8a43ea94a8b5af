"""Structure of the model against the specification's table, configuration checks, and the
official initialisation from SAM ViT-B."""

from __future__ import annotations

import dataclasses

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
