"""Region growing as a baseline, and the side-by-side tables of ``volsam evaluate --baseline``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from volsam.clicks import SimulatedClick, component_at
from volsam.evaluation import EvaluationConfig, PredictorOptions, evaluate_with
from volsam.evaluation.baselines import RegionGrowingPredictor, load_baseline
from volsam.geometry import Volume
from volsam.metrics import dice
from volsam.phantoms import TUMOR_LABEL, VARIATION_FULL, PhantomConfig, write_phantom_dataset


def two_touching_blobs():
    """A bright ball and, touching it, a bright box of the same intensity, in noise."""
    rng = np.random.default_rng(0)
    k, j, i = np.mgrid[:32, :48, :48]
    ball = (k - 16) ** 2 + (j - 20) ** 2 + (i - 16) ** 2 <= 64
    box = (k >= 12) & (k < 20) & (j >= 16) & (j < 24) & (i >= 24) & (i < 40)
    image = np.where(ball | box, 100.0, 0.0) + rng.normal(0, 15, ball.shape)
    return Volume.from_spacing(image.astype(np.float32), (1.0, 1.0, 1.0)), ball, box


def test_region_growing_grows_the_clicked_region_and_a_negative_click_takes_a_leak_out():
    volume, ball, box = two_touching_blobs()
    predictor = RegionGrowingPredictor()
    predictor.open(volume)
    grown = predictor.add_clicks([SimulatedClick((16, 20, 16), True)])
    far_box = box & ~ndimage.binary_dilation(ball, iterations=3)
    assert grown[ball].sum() > 0.3 * ball.sum() and grown[far_box].any()  # the box touches the ball: it leaks
    corrected = predictor.add_clicks([SimulatedClick((16, 20, 34), False)])  # inside the leak
    assert not corrected[far_box].any()  # the leak is gone
    np.testing.assert_array_equal(corrected[ball], grown[ball])  # the lesion stays
    predictor.open(volume)  # a fresh session forgets the clicks
    assert not predictor.add_clicks([]).any()
    with pytest.raises(ValueError, match="--baseline must be one of region-growing"):
        load_baseline("watershed")


class ScaledOracle:
    """The clicked lesion; for lesions under 12 mm, the lesion dilated by 2 voxels (oversized)."""

    def __init__(self, truth_by_shape):
        self.truth_by_shape = truth_by_shape

    def open(self, volume):
        self.truth = self.truth_by_shape[volume.shape_kji]
        self.spacing = volume.spacing

    def add_clicks(self, clicks):
        lesion = component_at(self.truth, clicks[0].kji)
        diameter = (6 * lesion.sum() * np.prod(self.spacing) / np.pi) ** (1 / 3)
        return ndimage.binary_dilation(lesion, iterations=2) if diameter < 12 else lesion


def test_evaluate_reports_the_baseline_side_by_side_per_size_and_kind(tmp_path):
    from volsam.io import read_image

    write_phantom_dataset(tmp_path / "data", cases=2, seed=15, config=PhantomConfig(variation=VARIATION_FULL))
    truths = {}
    for index in range(2):
        label = read_image(tmp_path / "data" / "labelsTr" / f"phantom_{index:03d}.nii.gz")
        truths[label.shape_kji] = np.asarray(label.array) == TUMOR_LABEL
    config = EvaluationConfig(predictor=PredictorOptions(model="sam3d-adapter"), data=tmp_path / "data",
                              out=tmp_path / "out", label="tumor", split="all", protocol="center",
                              click_counts=(1, 2), progress=False, baselines=("region-growing",))
    result = evaluate_with(ScaledOracle(truths), config)
    rows, baseline = result.rows, result.baseline_rows["region-growing"]
    assert len(baseline) == len(rows) and [r.lesion for r in baseline] == [r.lesion for r in rows]
    assert [r.click_kji for r in baseline if r.clicks == 1] == [r.click_kji for r in rows if r.clicks == 1]
    table = result.comparison
    lesions = len(rows) // 2
    assert table["by_clicks"][1]["sam3d-adapter"]["n"] == lesions
    small = sum(1 for r in rows if r.clicks == 1 and r.diameter_mm < 12)
    assert table["oversized"][1]["sam3d-adapter"] == small  # dilated small lesions are over twice their size
    kinds = table["by_kind"][1]
    assert sum(v["sam3d-adapter"]["n"] for k, v in kinds.items() if k.startswith("rim: ")) == lesions
    assert sum(v["sam3d-adapter"]["n"] for k, v in kinds.items() if k.startswith("density: ")) == lesions
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "## Side by side (mean Dice)" in summary and "| sam3d-adapter | region-growing |" in summary
    assert "By lesion kind, 1 click(s):" in summary and "rim: " in summary
    assert (tmp_path / "out" / "cases_region-growing.csv").is_file()
    saved = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert saved["methods"] == ["sam3d-adapter", "region-growing"]
