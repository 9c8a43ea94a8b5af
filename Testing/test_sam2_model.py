"""SAM2-3dMed model: configs, building from the sam2 package, the BD and SRPP heads,
checkpoints (official SAM2.1 and this project's), and the weights detector."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest_sam2 import *

torch = pytest.importorskip("torch")

from volsam.models.sam2_3dmed.boundary import balanced_boundary_loss, boundary_target
from volsam.models.sam2_3dmed.build import build_model
from volsam.models.sam2_3dmed.checkpoint import (
    CheckpointError,
    load_model,
    load_sam2_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from volsam.models.sam2_3dmed.config import SAM2Architecture, SAM2ThreeDMedConfig, SRPPConfig, tiny_test_config
from volsam.models.sam2_3dmed.detect import detect_checkpoint
from volsam.models.sam2_3dmed.variants import HIERA_SIZES, detect_sam2_state_dict
from volsam.models.sam2_3dmed.srpp import srpp_loss, srpp_targets
from volsam.weights.loading import load_checkpoint


# --- configs ------------------------------------------------------------------------------------------
def test_config_round_trips_through_json():
    config = tiny_test_config(96)
    again = SAM2ThreeDMedConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


@pytest.mark.parametrize("change, message", [
    ({"architecture": {"variant": "huge"}}, "unknown SAM2.1 variant"),
    ({"architecture": {"image_size": 100}}, "multiple of 32"),
    ({"architecture": {"hidden_dim": 40}}, "multiple of 16"),
    ({"architecture": {"trunk_stages": [1, 2, 3]}}, "4 values"),
    ({"architecture": {"colour": 1}}, "unknown keys"),
    ({"extra": {}}, "unknown keys"),
    ({"srpp": {"dim": 10, "heads": 4}}, "multiple of its heads"),
])
def test_bad_configs_name_what_is_wrong(change, message):
    with pytest.raises(ValueError, match=message):
        SAM2ThreeDMedConfig.from_dict(change)


# --- building ------------------------------------------------------------------------------------------
def test_tiny_custom_model_is_small_and_keeps_stock_parameter_names(tiny_model):
    count = sum(p.numel() for p in tiny_model.parameters())
    assert count * 4 < 20e6  # a demo trained from scratch fits in 20 MB at float32
    names = set(tiny_model.sam2.state_dict())
    assert not any("boundary" in n or "output_upscaling.4" in n for n in names)
    assert {n.split(".")[0] for n in tiny_model.state_dict()} == {"sam2", "boundary", "srpp"}
    trained = tiny_model.trained_parameter_names()
    assert trained and not any(n.startswith("sam2.image_encoder.") for n in trained)
    assert any(n.startswith("sam2.memory_attention.") for n in trained)
    assert any(n.startswith("sam2.sam_mask_decoder.") for n in trained)


def _decode(model, seed=0):
    """Mask logits of the SAM decoder for a fixed image and click."""
    sam2 = model.sam2
    size = model.image_size
    torch.manual_seed(seed)
    image = torch.randn(1, 3, size, size)
    with torch.inference_mode():
        _, feats, _pos, sizes = sam2._prepare_backbone_features(sam2.forward_image(image))
        pix = feats[-1].permute(1, 2, 0).view(1, -1, *sizes[-1])
        high = [x.permute(1, 2, 0).view(1, -1, *s) for x, s in zip(feats[:-1], sizes[:-1])]
        points = {"point_coords": torch.tensor([[[size / 2, size / 3]]]), "point_labels": torch.tensor([[1]])}
        return sam2._forward_sam_heads(pix, point_inputs=points, high_res_features=high)[0]


def test_boundary_fusion_starts_as_identity_and_is_in_the_mask_path(present_model):
    import copy

    model = copy.deepcopy(present_model)
    model.boundary_fusion_enabled = False
    stock = _decode(model)
    model.boundary_fusion_enabled = True
    assert torch.equal(_decode(model), stock)  # zero-initialised fusion: stock SAM2.1 output
    with torch.no_grad():
        model.boundary.fusion_projection.weight.normal_(0.0, 1.0)
    assert not torch.allclose(_decode(model), stock)
    model.train()
    _decode(model)
    logits = model.boundary.latest_boundary_logits
    assert logits is not None and logits.shape[-2:] == (model.image_size // 4,) * 2
    model.eval()
    _decode(model)
    assert model.boundary.latest_boundary_logits is None  # not kept at inference


def test_boundary_target_is_the_morphological_gradient():
    mask = torch.zeros(1, 1, 12, 12)
    mask[..., 3:9, 3:9] = 1
    band = boundary_target(mask)[0, 0]
    assert band[3:9, 3:9].sum() == 20  # inner ring: the pixels erosion removes
    assert band[2, 4] == 1 and band[2, 2] == 0  # outer ring by the cross (no corners)
    assert band[5, 5] == 0 and band[0, 0] == 0
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        boundary_target(torch.zeros(12, 12))


def test_balanced_boundary_loss_weights_the_rare_class_up():
    target = torch.zeros(1, 1, 10, 10)
    target[..., 0, :] = 1  # 10 % boundary
    miss_boundary = torch.where(target > 0, -4.0, -4.0)  # predicts "no boundary" everywhere
    miss_background = torch.where(target > 0, 4.0, 4.0)  # predicts "boundary" everywhere
    assert balanced_boundary_loss(miss_boundary, target) == pytest.approx(
        balanced_boundary_loss(miss_background, target).item(), rel=1e-4)


def test_srpp_head_and_loss(tiny_model):
    head = tiny_model.srpp
    features = torch.randn(2, 5, tiny_model.sam2.hidden_dim, 4, 4, requires_grad=True)
    predicted = head(features)
    assert predicted.shape == (2, 5, 5)
    assert srpp_targets(3).tolist() == [[0, 1, 2], [-1, 0, 1], [-2, -1, 0]]
    perfect = srpp_targets(5).expand(2, 5, 5).clone()
    perfect[:, range(5), range(5)] = 7.0  # the diagonal is not trained
    assert srpp_loss(perfect) == 0
    off = perfect + 1.0
    assert srpp_loss(off).item() == pytest.approx(1.0)  # mean over the D(D-1) ordered pairs
    srpp_loss(predicted).backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least 2"):
        head(torch.randn(1, 1, tiny_model.sam2.hidden_dim, 4, 4))


# --- checkpoints -------------------------------------------------------------------------------------
def _official(model, path):
    torch.save({"model": model.sam2.state_dict()}, path)
    return path


def test_trained_parts_plus_official_checkpoint_round_trip(tiny_model, tmp_path):
    sam2_file = _official(tiny_model, tmp_path / "sam2.pt")
    weights = save_checkpoint(tiny_model, tmp_path / "trained.safetensors", provenance={"command": "test"})
    header, state = read_checkpoint(weights)
    assert header.contents == "trained_parts" and header.config == tiny_model.config
    assert not any(k.startswith("sam2.image_encoder.") for k in state)
    loaded = load_model(weights=weights, sam2_checkpoint=sam2_file)
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(CheckpointError, match="only the trained parts"):
        load_model(weights=weights)


def test_whole_model_in_a_plain_state_dict_with_json_beside_it(tiny_model, tmp_path):
    weights = save_checkpoint(tiny_model, tmp_path / "whole.pt", contents="whole_model")
    assert (tmp_path / "whole.json").is_file()
    loaded = load_model(weights=weights)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in tiny_model.state_dict().items())
    (tmp_path / "whole.json").unlink()
    with pytest.raises(CheckpointError, match="no SAM2-3dMed header"):
        load_model(weights=weights)


def test_official_checkpoint_loads_unchanged_into_the_frozen_parts(tiny_model, tmp_path):
    sam2_file = _official(tiny_model, tmp_path / "sam2.pt")
    model = build_model(tiny_model.config)
    load_sam2_checkpoint(model, sam2_file)
    for key, value in tiny_model.sam2.state_dict().items():
        assert torch.equal(model.sam2.state_dict()[key], value)


def test_wrong_files_give_clear_errors(tiny_model, tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="expected"):
        load_model(sam2_checkpoint=text)
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="dict with key 'model'"):
        load_model(sam2_checkpoint=plain)
    with pytest.raises(CheckpointError, match="official SAM2 checkpoint, not SAM2-3dMed weights"):
        load_model(weights=_official(tiny_model, tmp_path / "sam2.pt"))
    other = build_model(tiny_test_config(64).__class__(architecture=SAM2Architecture(
        variant="tiny", image_size=64, trunk_embed_dim=16, trunk_stages=(1, 1, 2, 1), trunk_global_att_blocks=(3,),
        hidden_dim=32, memory_dim=32, memory_attention_layers=1, memory_attention_feedforward=64),
        srpp=SRPPConfig(dim=32, layers=1, heads=2, mlp_hidden=32)))
    with pytest.raises(CheckpointError, match="does not fit the model.*another shape"):
        load_sam2_checkpoint(other, _official(tiny_model, tmp_path / "sam2.pt"))
    with pytest.raises(CheckpointError, match="asked for"):
        load_model(weights=save_checkpoint(tiny_model, tmp_path / "w.safetensors", "whole_model"), variant="small")


# --- detection -----------------------------------------------------------------------------------
def _official_shapes(width, blocks, sam2_1=True):
    shapes = {"image_encoder.trunk.pos_embed": (1, width, 7, 7), "memory_attention.norm.weight": (256,)}
    shapes.update({f"image_encoder.trunk.blocks.{i}.norm1.weight": (width,) for i in range(blocks)})
    if sam2_1:
        shapes.update({"no_obj_embed_spatial": (1, 64), "obj_ptr_tpos_proj.weight": (64, 256)})
    return shapes


def test_official_sizes_are_told_apart_by_shape():
    for (width, blocks), variant in HIERA_SIZES.items():
        found = detect_sam2_state_dict(_official_shapes(width, blocks))
        assert (found.generation, found.variant, found.name) == ("2.1", variant, f"sam2.1-{variant}")
    assert detect_sam2_state_dict(_official_shapes(96, 12, sam2_1=False)).name == "sam2-tiny"
    assert detect_sam2_state_dict({"image_encoder.patch_embed.proj.weight": (768, 3, 16, 16)}) is None


def test_detector_reports_official_and_project_checkpoints(tiny_model, tmp_path):
    from volsam.methods import get_method

    assert detect_checkpoint in get_method("sam2-3dmed").checkpoint_detectors()
    torch.manual_seed(0)
    real_tiny = build_model(SAM2ThreeDMedConfig(SAM2Architecture("tiny", image_size=128)))
    report = detect_checkpoint(load_checkpoint(_official(real_tiny, tmp_path / "sam2.1_hiera_tiny.pt")))
    assert report.kind == "sam2" and report.usable and "sam2.1-tiny" in report.summary
    assert report.buffers == ["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    assert 0 < report.trainable_count < report.parameter_count
    custom = detect_checkpoint(load_checkpoint(_official(tiny_model, tmp_path / "custom.pt")))
    assert custom.kind == "sam2" and not custom.usable
    project = detect_checkpoint(load_checkpoint(save_checkpoint(
        tiny_model, tmp_path / "w.safetensors", "whole_model", provenance={"data": "none"})))
    assert project.kind == "sam2-3dmed" and project.usable and "whole model" in project.summary
    assert project.notes == ["data: none"] and not project.problems
    assert detect_checkpoint(load_checkpoint(_torch_file(tmp_path))) is None


def _torch_file(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    return path


def test_cli_path_does_not_import_torch():
    code = ("import sys; import volsam.methods, volsam.sessions.propagation_session, "
            "volsam.models.sam2_3dmed.detect; print('torch' in sys.modules, 'sam2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_frames_are_normalised_like_sam2_input():
    from volsam.models.sam2_3dmed.frames import IMAGENET_MEAN, IMAGENET_STD, IntensityConfig, SliceFrames
    from volsam.models.sam2_3dmed.slicing import SlicePlane

    array = np.full((3, 8, 8), 40.0, dtype=np.float32)  # soft-tissue window centre
    frames = SliceFrames(array, SlicePlane(array.shape, 2), IntensityConfig().value_range(array), 32)
    frame = frames.frame(1)
    assert frame.shape == (3, 32, 32)
    expected = (0.5 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(frame[:, 0, 0].numpy(), expected, rtol=1e-5)
    mr = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    low, high = IntensityConfig(modality="mr").value_range(mr)
    assert low == pytest.approx(4.995) and high == pytest.approx(994.005)
    assert IntensityConfig(ct_window="lung").value_range(mr) == (-1350.0, 150.0)
    with pytest.raises(ValueError, match="unknown CT window"):
        IntensityConfig(ct_window="brain")
    with pytest.raises(ValueError, match="positive width"):
        IntensityConfig(ct_window=(40, 0))
