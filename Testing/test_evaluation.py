"""Evaluation protocols, per-case CSV and the Markdown summary, with stand-in predictors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from volsam.clicks import component_at
from volsam.evaluation import (
    EvaluationConfig,
    PredictorOptions,
    evaluate_with,
    parse_click_counts,
)
from volsam.evaluation.protocols import evaluate_case, size_group
from volsam.geometry import Volume
from volsam.io import write_image, write_mask


class OraclePredictor:
    """Returns every true lesion touched by a positive click, minus lesions a negative click hits."""

    def __init__(self, truth):
        self.truth = truth
        self.opened = 0

    def open(self, volume):
        self.opened += 1
        self.clicks = []

    def add_clicks(self, clicks):
        self.clicks += clicks
        mask = np.zeros(self.truth.shape, bool)
        for click in self.clicks:
            component = component_at(self.truth, click.kji)
            mask = mask | component if click.positive else mask & ~component
        return mask


class EmptyPredictor:
    def open(self, volume):
        pass

    def add_clicks(self, clicks):
        return np.zeros(self.shape, bool)


def _volume_and_truth():
    truth = np.zeros((24, 40, 40), bool)
    truth[4:10, 5:11, 5:11] = True  # 6 voxels of 1.5 mm: about 11 mm across
    truth[12:22, 15:35, 15:35] = True  # the larger lesion
    volume = Volume.from_spacing(np.where(truth, 80.0, 40.0).astype(np.float32), (1.5, 1.5, 2.0))
    return volume, truth


def test_click_counts_parse():
    assert parse_click_counts("3") == (1, 2, 3)
    assert parse_click_counts("2..4") == (2, 3, 4)
    assert parse_click_counts("5,1,3") == (1, 3, 5)
    with pytest.raises(ValueError, match="--clicks must be"):
        parse_click_counts("0")


def test_center_protocol_scores_each_lesion_alone():
    volume, truth = _volume_and_truth()
    rows = list(evaluate_case(OraclePredictor(truth), "case", volume, truth, "center", (1, 2)))
    assert [(r.lesion, r.clicks) for r in rows] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(r.dice == 1.0 and r.hd95 == 0.0 and r.nsd == 1.0 for r in rows)
    assert rows[0].size_group == size_group(rows[0].diameter_mm) == "10-20 mm"
    assert rows[2].diameter_mm > 30 and rows[0].click_positive


def test_random_and_iterative_protocols():
    volume, truth = _volume_and_truth()
    predictor = OraclePredictor(truth)
    rows = list(evaluate_case(predictor, "case", volume, truth, "random", (1, 3), seed=4, case_number=2))
    assert [r.clicks for r in rows] == [1, 3] and predictor.opened == 2  # a fresh session per click count
    again = list(evaluate_case(OraclePredictor(truth), "case", volume, truth, "random", (1, 3), seed=4, case_number=2))
    assert [r.click_kji for r in rows] == [r.click_kji for r in again]
    iterative = list(evaluate_case(OraclePredictor(truth), "case", volume, truth, "iterative", (1, 2, 3)))
    dices = [r.dice for r in iterative]
    assert dices[0] < 1.0 and dices[1] == dices[2] == 1.0  # the second click finds the smaller lesion


def test_reports_and_dataset_run(tmp_path):
    volume, truth = _volume_and_truth()
    root = tmp_path / "data"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for name in ("a", "b"):
        write_image(volume, root / "imagesTr" / f"{name}_0000.nii.gz")
        write_mask(truth.astype(np.uint8) * 2, volume, root / "labelsTr" / f"{name}.nii.gz")
    write_image(volume, root / "imagesTr" / "c_0000.nii.gz")  # a case without the target
    write_mask(np.zeros(truth.shape, np.uint8), volume, root / "labelsTr" / "c.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"},
                                                   "labels": {"background": 0, "tumor": 2}}))
    options = PredictorOptions(model="sam3d-adapter", weights=None)
    config = EvaluationConfig(predictor=options, data=root, out=tmp_path / "out", label="tumor", split="all",
                              click_counts=(1,), protocol="center", progress=False)
    result = evaluate_with(OraclePredictor(truth), config)
    assert result.skipped == ["c"] and len(result.rows) == 4
    with open(tmp_path / "out" / "cases.csv") as handle:
        table = list(csv.DictReader(handle))
    assert table[0]["case"] == "a" and float(table[0]["dice"]) == 1.0 and table[0]["size_group"] == "10-20 mm"
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| 1 | 4 | 100.00 ± 0.00 |" in summary and "## By lesion size" in summary
    assert "| 1 | >= 30 mm | 2 |" in summary and "Skipped (no target voxels): c." in summary
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["by_clicks"]["1"]["dice"]["mean"] == 1.0

    empty = EmptyPredictor()
    empty.shape = truth.shape
    config = EvaluationConfig(predictor=options, data=root, out=tmp_path / "empty", label="2", split="all",
                              protocol="random", progress=False)
    result = evaluate_with(empty, config)
    assert all(np.isinf(r.hd95) and r.dice == 0.0 for r in result.rows)
    text = (tmp_path / "empty" / "summary.md").read_text()
    assert "n/a (2 inf)" in text and "left out of its mean" in text

    no_label = EvaluationConfig(predictor=options, data=root, out=tmp_path / "x", split="all", progress=False)
    with pytest.raises(ValueError, match="give --label"):
        evaluate_with(empty, no_label)
