"""Fixtures and helpers for the 3DSAM-adapter tests (imported by the test modules).

Checkpoint fixtures are written in the official layout: ``encoder_dict``, ``feature_dict``
(a list of four prompt encoders), ``decoder_dict``, AdamW-like optimizer states and numpy
scalars for ``epoch`` / ``best_val_loss``, either pickled the numpy 2 way (real numpy) or
crafted the numpy 1.x way (``numpy.core.multiarray.scalar``), as the released files are.
"""

from __future__ import annotations

import csv
import math
import pickle
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from volsam.models.sam3d_adapter import build_sam3d_adapter
from volsam.models.sam3d_adapter.window_attention import shift_mask

LAYOUT_TSV = Path(__file__).resolve().parent / "data" / "official_layout.tsv"

# Counts stated by the specification's table (section 10).
SPEC_PARAMETERS = 123_801_484
SPEC_TRAINABLE = 34_954_880
SPEC_BUFFER_ELEMENTS = 100_664_832


def layout_rows() -> list[dict]:
    with open(LAYOUT_TSV, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def tsv_shape(text: str) -> tuple[int, ...]:
    return () if text == "scalar" else tuple(int(v) for v in text.split("x"))


def randomize_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter non-trivial random values (default inits leave zeros and ones:
    relative tables, ``lr``, norms), so that a comparison exercises every term."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("attn.lr"):
                parameter.fill_(0.75)
            elif "norm" in name.split(".")[-2] or name.endswith(("neck_3d.0.1.weight",)):
                parameter.copy_(1 + 0.2 * torch.randn(parameter.shape, generator=generator))
            elif parameter.dim() <= 1:
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
            elif "rel_pos" in name:
                parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
            else:
                fan_in = parameter[0].numel() if parameter.dim() > 1 else parameter.shape[-1]
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(fan_in))
    return model


def tiny_model(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return randomize_weights(build_sam3d_adapter("tiny", **kwargs), seed).eval()


# --- numpy 1.x style pickles ----------------------------------------------------------------
class _Numpy1Pickler(pickle._Pickler):
    """Writes numpy scalars under their numpy 1.x global name, as the released files have them."""

    def save_global(self, obj, name=None):
        core = getattr(np, "_core", None) or np.core
        if obj is core.multiarray.scalar:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\nscalar\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


NUMPY1_PICKLE = types.SimpleNamespace(Pickler=_Numpy1Pickler, Unpickler=pickle.Unpickler, __name__="numpy1_pickle")


def adamw_like_state(tensors: list[torch.Tensor], steps: int = 3) -> dict:
    """An AdamW state dict over ``tensors`` (exp_avg, exp_avg_sq, step), as torch writes it."""
    return {
        "state": {index: {"step": torch.tensor(float(steps)), "exp_avg": torch.zeros_like(t),
                          "exp_avg_sq": torch.full_like(t, 1e-8)} for index, t in enumerate(tensors)},
        "param_groups": [{"lr": 4e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False,
                          "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
                          "fused": None, "initial_lr": 4e-4, "params": list(range(len(tensors)))}],
    }


def save_official(sections: dict, path: Path, numpy_style: str = "numpy1",
                  optimizer_tensors: int | None = None) -> Path:
    """Write ``sections`` (encoder_dict, feature_dict, decoder_dict) as a released file would be.

    ``optimizer_tensors`` limits how many tensors the optimizer states cover (None: all trainable).
    """
    trainable = [t for t in sections["decoder_dict"].values()]
    if optimizer_tensors is not None:
        trainable = trainable[:optimizer_tensors]
    payload = {
        "epoch": np.int64(499),
        "best_val_loss": np.float64(0.3125),
        "encoder_dict": sections["encoder_dict"],
        "decoder_dict": sections["decoder_dict"],
        "feature_dict": sections["feature_dict"],
        "encoder_opt": adamw_like_state(trainable[:2]),
        "feature_opt": adamw_like_state(trainable[2:3]),
        "decoder_opt": adamw_like_state(trainable),
    }
    if numpy_style == "numpy1":
        torch.save(payload, path, pickle_module=NUMPY1_PICKLE)
    elif numpy_style == "numpy2":
        torch.save(payload, path)
    else:
        raise ValueError(numpy_style)
    return path


def sections_from_tsv(seed: int = 0) -> dict:
    """Random float32 tensors of every TSV row, the shift masks computed as the spec says."""
    generator = torch.Generator().manual_seed(seed)
    mask = shift_mask(32, 8, 4)
    sections = {"encoder_dict": {}, "feature_dict": [{} for _ in range(4)], "decoder_dict": {}}
    for row in layout_rows():
        shape = tsv_shape(row["shape"])
        if row["key"].endswith("attn_mask"):
            value = mask
        elif row["key"].endswith("attn.lr"):
            value = torch.tensor(1.0)
        else:
            value = 0.02 * torch.randn(shape, generator=generator)
        section = row["section"]
        if section.startswith("feature_dict["):
            sections["feature_dict"][int(section[13])][row["key"]] = value
        else:
            sections[section][row["key"]] = value
    return sections


@pytest.fixture(scope="session")
def official_full_checkpoint(tmp_path_factory) -> Path:
    """A full-size (~830 MB) official-layout checkpoint with random weights, numpy 1.x scalars."""
    path = tmp_path_factory.mktemp("official") / "last.pth.tar"
    return save_official(sections_from_tsv(), path, "numpy1", optimizer_tensors=4)


@pytest.fixture(scope="session")
def sam_vit_b_checkpoint(tmp_path_factory) -> Path:
    """segment_anything's ViT-B with random weights, saved as ``sam_vit_b_01ec64.pth`` is."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    sam = sam_model_registry["vit_b"]()
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_random.pth"
    torch.save(sam.state_dict(), path)
    del sam
    return path


class SphereEmbedding:
    def __init__(self, crop):
        self.crop = crop


class SpherePredictor:
    """A stand-in for the model in session tests: the probability is 1 inside balls of
    ``radius`` crop voxels (= mm) around the positive clicks, 0 elsewhere. It records every crop
    and click it sees, so tests can check where clicks land."""

    def __init__(self, crop_size: int = 32, radius: float = 6.0):
        self.crop_size = crop_size
        self.radius = radius
        self.embedded: list[np.ndarray] = []
        self.calls: list[np.ndarray] = []
        self.model = types.SimpleNamespace(has_point_labels=False)

    def embed(self, crop):
        assert crop.shape == (self.crop_size,) * 3
        self.embedded.append(crop)
        return SphereEmbedding(crop)

    def predict(self, embedding, points_dwh, labels=None):
        points = np.asarray(points_dwh, float).reshape(-1, 3)
        self.calls.append(points)
        d, h, w = np.meshgrid(*[np.arange(self.crop_size, dtype=float)] * 3, indexing="ij")
        probability = np.zeros((self.crop_size,) * 3, np.float32)
        for pd, pw, ph in points:  # clicks come as [d, w, h]
            probability[(d - pd) ** 2 + (h - ph) ** 2 + (w - pw) ** 2 <= self.radius ** 2] = 1.0
        return probability
