"""Safe loading and kind detection of checkpoint files (``volsam.weights``, ``volsam weights inspect``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest_adapter import NUMPY1_PICKLE

from volsam.checkpoint_info import describe_checkpoint
from volsam.cli import main
from volsam.weights import CheckpointError, CheckpointReport, classify, load_checkpoint

pytest_plugins = ["conftest_adapter"]


class NotAllowed:
    """A class a checkpoint must not be able to make us build."""

    def __init__(self):
        self.value = 1


def test_numpy_scalars_load_in_both_numpy_spellings(tmp_path):
    payload = {"epoch": np.int64(12), "best_val_loss": np.float64(0.25), "weights": {"w": torch.ones(2)}}
    torch.save(payload, tmp_path / "numpy2.pt")
    torch.save(payload, tmp_path / "numpy1.pt", pickle_module=NUMPY1_PICKLE)
    assert b"numpy.core.multiarray" in (tmp_path / "numpy1.pt").read_bytes()
    for name in ("numpy1.pt", "numpy2.pt"):
        content = load_checkpoint(tmp_path / name).content
        assert content["epoch"] == 12 and content["best_val_loss"] == 0.25
        assert torch.equal(content["weights"]["w"], torch.ones(2))


def test_unsafe_and_damaged_files_are_refused(tmp_path):
    torch.save({"state": NotAllowed()}, tmp_path / "class.pt")
    with pytest.raises(CheckpointError, match=r"refusing to load.*NotAllowed"):
        load_checkpoint(tmp_path / "class.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="the file is empty"):
        load_checkpoint(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "absent.pt")
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1000)}, str(tmp_path / "whole.safetensors"))
    data = (tmp_path / "whole.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="damaged or truncated safetensors"):
        load_checkpoint(tmp_path / "cut.safetensors")
    (tmp_path / "text.pt").write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError, match="expected safetensors or a torch.save file"):
        load_checkpoint(tmp_path / "text.pt")


def test_safetensors_metadata_and_sidecar(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, str(tmp_path / "m.safetensors"), metadata={"format": "x"})
    (tmp_path / "m.json").write_text(json.dumps({"config": {"name": "tiny"}}))
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    assert loaded.format == "safetensors" and loaded.metadata == {"format": "x"}
    assert loaded.sidecar == {"config": {"name": "tiny"}}


def test_classify_kinds():
    sam = {"image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 16, 16), "mask_decoder.a": torch.zeros(1)}
    assert classify(sam) == "sam-vit-l"
    assert classify({"model": {"image_encoder.trunk.x": torch.zeros(1)}}) == "sam2"
    assert classify({"encoder_dict": {}, "feature_dict": [], "decoder_dict": {}}) == "sam3d-adapter-official"
    assert classify({"format": "volsam.sam3d_adapter"}) == "sam3d-adapter"
    assert classify({"weight": torch.zeros(1)}) == "unknown"
    assert classify([1, 2]) == "unknown"


def test_a_registered_method_brings_its_checkpoint_detector(tmp_path, monkeypatch):
    from volsam import methods

    torch.save({"model": {"image_encoder.trunk.x": torch.zeros(3)}}, tmp_path / "sam2.pt")
    report = describe_checkpoint(tmp_path / "sam2.pt")
    assert report.kind == "sam2" or report.kind.startswith("sam2.")

    def detect_test(loaded):
        if isinstance(loaded.content, dict) and "model" in loaded.content:
            return CheckpointReport(str(loaded.path), "test-kind", True, "test detector")
        return None

    class ThirdMethod(methods.Sam2ThreeDMedMethod):  # a new method: one registry entry
        name = "third"

        def checkpoint_detectors(self):
            return (detect_test,)

    monkeypatch.setattr(methods, "METHODS", {"third": ThirdMethod(), **methods.METHODS})
    assert describe_checkpoint(tmp_path / "sam2.pt").kind == "test-kind"
    assert methods.get_method("third").name == "third"


def test_sam_vit_b_is_described(sam_vit_b_checkpoint):
    report = describe_checkpoint(sam_vit_b_checkpoint)
    assert report.kind == "sam-vit-b" and report.usable
    sam_state = torch.load(sam_vit_b_checkpoint, weights_only=True, mmap=True)
    assert report.tensor_count == len(sam_state)
    assert report.parameter_count + report.buffer_count == sum(v.numel() for v in sam_state.values())
    assert report.buffers == ["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    assert report.trainable_count == 36_864  # the block norms, which 3DSAM-adapter keeps training
    assert any("123,801,484 parameters, 34,954,880 trainable" in note for note in report.notes)


def test_cli_exit_codes_and_json(tmp_path, capsys):
    vit_l = {"image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 16, 16), "mask_decoder.a": torch.zeros(1)}
    torch.save(vit_l, tmp_path / "sam_vit_l.pth")
    assert main(["weights", "inspect", str(tmp_path / "sam_vit_l.pth")]) == 1
    out = capsys.readouterr().out
    assert "kind: sam-vit-l" in out and "refused: only SAM ViT-B fits 3DSAM-adapter" in out

    torch.save({"weight": torch.zeros(4)}, tmp_path / "other.pt")
    assert main(["weights", "inspect", "--json", str(tmp_path / "other.pt")]) == 1
    assert json.loads(capsys.readouterr().out)["kind"] == "unknown"

    (tmp_path / "cut.pt").write_bytes((tmp_path / "other.pt").read_bytes()[:200])
    assert main(["weights", "inspect", str(tmp_path / "cut.pt")]) == 1
    assert "kind: damaged" in capsys.readouterr().out
    assert main(["weights", "inspect", str(tmp_path / "absent.pt")]) == 1
    assert "kind: missing" in capsys.readouterr().out
