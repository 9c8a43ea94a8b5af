"""Fixtures for the SAM2-3dMed tests (import with ``from conftest_sam2 import *``).

Models are tiny custom SAM2 configurations with seeded random weights, so every test runs in
seconds on a CPU. Torch runs single-threaded in these tests: on a shared 2-core machine, two
threads per process made small models 30x slower through oversubscription.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from volsam.geometry import Volume

__all__ = ["absent_model", "blob_volume", "make_blob_volume", "present_model", "set_object_score_bias",
           "single_thread_torch", "tiny_model", "tiny_model_128"]


@pytest.fixture(autouse=True, scope="module")
def single_thread_torch():
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny(image_size: int, seed: int = 0):
    import torch

    from volsam.models.sam2_3dmed.build import build_model
    from volsam.models.sam2_3dmed.config import tiny_test_config

    torch.manual_seed(seed)
    return build_model(tiny_test_config(image_size))


@pytest.fixture(scope="session")
def tiny_model():
    """Tiny custom SAM2-3dMed at 64 px, random weights (treat as read-only)."""
    return _tiny(64)


@pytest.fixture(scope="session")
def tiny_model_128():
    """Tiny custom SAM2-3dMed at 128 px, random weights (treat as read-only)."""
    return _tiny(128)


def set_object_score_bias(model, bias: float):
    """A copy of ``model`` whose decoder always says the object is present (bias > 0) or
    absent (bias < 0): a way to script propagation outcomes with random weights."""
    import torch

    model = copy.deepcopy(model)
    head = model.sam2.sam_mask_decoder.pred_obj_score_head
    last = head.layers[-1] if hasattr(head, "layers") else head
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(bias)
    return model


@pytest.fixture(scope="session")
def present_model(tiny_model):
    return set_object_score_bias(tiny_model, 50.0)


@pytest.fixture(scope="session")
def absent_model(tiny_model):
    return set_object_score_bias(tiny_model, -50.0)


def make_blob_volume(shape_kji=(10, 24, 28), direction=None, seed: int = 0) -> Volume:
    """A small CT-like volume (HU): noise around -50, with a bright ellipsoid in the middle."""
    rng = np.random.default_rng(seed)
    array = rng.normal(-50.0, 20.0, size=shape_kji).astype(np.float32)
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape_kji), indexing="ij")
    centre = [(n - 1) / 2 for n in shape_kji]
    radius = [max(1.5, n / 4) for n in shape_kji]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip((k, j, i), centre, radius)) <= 1
    array[inside] += 200.0
    return Volume.from_spacing(array, (0.8, 0.9, 2.0), (-10.0, 5.0, 3.0),
                               np.eye(3) if direction is None else direction)


@pytest.fixture
def blob_volume() -> Volume:
    return make_blob_volume()


def scripted_masks(track_step, image_size, paint):
    """track_step with its masks replaced by ``paint(logits)`` drawn on a "no object" background."""
    import torch
    import torch.nn.functional as F

    def scripted(*args, **kwargs):
        out = track_step(*args, **kwargs)
        low = torch.full_like(out["pred_masks"], -10.0)
        paint(low, *low.shape[-2:])
        out["pred_masks"] = low
        out["pred_masks_high_res"] = F.interpolate(low, size=(image_size, image_size), mode="bilinear",
                                                   align_corners=False)
        return out

    return scripted
