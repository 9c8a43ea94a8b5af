"""Datasets in the nnU-Net v2 / MSD layout: parsing, splits, label values and input checks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from volsam.datasets import (
    automatic_split,
    check_cases,
    check_same_geometry,
    load_dataset,
)
from volsam.geometry import Volume
from volsam.io import write_image, write_mask


def _write_case(root, case_id, shape=(8, 10, 12), spacing=(1.0, 1.0, 2.0), label_spacing=None, value=2,
                image_name=None):
    rng = np.random.default_rng(abs(hash(case_id)) % 2 ** 32)
    image = Volume.from_spacing(rng.normal(40, 10, shape).astype(np.float32), spacing)
    labels = np.zeros(shape, np.uint8)
    labels[2:5, 3:6, 4:8] = value
    label_volume = Volume.from_spacing(labels, label_spacing or spacing)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    write_image(image, root / "imagesTr" / (image_name or f"{case_id}_0000.nii.gz"))
    write_mask(labels, label_volume, root / "labelsTr" / f"{case_id}.nii.gz")


def _nnunet_dataset(root, cases=5, **kwargs):
    for index in range(cases):
        _write_case(root, f"case_{index:03d}", **kwargs)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "tumor": 2},
        "numTraining": cases, "file_ending": ".nii.gz"}))
    return root


def test_nnunet_layout_labels_and_modality(tmp_path):
    dataset = load_dataset(_nnunet_dataset(tmp_path / "ds"))
    assert [c.case_id for c in dataset.training] == [f"case_{i:03d}" for i in range(5)]
    assert dataset.is_ct and dataset.labels == {"background": 0, "organ": 1, "tumor": 2}
    assert dataset.label_value("tumor") == 2 and dataset.label_value("2") == 2 and dataset.label_value(2) == 2
    assert dataset.label_name(2) == "tumor"
    with pytest.raises(ValueError, match="label 'lesion' is not in"):
        dataset.label_value("lesion")
    with pytest.raises(ValueError, match="label value 7 is not declared"):
        dataset.label_value(7)
    with pytest.raises(ValueError, match="background"):
        dataset.label_value(0)


def test_msd_layout_with_training_list(tmp_path):
    root = tmp_path / "Task10_Colon"
    for index in range(3):
        _write_case(root, f"colon_{index:03d}", value=1, image_name=f"colon_{index:03d}.nii.gz")
    (root / "imagesTs").mkdir()  # unlabelled test images: never used
    (root / "dataset.json").write_text(json.dumps({
        "name": "Colon", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "colon cancer primaries"},
        "training": [{"image": f"./imagesTr/colon_{i:03d}.nii.gz", "label": f"./labelsTr/colon_{i:03d}.nii.gz"}
                     for i in range(3)],
        "test": ["./imagesTs/colon_100.nii.gz"]}))
    dataset = load_dataset(root)
    assert dataset.name == "Colon" and len(dataset.training) == 3 and dataset.labelled_test == ()
    assert dataset.label_value("colon cancer primaries") == 1
    assert dataset.training[0].image.name == "colon_000.nii.gz"


def test_splits_file_and_automatic_split(tmp_path):
    root = _nnunet_dataset(tmp_path / "ds", cases=10)
    dataset = load_dataset(root)
    train, val, test = (dataset.cases(s) for s in ("train", "val", "test"))
    ids = [c.case_id for c in (*train, *val, *test)]
    assert len(ids) == 10 == len(set(ids)) and len(test) == 2 and len(val) == 1
    assert automatic_split(ids) == automatic_split(list(reversed(ids)))  # order-independent, seeded
    (root / "splits_final.json").write_text(json.dumps([
        {"train": ["case_000", "case_001"], "val": ["case_002"]},
        {"train": ["case_003"], "val": ["case_004"], "test": ["case_005"]}]))
    dataset = load_dataset(root)
    assert [c.case_id for c in dataset.cases("train")] == ["case_000", "case_001"]
    assert [c.case_id for c in dataset.cases("test", fold=1)] == ["case_005"]
    with pytest.raises(ValueError, match="no 'test' list"):
        dataset.cases("test", fold=0)
    with pytest.raises(ValueError, match="fold 5 does not exist"):
        dataset.cases("train", fold=5)
    assert len(dataset.cases("all")) == 10


def test_missing_dataset_json_is_a_clear_error(tmp_path):
    root = _nnunet_dataset(tmp_path / "ds", cases=1)
    (root / "dataset.json").unlink()
    with pytest.raises(ValueError, match="has no dataset.json; expected a dataset in the nnU-Net v2"):
        load_dataset(root)
    with pytest.raises(ValueError, match="no such folder"):
        load_dataset(tmp_path / "missing")


def test_label_without_image_and_geometry_mismatch(tmp_path):
    root = _nnunet_dataset(tmp_path / "ds", cases=2)
    (root / "imagesTr" / "case_001_0000.nii.gz").unlink()
    with pytest.raises(ValueError, match="has no image imagesTr/case_001_0000.nii.gz"):
        load_dataset(root)
    shutil.rmtree(root)
    root = _nnunet_dataset(tmp_path / "ds2", cases=2, label_spacing=(1.0, 1.0, 3.0))
    dataset = load_dataset(root)
    with pytest.raises(ValueError, match="case case_000: image and label have different geometry"):
        check_same_geometry(dataset.training[0])


def test_empty_training_set(tmp_path):
    root = tmp_path / "ds"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {"background": 0,
                                                                                             "tumor": 1}}))
    dataset = load_dataset(root)
    assert not dataset.is_ct
    with pytest.raises(ValueError, match="the training set is empty"):
        check_cases(dataset.cases("train"))
