"""Training on phantoms (CPU, tiny configurations): learning, resume, checks before training,
samples, the training forward, the official export and the cache."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from volsam.phantoms import PhantomConfig, write_phantom_dataset
from volsam.training import TrainingConfig, train
from volsam.training.recipes import checked

#: Small phantoms with one large, bright lesion each: a tiny model learns them within a few
#: dozen steps.
SMALL_PHANTOMS = PhantomConfig(size_ijk=(64, 64, 48), spacing_ijk=(2.5, 2.5, 3.0), lesions_per_case=(1, 1),
                               lesion_diameter_median_mm=35.0, lesion_diameter_range_mm=(20.0, 50.0),
                               lesion_contrast_hu_range=(100.0, 150.0), hypodense_fraction=0.0, noise_std_hu=5.0)
CASES = [f"phantom_{i:03d}" for i in range(4)]


@pytest.fixture(autouse=True)
def one_thread():
    """Shared CI machines are oversubscribed; one thread per process is faster there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms") / "data"
    write_phantom_dataset(root, len(CASES), seed=5, config=SMALL_PHANTOMS)
    (root / "splits_final.json").write_text(json.dumps([{"train": CASES, "val": CASES}]))
    return root


def _config(data, out, **overrides) -> TrainingConfig:
    options = {"model": "sam3d-adapter", "data": data, "label": "tumor", "out": out, "config": "tiny",
               "train_encoder": True, "spacing_mm": 3.0, "augmentation": "none", "learning_rate": 2e-3, "workers": 0,
               "progress": False, "device": "cpu"}
    return TrainingConfig(**{**options, **overrides})


def _log(path):
    with open(path / "log.csv") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def test_short_training_lowers_the_loss_and_raises_validation_dice(phantoms, tmp_path):
    from volsam.models.sam2_3dmed.checkpoint import load_model

    result = train(_config(phantoms, tmp_path / "run", model="sam2-3dmed", config="tiny-test", epochs=9,
                           clip_length=4, learning_rate=1e-3, spacing_mm=1.0, augmentation=None))
    log = _log(tmp_path / "run")
    assert len(log) == 9 and result.steps_done == 36
    assert np.mean([r["train_loss"] for r in log[-3:]]) < 0.6 * np.mean([r["train_loss"] for r in log[:3]])
    assert log[-1]["val_loss"] < 0.5 * log[0]["val_loss"]
    assert log[-1]["val_dice"] > max(0.6, log[0]["val_dice"] + 0.1)
    for name in ("last.safetensors", "best.safetensors", "resume.pt", "run.json", "log.csv"):
        assert (tmp_path / "run" / name).is_file()
    facts = json.loads((tmp_path / "run" / "run.json").read_text())["facts"]
    assert facts["preprocessing"] == {"kind": "sam2-3dmed", "window": "soft_tissue"}
    model = load_model(weights=tmp_path / "run" / "last.safetensors")  # a whole model: no SAM2.1 file needed
    assert model.image_size == 64


def test_resume_continues_the_same_run(phantoms, tmp_path):
    from safetensors.torch import load_file

    train(_config(phantoms, tmp_path / "straight", epochs=2))
    train(_config(phantoms, tmp_path / "resumed", epochs=1))
    with pytest.raises(ValueError, match="already holds a training run; pass --resume"):
        train(_config(phantoms, tmp_path / "resumed", epochs=2))
    with pytest.raises(ValueError, match="started with other options"):
        train(_config(phantoms, tmp_path / "resumed", epochs=2, resume=True, seed=3))
    train(_config(phantoms, tmp_path / "resumed", epochs=2, resume=True))
    straight, resumed = _log(tmp_path / "straight"), _log(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == [4, 8]
    assert resumed[1]["train_loss"] == pytest.approx(straight[1]["train_loss"], rel=1e-4)
    a, b = load_file(tmp_path / "straight" / "last.safetensors"), load_file(tmp_path / "resumed" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    with pytest.raises(ValueError, match="holds no run to resume"):
        train(_config(phantoms, tmp_path / "nothing", epochs=1, resume=True))


def _copy_dataset(source, target, cases=CASES):
    import shutil

    shutil.copytree(source, target)
    return target


def test_bad_input_fails_before_training(phantoms, tmp_path):
    from volsam.geometry import Volume
    from volsam.io import read_image, write_mask

    no_json = _copy_dataset(phantoms, tmp_path / "no_json")
    (no_json / "dataset.json").unlink()
    with pytest.raises(ValueError, match="has no dataset.json"):
        train(_config(no_json, tmp_path / "run1", epochs=1))

    absent = _copy_dataset(phantoms, tmp_path / "absent")
    meta = json.loads((absent / "dataset.json").read_text())
    meta["labels"]["cyst"] = 3
    (absent / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"label 3 \(cyst\) does not occur in any of the 4 training case"):
        train(_config(absent, tmp_path / "run2", label="cyst", epochs=1))

    moved = _copy_dataset(phantoms, tmp_path / "geometry")
    label = read_image(moved / "labelsTr" / "phantom_002.nii.gz")
    shifted = Volume.from_spacing(label.array, (2.5, 2.5, 3.5))
    write_mask(label.array, shifted, moved / "labelsTr" / "phantom_002.nii.gz")
    with pytest.raises(ValueError, match="case phantom_002: image and label have different geometry"):
        train(_config(moved, tmp_path / "run3", epochs=1))

    empty = _copy_dataset(phantoms, tmp_path / "empty")
    (empty / "splits_final.json").write_text(json.dumps([{"train": [], "val": CASES}]))
    with pytest.raises(ValueError, match="the training set is empty"):
        train(_config(empty, tmp_path / "run4", epochs=1))
    for run in ("run1", "run2", "run3", "run4"):
        assert not (tmp_path / run).exists()  # not even the cache of run2, which read the cases

    result = subprocess.run([sys.executable, "-m", "volsam", "train", "--model", "sam3d-adapter", "--config", "tiny",
                             "--data", str(no_json), "--label", "2", "--out", str(tmp_path / "cli")],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("volsam train: error:") and "dataset.json" in result.stderr


def test_option_checks():
    base = {"model": "sam3d-adapter", "data": "d", "label": "2", "out": "o"}
    with pytest.raises(ValueError, match="needs --sam-checkpoint"):
        checked(TrainingConfig(**base))
    with pytest.raises(ValueError, match="--crop applies to sam3d-adapter"):
        checked(TrainingConfig(**{**base, "model": "sam2-3dmed", "config": "tiny-test"}, crop=64))
    with pytest.raises(ValueError, match="works on 128\\^3 crops only"):
        TrainingConfig(**base, sam_checkpoint="sam.pth", crop=64).adapter_model_config()
    assert TrainingConfig(**base, config="tiny-demo", crop=48).adapter_model_config().crop_size == 48
    with pytest.raises(ValueError, match="give --epochs or --steps, not both"):
        checked(TrainingConfig(**base, config="tiny", epochs=1, steps=1))
    with pytest.raises(ValueError, match="'vit_l' is not a sam3d-adapter configuration"):
        checked(TrainingConfig(**base, config="vit_l"))
    with pytest.raises(ValueError, match="--augmentation zoom3d applies to sam3d-adapter; sam2-3dmed takes robust"):
        checked(TrainingConfig(**{**base, "model": "sam2-3dmed", "config": "tiny-test"}, augmentation="zoom3d"))
    with pytest.raises(ValueError, match="--reverse-contrast must be a share in \\[0, 1\\], got 1.5"):
        checked(TrainingConfig(**base, config="tiny", reverse_contrast=1.5))
    with pytest.raises(ValueError, match="--object-copies must be a share in \\[0, 1\\], got -0.5"):
        checked(TrainingConfig(**{**base, "model": "sam2-3dmed", "config": "tiny-test"}, object_copies=-0.5))
    with pytest.raises(ValueError, match="--object-copies applies to sam2-3dmed clips"):
        checked(TrainingConfig(**base, config="tiny", object_copies=0.5))


def test_training_forward_equals_the_model_and_samples_fit(phantoms, tmp_path):
    from volsam.datasets import load_dataset
    from volsam.models.sam3d_adapter import TINY, build_sam3d_adapter
    from volsam.training.adapter_task import AdapterTrainingForward
    from volsam.training.cache import CachedCases, VolumeCache
    from volsam.training.preprocessing import (
        ADAPTER_PRESETS,
        AdapterPreprocessing,
        Sam2Preprocessing,
    )
    from volsam.training.samples import (
        AdapterSampling,
        ClipSampling,
        adapter_training_sample,
        sam2_clip_sample,
    )

    torch.manual_seed(0)
    model = build_sam3d_adapter(TINY).eval()
    crop = torch.randn(1, 1, 32, 32, 32)
    points = torch.tensor([[16.0, 10.0, 20.0], [3.0, 4.0, 5.0]])
    with torch.no_grad():
        assert torch.allclose(AdapterTrainingForward(model)(crop, points, None), model(crop, points), atol=1e-5)

    dataset = load_dataset(phantoms)
    cache = VolumeCache(tmp_path / "cache", AdapterPreprocessing(3.0, ADAPTER_PRESETS["ct"]), 2)
    cases = CachedCases(cache, dataset.training)
    stamp = [p.stat().st_mtime_ns for p in sorted((tmp_path / "cache").glob("*"))] if cache.prepare(
        dataset.training, progress=False) else None
    cache.prepare(dataset.training, progress=False)  # cached: nothing is rebuilt
    assert stamp == [p.stat().st_mtime_ns for p in sorted((tmp_path / "cache").glob("*"))]
    for protocol in ("3dsam", "lesion"):
        sample = adapter_training_sample(cases[0], AdapterSampling(32, "zoom3d", protocol, 0.4),
                                         np.random.default_rng(1))
        assert sample["image"].shape == sample["target"].shape == (32, 32, 32)
        inside = np.all((sample["points_kji"] >= 0) & (sample["points_kji"] < 32))
        assert inside and np.array_equal(sample["positive"], sample["target"][tuple(sample["points_kji"].T)] > 0)

    sam2_cache = VolumeCache(tmp_path / "cache2", Sam2Preprocessing("soft_tissue"), 2)
    clip = sam2_clip_sample(sam2_cache.prepare(dataset.training, progress=False)[1], ClipSampling(6),
                            np.random.default_rng(2))
    assert clip["images"].shape == clip["masks"].shape == (6, 64, 64)
    assert 0.0 <= clip["images"].min() and clip["images"].max() <= 1.0
    x, y = clip["click_xy"].astype(int)
    assert clip["masks"][0][y, x] == 1 and np.all(np.abs(np.diff(clip["slices"])) == 1)


def test_official_export_round_trip(tmp_path):
    from volsam.models.sam3d_adapter import TINY, build_sam3d_adapter
    from volsam.models.sam3d_adapter.checkpoints import from_official
    from volsam.training.export import official_release
    from volsam.weights.loading import LoadedCheckpoint

    torch.manual_seed(1)
    model = build_sam3d_adapter(TINY).eval()
    release = official_release(model, epoch=3, best_val_loss=0.25)
    assert set(release) == {"epoch", "best_val_loss", "encoder_dict", "decoder_dict", "feature_dict",
                            "encoder_opt", "feature_opt", "decoder_opt"}
    assert len(release["feature_dict"]) == 4
    loaded = from_official(LoadedCheckpoint(tmp_path / "release.pth.tar", "torch", release), config=TINY)
    crop, points = torch.randn(1, 1, 32, 32, 32), torch.tensor([[16.0, 16.0, 16.0]])
    with torch.no_grad():
        assert torch.allclose(loaded(crop, points), model(crop, points), atol=1e-6)


def test_crops_and_clips_pick_every_lesion_equally_often():
    from volsam.training.cache import CachedCase
    from volsam.training.samples import AdapterSampling, adapter_training_sample

    label = np.zeros((40, 40, 40), np.uint8)
    label[2:22, 2:22, 2:22] = 1  # 8000 voxels
    label[32:35, 32:35, 32:35] = 1  # 27 voxels: a random voxel would land here 0.3 % of the time
    foreground = np.flatnonzero(label)
    case = CachedCase("two", np.zeros(label.shape, np.float32), label, foreground, (1.0,) * 3, (1.0,) * 3, np.eye(4),
                      foreground.size, (0, 1), ((0, 0, 0), (40, 40, 40)))
    assert [lesion.size for lesion in case.lesions] == [8000, 27]
    sampling = AdapterSampling(16, augmentation="none", click_protocol="lesion")
    rng = np.random.default_rng(0)
    small = [adapter_training_sample(case, sampling, rng)["target"].sum() <= 27 for _ in range(200)]
    assert 0.35 < np.mean(small) < 0.65
    from volsam.training.samples import ClipSampling, sam2_clip_sample

    small = [sam2_clip_sample(case, ClipSampling(4), rng)["masks"].sum() <= 27 for _ in range(200)]
    assert 0.35 < np.mean(small) < 0.65


def test_size_balanced_sampling_draws_every_size_bin_equally_often():
    from volsam.training.cache import CachedCase
    from volsam.training.samples import AdapterSampling, SizeBalancedLesions, adapter_training_sample

    def case(name, boxes):
        label = np.zeros((40, 40, 40), np.uint8)
        for box in boxes:
            label[box] = 1
        foreground = np.flatnonzero(label)
        return CachedCase(name, np.zeros(label.shape, np.float32), label, foreground, (1.0,) * 3, (1.0,) * 3,
                          np.eye(4), foreground.size, (0, 1), ((0, 0, 0), (40, 40, 40)))

    cube = lambda start, side: tuple(slice(start, start + side) for _ in range(3))  # noqa: E731
    # Nine lesions of 11-13 mm (volume-equivalent diameters), one of 25 mm and one of 4 mm.
    cases = [case("medium", [cube(1, 9), cube(14, 10), cube(28, 9)]), case("medium2", [cube(2, 9), cube(20, 10)]),
             case("medium3", [cube(1, 10), cube(15, 9), cube(28, 10)]), case("medium4", [cube(5, 9)]),
             case("large_and_small", [cube(1, 20), cube(30, 3)]), case("empty", [])]
    lesions = SizeBalancedLesions(cases, range(len(cases)))
    assert lesions.counts == (1, 9, 1, 0)
    rng = np.random.default_rng(0)
    draws = [lesions.draw(rng) for _ in range(3000)]
    large = np.mean([d == (4, 0) for d in draws])
    small = np.mean([d == (4, 1) for d in draws])
    assert abs(large - 1 / 3) < 0.04 and abs(small - 1 / 3) < 0.04  # not 1 / 11 each
    sampling = AdapterSampling(16, augmentation="none", click_protocol="lesion")
    sample = adapter_training_sample(cases[4], sampling, np.random.default_rng(1), lesion_index=1)
    assert sample["target"].sum() == 27  # centred on the lesion asked for
    with pytest.raises(ValueError, match="needs training cases with lesions"):
        SizeBalancedLesions(cases, [5])
    base = {"model": "sam3d-adapter", "data": "d", "label": "2", "out": "o", "config": "tiny", "train_encoder": True}
    with pytest.raises(ValueError, match="--lesion-sampling size draws lesions; the 3dsam clicks"):
        checked(TrainingConfig(**base, lesion_sampling="size"))
    with pytest.raises(ValueError, match="--lesion-sampling must be one of case, size"):
        checked(TrainingConfig(**base, lesion_sampling="volume"))


def test_adapter_training_with_size_balanced_lesions_runs(phantoms, tmp_path):
    result = train(_config(phantoms, tmp_path / "run", epochs=1, click_protocol="lesion", lesion_sampling="size"))
    assert result.steps_done == len(CASES) and np.isfinite(result.history[-1]["train_loss"])


# --- training that generalises (issue 15): robust augmentation, corrective (negative) clicks ---------
@pytest.fixture(scope="module")
def adapter_cases(phantoms, tmp_path_factory):
    from volsam.datasets import load_dataset
    from volsam.training.cache import CachedCases, VolumeCache
    from volsam.training.preprocessing import ADAPTER_PRESETS, AdapterPreprocessing

    dataset = load_dataset(phantoms)
    cache = VolumeCache(tmp_path_factory.mktemp("cache"), AdapterPreprocessing(3.0, ADAPTER_PRESETS["ct"]), 2)
    cache.prepare(dataset.training, progress=False)
    return CachedCases(cache, dataset.training)


def test_robust_augmentation_varies_contrast_and_noise_and_keeps_crops_consistent(adapter_cases):
    from volsam.training.samples import AdapterSampling, adapter_training_sample

    spreads = {}
    for augmentation in ("none", "robust"):
        sampling = AdapterSampling(32, augmentation, "iterative", intensity_shift=0.3)
        contrasts = []
        for n in range(24):
            sample = adapter_training_sample(adapter_cases[n % len(CASES)], sampling, np.random.default_rng(n))
            target, image = sample["target"] > 0, sample["image"]
            assert image.shape == target.shape == (32, 32, 32) and np.isfinite(image).all()
            assert np.array_equal(sample["positive"], target[tuple(sample["points_kji"].T)])
            if target.any() and (~target).any():
                contrasts.append(np.median(image[target]) - np.median(image[~target]))
        spreads[augmentation] = np.std(np.abs(contrasts)) / np.mean(np.abs(contrasts))
    assert spreads["robust"] > spreads["none"]  # contrast scaling widens the lesions' contrasts


def test_robust_clips_vary_geometry_and_look_and_keep_the_object_under_the_click(phantoms, tmp_path):
    from volsam.datasets import load_dataset
    from volsam.training.cache import CachedCases, VolumeCache
    from volsam.training.preprocessing import Sam2Preprocessing
    from volsam.training.samples import ClipSampling, sam2_clip_sample

    with pytest.raises(ValueError, match="sam2-3dmed augmentation must be one of none, robust"):
        ClipSampling(4, augmentation="zoom3d")
    dataset = load_dataset(phantoms)
    cache = VolumeCache(tmp_path / "cache", Sam2Preprocessing("soft_tissue"), 2)
    cache.prepare(dataset.training, progress=False)
    cases = CachedCases(cache, dataset.training)
    robust, plain = ClipSampling(5, augmentation="robust"), ClipSampling(5)
    object_sizes, noise = {"none": [], "robust": []}, {"none": [], "robust": []}
    for n in range(24):
        case = cases[n % len(cases)]
        for name, sampling in (("none", plain), ("robust", robust)):
            clip = sam2_clip_sample(case, sampling, np.random.default_rng(n))
            images, masks = clip["images"], clip["masks"]
            assert images.shape == masks.shape and images.dtype == np.float32 and set(np.unique(masks)) <= {0, 1}
            assert 0.0 <= images.min() and images.max() <= 1.0
            x, y = clip["click_xy"].astype(int)
            assert masks[0][y, x] == 1  # the click is on the object, after every flip and zoom
            object_sizes[name].append(masks[0].sum())
            noise[name].append(np.std(np.diff(images[0], axis=1)))
        again = sam2_clip_sample(case, robust, np.random.default_rng(n))
        assert np.array_equal(again["images"], clip["images"])  # deterministic per draw
    # The zoom changes the object's size on its slice; the noise and contrast draws its texture.
    assert np.std(np.array(object_sizes["robust"]) / np.array(object_sizes["none"])) > 0.1
    assert not np.allclose(noise["robust"], noise["none"])


def test_reversed_lesion_contrast_mirrors_each_lesion_about_the_tissue_around_it():
    from volsam.training.samples import reverse_lesion_contrast

    rng = np.random.default_rng(0)
    image = 100.0 + rng.normal(0.0, 5.0, (24, 40, 40)).astype(np.float32)
    lesions = np.zeros(image.shape, bool)
    lesions[8:16, 6:14, 6:14] = True  # hypodense by 30
    lesions[10:13, 26:29, 26:29] = True  # hyperdense by 40, all edge
    hypo, hyper = lesions.copy(), lesions.copy()
    hypo[:, :, 20:], hyper[:, :, :20] = False, False
    image[hypo] -= 30.0
    image[hyper] += 40.0
    reversed_ = reverse_lesion_contrast(image, lesions)
    assert reversed_[hypo].mean() - 100.0 == pytest.approx(30.0, abs=1.5)
    assert reversed_[hyper].mean() - 100.0 == pytest.approx(-40.0, abs=1.5)
    assert np.std(reversed_[hypo]) == pytest.approx(np.std(image[hypo]), rel=0.2)  # the texture stays
    untouched = np.ones(image.shape, bool)
    untouched[4:20, 2:18, 2:18] = untouched[6:17, 22:33, 22:33] = False
    assert np.array_equal(reversed_[untouched], image[untouched])
    assert np.array_equal(reverse_lesion_contrast(image, np.zeros(image.shape, bool)), image)


def test_an_object_copy_lies_beside_the_object_on_tissue_on_exactly_the_slices_it_spans():
    from scipy import ndimage

    from volsam.training.samples import paste_object_copy

    rng = np.random.default_rng(0)
    images = (0.5 + rng.normal(0.0, 0.01, (3, 48, 48))).astype(np.float32)
    rows, cols = np.mgrid[:48, :48]
    masks = np.zeros(images.shape, bool)
    masks[:2] = (rows - 14) ** 2 + (cols - 14) ** 2 <= 16  # the object ends before the last slice
    lesions = masks.copy()
    lesions[:, 30:40, 30:40] = True  # another lesion, which the copy must not cover
    images[masks] -= 0.2
    images[lesions & ~masks] += 0.2
    pasted = paste_object_copy(images, masks, lesions, np.random.default_rng(1))
    assert np.array_equal(pasted[2], images[2])  # no object, no copy
    for s in range(2):
        changed = pasted[s] != images[s]
        assert not np.any(changed & lesions[s])  # the object and the other lesion stay as they were
        assert ndimage.label(changed)[1] == 1
        dark = pasted[s] < 0.4  # the copy's core: the object's pixels, moved
        copy_rows, copy_cols = np.nonzero(dark & ~masks[s])
        d_row, d_col = copy_rows.mean() - 14, copy_cols.mean() - 14
        assert np.hypot(d_row, d_col) > 8  # beside the object, not on it
        assert len(copy_rows) == masks[s].sum()
        moved = np.roll(masks[s], (round(d_row), round(d_col)), axis=(0, 1))
        assert np.allclose(pasted[s][moved], images[s][masks[s]])
    # Nowhere to go: tissue only around the object (air beyond), or an object filling the slice.
    in_air = images.copy()
    in_air[:, :, 24:] = in_air[:, 24:] = 0.0
    assert paste_object_copy(in_air, masks, masks, np.random.default_rng(1)) is None
    assert paste_object_copy(images, np.ones(images.shape, bool), masks, np.random.default_rng(1)) is None


def test_object_copies_go_into_clips_and_leave_their_targets_alone(phantoms, tmp_path):
    from volsam.datasets import load_dataset
    from volsam.training.cache import CachedCases, VolumeCache
    from volsam.training.preprocessing import Sam2Preprocessing
    from volsam.training.samples import ClipSampling, sam2_clip_sample

    with pytest.raises(ValueError, match="object copy probability must lie in \\[0, 1\\]"):
        ClipSampling(4, object_copy_probability=1.5)
    dataset = load_dataset(phantoms)
    cache = VolumeCache(tmp_path / "cache", Sam2Preprocessing("soft_tissue"), 2)
    cache.prepare(dataset.training, progress=False)
    cases = CachedCases(cache, dataset.training)
    copied = 0
    for n in range(len(cases)):
        for seed in range(3):
            plain = sam2_clip_sample(cases[n], ClipSampling(4), np.random.default_rng(seed))
            off = sam2_clip_sample(cases[n], ClipSampling(4, object_copy_probability=0.0), np.random.default_rng(seed))
            assert np.array_equal(plain["images"], off["images"])  # off: the draws runs always made
            clip = sam2_clip_sample(cases[n], ClipSampling(4, object_copy_probability=1.0), np.random.default_rng(seed))
            assert np.array_equal(clip["masks"], plain["masks"]) and np.array_equal(clip["slices"], plain["slices"])
            changed = clip["images"] != plain["images"]
            assert not np.any(changed & (clip["masks"] > 0))
            copied += bool(changed.any())
    assert copied >= len(cases)  # the phantoms' lesions leave room for a copy in most clips


def test_reversed_contrast_turns_the_phantoms_bright_lesions_dark_in_crops_and_clips(adapter_cases, phantoms,
                                                                                     tmp_path):
    from volsam.datasets import load_dataset
    from volsam.training.cache import CachedCases, VolumeCache
    from volsam.training.preprocessing import Sam2Preprocessing
    from volsam.training.samples import AdapterSampling, ClipSampling, adapter_training_sample, sam2_clip_sample

    with pytest.raises(ValueError, match="reverse contrast probability must lie in \\[0, 1\\]"):
        ClipSampling(4, reverse_contrast_probability=-0.1)
    with pytest.raises(ValueError, match="reverse contrast probability must lie in \\[0, 1\\]"):
        AdapterSampling(32, reverse_contrast_probability=2.0)

    def contrast(image, target):
        near = np.zeros_like(target)
        near[tuple(slice(max(0, a.min() - 4), a.max() + 5) for a in np.nonzero(target))] = True
        return np.median(image[target]) - np.median(image[near & ~target])

    for share, dark in ((0.0, False), (1.0, True)):
        sampling = AdapterSampling(32, "none", "lesion", reverse_contrast_probability=share)
        sample = adapter_training_sample(adapter_cases[0], sampling, np.random.default_rng(3))
        assert (contrast(sample["image"], sample["target"] > 0) < 0) == dark  # the phantoms' lesions are bright
    dataset = load_dataset(phantoms)
    cache = VolumeCache(tmp_path / "cache", Sam2Preprocessing("soft_tissue"), 2)
    cache.prepare(dataset.training, progress=False)
    case = CachedCases(cache, dataset.training)[1]
    for share, dark in ((0.0, False), (1.0, True)):
        clip = sam2_clip_sample(case, ClipSampling(4, reverse_contrast_probability=share), np.random.default_rng(3))
        assert (contrast(clip["images"], clip["masks"] > 0) < 0) == dark
        assert 0.0 <= clip["images"].min() and clip["images"].max() <= 1.0
    plain = sam2_clip_sample(case, ClipSampling(4), np.random.default_rng(5))
    again = sam2_clip_sample(case, ClipSampling(4, reverse_contrast_probability=0.0), np.random.default_rng(5))
    assert np.array_equal(plain["images"], again["images"])  # off: the draws runs always made


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
    rng = np.random.default_rng(0)
    more_points, more_labels = AdapterTask._with_corrective_click(logits_for(leaking), crop, target, points, labels, rng)
    assert more_labels.tolist() == [1, 0]
    d, w, h = more_points[1].long().tolist()  # the model's [d, w, h] order
    assert leaking[0, d, h, w] == 1 and target[0, d, h, w] == 0  # inside the leak
    same_points, same_labels = AdapterTask._with_corrective_click(logits_for(target), crop, target, points, labels, rng)
    assert torch.equal(same_points, points) and torch.equal(same_labels, labels)


def test_training_corrective_click_can_prefer_a_smaller_false_positive_to_a_larger_miss():
    from volsam.clicks import MIN_CORRECTIVE_REGION, next_iterative_click, training_corrective_click

    truth = np.zeros((16, 16, 16), bool)
    truth[2:10, 2:10, 2:10] = True
    prediction = truth.copy()
    prediction[2:10, 2:10, 6:10] = False  # a miss of 256 voxels
    prediction[12:15, 12:15, 12:15] = True  # a false positive of 27
    assert next_iterative_click(prediction, truth).positive  # the protocol clicks the larger error
    assert training_corrective_click(prediction, truth, prefer_negative=False).positive
    negative = training_corrective_click(prediction, truth, prefer_negative=True)
    assert not negative.positive and prediction[negative.kji] and not truth[negative.kji]
    speck = truth.copy()
    speck[2:10, 2:10, 6:10] = False
    speck[13, 13, 13:13 + MIN_CORRECTIVE_REGION - 1] = True  # too small to click on
    assert training_corrective_click(speck, truth, prefer_negative=True).positive


def _cube_case():
    from volsam.training.cache import CachedCase

    label = np.zeros((12, 20, 20), np.uint8)
    label[2:10, 5:15, 5:15] = 1
    foreground = np.flatnonzero(label)
    return CachedCase("cube", np.zeros(label.shape, np.float32), label, foreground, (1.0,) * 3, (1.0,) * 3,
                      np.eye(4), foreground.size, (0, 1), ((0, 0, 0), label.shape))


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

    # A correction on a tracked slice: the click on the model's answer there, read with the
    # memory of the prompted slice, and that answer as the previous mask's logits.
    from volsam.training.sam2_task import _tracked_correction

    with torch.no_grad():
        output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        current, outputs, _, _ = sam2._track_step(0, True, feats, pos, sizes, prompt, None, output_dict, 4, False, None)
        current.update(pred_masks=outputs[3], pred_masks_high_res=outputs[4], obj_ptr=outputs[5])
        sam2._encode_memory_in_output(feats, sizes, prompt, True, outputs[4], outputs[6], current)
        output_dict["cond_frame_outputs"][0] = current
        points, previous = _tracked_correction(sam2, 1, feats, pos, sizes, output_dict, target, 4, True)
    x, y = points["point_coords"][0, 0].long().tolist()
    assert int(points["point_labels"][0, 0]) == int(target[y, x])
    assert previous.shape == outputs[3].shape and set(previous.unique().tolist()) <= {-10.0, 10.0}
    from volsam.training.samples import ClipSampling, sam2_clip_sample

    always = ClipSampling(4, mask_prompt_probability=0.0, tracked_correction_probability=1.0)
    slices = {sam2_clip_sample(_cube_case(), always, np.random.default_rng(n))["correction_slice"] for n in range(30)}
    assert slices == {1, 2, 3}  # any tracked slice, never the prompted one
    masked = ClipSampling(4, mask_prompt_probability=1.0, tracked_correction_probability=1.0)
    assert sam2_clip_sample(_cube_case(), masked, np.random.default_rng(0))["correction_slice"] is None

    result = train(_config(phantoms, tmp_path / "run", model="sam2-3dmed", config="tiny-test", epochs=1, clip_length=3,
                           click_protocol="iterative", spacing_mm=1.0, augmentation="robust", lesion_sampling="size"))
    assert result.steps_done == len(CASES) and np.isfinite(result.history[-1]["train_loss"])


def test_the_memory_scale_loss_pulls_overgrown_memories_back_into_the_attentions_range():
    from volsam.models.sam2_3dmed.build import build_model
    from volsam.training.config import sam2_configs
    from volsam.training.losses import MEMORY_RMS_LIMIT, memory_scale_loss
    from volsam.training.sam2_task import Sam2ClipForward

    assert float(memory_scale_loss(torch.full((2, 8), MEMORY_RMS_LIMIT / 2))) == 0.0
    assert float(memory_scale_loss(torch.full((2, 8), MEMORY_RMS_LIMIT * 10))) == pytest.approx(np.log(10) ** 2)

    # A network whose memories grew as the demo model's did (RMS about 1000).
    torch.manual_seed(0)
    model = build_model(sam2_configs()["tiny-test"])
    with torch.no_grad():
        model.sam2.memory_encoder.out_proj.weight.mul_(1000.0)
        model.sam2.memory_encoder.out_proj.bias.mul_(1000.0)
    forward = Sam2ClipForward(model, train_encoder=False).train()
    frames = torch.randn(3, 3, 64, 64)
    masks = torch.zeros(3, 1, 64, 64)
    masks[:2, :, 20:40, 20:40] = 1  # the object ends before the last slice
    click = torch.tensor([30.0, 30.0])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    scale = []
    for _ in range(25):
        total, parts, _ = forward(frames, masks, click, False, False)
        scale.append(parts["memory"])
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert scale[0] > 10.0  # far above the limit: log(RMS / limit) > 3
    assert scale[-1] < 0.6 * scale[0]  # Adam moves each weight by about lr a step: the pull is steady
