"""Training that generalises (issue 15): robust augmentation and corrective (negative) clicks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from volsam.phantoms import PhantomConfig, write_phantom_dataset
from volsam.training import TrainingConfig, train

PHANTOMS = PhantomConfig(size_ijk=(64, 64, 40), spacing_ijk=(2.5, 2.5, 3.0), lesions_per_case=(1, 2),
                         lesion_diameter_median_mm=30.0, lesion_diameter_range_mm=(15.0, 45.0))
CASES = [f"phantom_{i:03d}" for i in range(3)]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms") / "data"
    write_phantom_dataset(root, len(CASES), seed=7, config=PHANTOMS)
    (root / "splits_final.json").write_text(json.dumps([{"train": CASES, "val": CASES[:1]}]))
    return root


@pytest.fixture(scope="module")
def adapter_cases(phantoms, tmp_path_factory):
    from volsam.datasets import load_dataset
    from volsam.training.cache import CachedCases, VolumeCache
    from volsam.training.preprocessing import ADAPTER_PRESETS, AdapterPreprocessing

    dataset = load_dataset(phantoms)
    cache = VolumeCache(tmp_path_factory.mktemp("cache"), AdapterPreprocessing(2.0, ADAPTER_PRESETS["ct"]), 2)
    cache.prepare(dataset.training, progress=False)
    return CachedCases(cache, dataset.training)


def test_robust_augmentation_varies_contrast_and_noise_and_keeps_crops_consistent(adapter_cases):
    from volsam.training.samples import AdapterSampling, adapter_training_sample

    spreads = {}
    for augmentation in ("none", "robust"):
        sampling = AdapterSampling(32, augmentation, "iterative", intensity_shift=0.3)
        contrasts = []
        for n in range(24):
            sample = adapter_training_sample(adapter_cases[n % 3], sampling, np.random.default_rng(n))
            target, image = sample["target"] > 0, sample["image"]
            assert image.shape == target.shape == (32, 32, 32) and np.isfinite(image).all()
            assert np.array_equal(sample["positive"], target[tuple(sample["points_kji"].T)])
            if target.any() and (~target).any():
                contrasts.append(np.median(image[target]) - np.median(image[~target]))
        spreads[augmentation] = np.std(np.abs(contrasts)) / np.mean(np.abs(contrasts))
    assert spreads["robust"] > spreads["none"]  # contrast scaling widens the lesions' contrasts


def test_adapter_corrective_click_is_negative_in_a_false_positive_and_absent_when_right():
    from volsam.training.adapter_task import AdapterTask, points_dwh

    target = torch.zeros(1, 16, 16, 16, dtype=torch.long)
    target[0, 4:10, 4:10, 4:10] = 1
    points = points_dwh(torch.tensor([[7.0, 7.0, 7.0]]))
    labels = torch.ones(1, dtype=torch.long)
    crop = torch.zeros(1, 1, 16, 16, 16)

    def logits_for(mask):
        return lambda crop, points, labels: torch.stack([-mask.float(), mask.float()], dim=1)

    leaking = target.clone()
    leaking[0, 4:10, 4:10, 10:16] = 1  # a leak beside the lesion
    more_points, more_labels = AdapterTask._with_corrective_click(logits_for(leaking), crop, target, points, labels)
    assert more_labels.tolist() == [1, 0]
    d, w, h = more_points[1].long().tolist()  # the model's [d, w, h] order
    assert leaking[0, d, h, w] == 1 and target[0, d, h, w] == 0  # inside the leak
    same_points, same_labels = AdapterTask._with_corrective_click(logits_for(target), crop, target, points, labels)
    assert torch.equal(same_points, points) and torch.equal(same_labels, labels)


def test_sam2_training_with_corrective_clicks_runs_and_adds_a_labelled_click(phantoms, tmp_path):
    from volsam.models.sam2_3dmed.build import build_model
    from volsam.training.config import sam2_configs
    from volsam.training.sam2_task import _with_corrective_click

    torch.manual_seed(0)
    sam2 = build_model(sam2_configs()["tiny-test"]).sam2.eval()
    frames = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        backbone = sam2.forward_image(frames)
        _, feats, pos, sizes = sam2._prepare_backbone_features(backbone)
        target = torch.zeros(64, 64)
        target[20:40, 20:40] = 1
        prompt = {"point_coords": torch.tensor([[[30.0, 30.0]]]), "point_labels": torch.ones(1, 1, dtype=torch.int32)}
        corrected = _with_corrective_click(sam2, feats, pos, sizes, prompt, target, 4)
    assert corrected["point_coords"].shape == (1, 2, 2)
    x, y = corrected["point_coords"][0, 1].long().tolist()
    assert int(corrected["point_labels"][0, 1]) == int(target[y, x])  # positive in a miss, negative outside

    config = TrainingConfig(model="sam2-3dmed", data=phantoms, label="tumor", out=tmp_path / "run", config="tiny-test",
                            train_encoder=True, epochs=1, clip_length=3, click_protocol="iterative", workers=0,
                            progress=False, device="cpu")
    result = train(config)
    assert result.steps_done == 3 and np.isfinite(result.history[-1]["train_loss"])
