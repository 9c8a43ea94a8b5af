"""Building 3DSAM-adapter from files: official releases (strict), the project's own format,
and clear errors for every wrong file."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from conftest_adapter import SPEC_BUFFER_ELEMENTS, SPEC_PARAMETERS, SPEC_TRAINABLE, save_official, tiny_model

from volsam.checkpoint_info import describe_checkpoint
from volsam.models.sam3d_adapter import TINY
from volsam.models.sam3d_adapter.checkpoints import (
    from_checkpoint,
    from_official,
    load_model,
    official_sections,
    save_checkpoint,
)
from volsam.weights import CheckpointError

pytest_plugins = ["conftest_adapter"]

CROP = torch.linspace(-2, 2, 32 ** 3).reshape(1, 1, 32, 32, 32)
POINTS = torch.tensor([[16.0, 12.0, 20.0], [4.0, 5.0, 6.0]])


def logits(model):
    with torch.inference_mode():
        return model(CROP, POINTS)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=7)


@pytest.mark.parametrize("numpy_style", ["numpy1", "numpy2"])
def test_official_layout_round_trip(tiny, tmp_path, numpy_style):
    path = save_official(official_sections(tiny), tmp_path / "last.pth.tar", numpy_style)
    loaded = from_official(path, config=TINY)
    assert torch.equal(logits(loaded), logits(tiny))
    encoder = loaded.image_encoder
    assert encoder.blocks[0].attn_mask is encoder.blocks[2].attn_mask  # one shared mask, not one per block
    assert not encoder.blocks[0].attn.qkv.weight.requires_grad and encoder.blocks[0].adapter.conv.weight.requires_grad


def test_official_strict_load_reports_missing_and_misshaped(tiny, tmp_path):
    sections = official_sections(tiny)
    del sections["encoder_dict"]["blocks.1.adapter.conv.bias"]
    sections["decoder_dict"]["cls.3.weight"] = torch.zeros(3, 8, 3, 3, 3)
    path = save_official(sections, tmp_path / "old.pth.tar")
    with pytest.raises(CheckpointError, match=r"does not load strictly.*blocks\.1\.adapter\.conv\.bias.*cls\.3\.weight "
                                              r"has shape \(3, 8, 3, 3, 3\), expected \(2, 8, 3, 3, 3\)"):
        from_official(path, config=TINY)
    sections = official_sections(tiny)
    sections["feature_dict"] = sections["feature_dict"][:3]
    with pytest.raises(CheckpointError, match="feature_dict must be a list of 4"):
        from_official(save_official(sections, tmp_path / "three.pth.tar"), config=TINY)


def test_full_size_tsv_checkpoint_loads_strictly_and_is_described(official_full_checkpoint):
    report = describe_checkpoint(official_full_checkpoint)
    assert report.kind == "sam3d-adapter-official" and report.usable, report.problems
    assert (report.parameter_count, report.trainable_count, report.buffer_count) == \
        (SPEC_PARAMETERS, SPEC_TRAINABLE, SPEC_BUFFER_ELEMENTS)
    assert report.tensor_count == 610 and len(report.buffers) == 10
    assert any("epoch=499" in note for note in report.notes)
    model = from_official(official_full_checkpoint)
    assert sum(p.numel() for p in model.parameters()) == SPEC_PARAMETERS
    masks = {id(block.attn_mask) for block in model.image_encoder.blocks if block.attn_mask is not None}
    assert len(masks) == 1
    state = model.state_dict()
    assert state["image_encoder.blocks.4.attn.lr"].shape == ()


def test_full_size_checkpoint_through_the_cli(official_full_checkpoint, capsys):
    from volsam.cli import main

    assert main(["weights", "inspect", str(official_full_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "kind: sam3d-adapter-official" in out and "parameters: 123,801,484" in out
    assert "trainable: 34,954,880" in out and "buffers: 100,664,832 elements in 10 tensors" in out


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_project_checkpoint_round_trip(tiny, tmp_path, suffix):
    path = save_checkpoint(tiny, tmp_path / f"model{suffix}", {"data": "phantom", "command": "volsam train"})
    model = from_checkpoint(path)
    assert torch.equal(logits(model), logits(tiny))
    assert model.config == TINY
    report = describe_checkpoint(path)
    assert report.kind == "sam3d-adapter" and report.usable
    assert report.parameter_count == sum(p.numel() for p in tiny.parameters())
    assert any('"data": "phantom"' in note for note in report.notes)
    assert torch.equal(logits(load_model(path)), logits(tiny))


def test_project_plain_state_dict_with_json_beside_it(tiny, tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(tiny.state_dict(), path)
    with pytest.raises(CheckpointError, match="unknown layout"):
        load_model(path)
    (tmp_path / "weights.json").write_text(json.dumps({"format": "volsam.sam3d_adapter", "config": TINY.to_dict()}))
    assert torch.equal(logits(load_model(path)), logits(tiny))


def test_project_checkpoint_without_sam_tensors_needs_sam(tmp_path):
    from segment_anything.modeling import ImageEncoderViT  # noqa: F401  (SAM is installed)

    model = tiny_model(seed=1)
    path = save_checkpoint(model, tmp_path / "tuned.safetensors", include_sam=False)
    with pytest.raises(CheckpointError, match="holds only the tuned tensors.*SAM ViT-B"):
        from_checkpoint(path)
    report = describe_checkpoint(path)
    assert report.usable and any("frozen tensors are left out" in note for note in report.notes)


def test_wrong_files_name_the_expected_format(tmp_path):
    good = tmp_path / "model.pt"
    save_checkpoint(tiny_model(), good)
    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="damaged or truncated"):
        load_model(truncated)

    torch.save({"model": {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(2)}}, tmp_path / "sam2.pt")
    with pytest.raises(CheckpointError, match=r"SAM 2 checkpoint.*expected a 3DSAM-adapter release"):
        from_official(tmp_path / "sam2.pt")

    vit_h = {"image_encoder.patch_embed.proj.weight": torch.zeros(1280, 3, 16, 16), "mask_decoder.x": torch.zeros(1)}
    torch.save(vit_h, tmp_path / "sam_vit_h.pth")
    with pytest.raises(CheckpointError, match="SAM ViT-H checkpoint; only SAM ViT-B fits"):
        load_model(tmp_path / "sam_vit_h.pth")
    with pytest.raises(CheckpointError, match="SAM ViT-H checkpoint; expected a volsam 3DSAM-adapter checkpoint"):
        from_checkpoint(tmp_path / "sam_vit_h.pth")

    with open(tmp_path / "object.pkl", "wb") as handle:
        pickle.dump({"model": CheckpointError("a class instance")}, handle, protocol=2)  # torch.save's protocol
    with pytest.raises(CheckpointError, match=r"refusing to load.*volsam\.weights\.loading\.CheckpointError"):
        load_model(tmp_path / "object.pkl")

    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="a list, not a dict of tensors; expected a 3DSAM-adapter release"):
        load_model(tmp_path / "list.pt")
