"""volsam.metrics against the references: DeepMind's surface-distance for NSD and HD95,
SimpleITK's LabelOverlapMeasuresImageFilter for Dice and IoU."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from volsam import metrics

surface_distance = pytest.importorskip("surface_distance")
lookup_tables = pytest.importorskip("surface_distance.lookup_tables")

# surface-distance 0.1 imports from scipy namespaces that SciPy deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:Please import:DeprecationWarning")

SPACINGS_IJK = [(1.0, 1.0, 1.0), (0.8, 0.8, 2.5), (0.7, 1.3, 3.1)]


@pytest.fixture(autouse=True)
def numpy_aliases_for_surface_distance(monkeypatch):
    """surface-distance 0.1 uses np.Inf and np.NaN, which numpy 2 removed."""
    monkeypatch.setattr(np, "Inf", np.inf, raising=False)
    monkeypatch.setattr(np, "NaN", np.nan, raising=False)


def blob(shape_kji, seed, smoothing=2.0, threshold=0.55):
    """A random smooth, possibly multi-part, mask."""
    noise = np.random.default_rng(seed).random(shape_kji)
    return ndimage.gaussian_filter(noise, smoothing) > np.quantile(ndimage.gaussian_filter(noise, smoothing), threshold)


def reference_metrics(pred, ref, spacing_ijk, tolerance_mm):
    distances = surface_distance.compute_surface_distances(ref, pred, tuple(spacing_ijk[::-1]))
    return (surface_distance.compute_surface_dice_at_tolerance(distances, tolerance_mm),
            surface_distance.compute_robust_hausdorff(distances, 95))


def sitk_overlap(pred, ref, spacing_ijk):
    images = []
    for mask in (ref, pred):
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        image.SetSpacing(spacing_ijk)
        images.append(image)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(*images)
    return overlap.GetDiceCoefficient(), overlap.GetJaccardCoefficient()


@pytest.mark.parametrize("spacing_ijk", SPACINGS_IJK)
def test_surfel_areas_match_the_reference_table(spacing_ijk):
    ours = metrics.neighbour_code_to_surface_area(spacing_ijk)
    theirs = lookup_tables.create_table_neighbour_code_to_surface_area(spacing_ijk[::-1])
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("spacing_ijk", SPACINGS_IJK)
@pytest.mark.parametrize("seed", range(3))
def test_metrics_match_references_on_random_shapes(spacing_ijk, seed):
    ref = blob((20, 26, 23), seed)
    pred = blob((20, 26, 23), seed + 100)
    for tolerance_mm in (0.0, 1.0, 2.5, 5.0):
        result = metrics.compute_metrics(pred, ref, spacing_ijk, tolerance_mm)
        nsd, hd95 = reference_metrics(pred, ref, spacing_ijk, tolerance_mm)
        assert result["nsd"] == pytest.approx(nsd, abs=1e-6)
        assert result["hd95"] == pytest.approx(hd95, abs=1e-6)
    dice, iou = sitk_overlap(pred, ref, spacing_ijk)
    assert result["dice"] == pytest.approx(dice, abs=1e-6)
    assert result["iou"] == pytest.approx(iou, abs=1e-6)


def test_surface_distances_match_the_reference_arrays():
    ref, pred = blob((15, 18, 21), 7), blob((15, 18, 21), 8)
    spacing_ijk = (0.7, 1.3, 3.1)
    ours = metrics.compute_surface_distances(pred, ref, spacing_ijk)
    theirs = surface_distance.compute_surface_distances(ref, pred, spacing_ijk[::-1])
    np.testing.assert_allclose(ours.distances_ref_to_pred, theirs["distances_gt_to_pred"], atol=1e-9)
    np.testing.assert_allclose(ours.distances_pred_to_ref, theirs["distances_pred_to_gt"], atol=1e-9)
    np.testing.assert_allclose(ours.surfel_areas_ref, theirs["surfel_areas_gt"], atol=1e-9)
    np.testing.assert_allclose(ours.surfel_areas_pred, theirs["surfel_areas_pred"], atol=1e-9)


masks = st.tuples(st.integers(4, 12), st.integers(4, 12), st.integers(4, 12)).flatmap(
    lambda shape: st.tuples(
        st.integers(0, 2**32 - 1).map(lambda seed: np.random.default_rng(seed).random(shape) < 0.4),
        st.integers(0, 2**32 - 1).map(lambda seed: np.random.default_rng(seed).random(shape) < 0.4)))
spacings = st.tuples(*[st.floats(0.3, 4.0, allow_nan=False) for _ in range(3)])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pair=masks, spacing_ijk=spacings, tolerance_mm=st.floats(0.0, 6.0))
def test_random_masks_touching_the_border_match_references(pair, spacing_ijk, tolerance_mm):
    pred, ref = pair
    if not pred.any() or not ref.any():
        return  # empty masks follow our own conventions, tested below
    result = metrics.compute_metrics(pred, ref, spacing_ijk, tolerance_mm)
    nsd, hd95 = reference_metrics(pred, ref, spacing_ijk, tolerance_mm)
    dice, iou = sitk_overlap(pred, ref, spacing_ijk)
    assert result == pytest.approx({"dice": dice, "iou": iou, "nsd": nsd, "hd95": hd95}, abs=1e-6)


def test_spacing_is_in_ijk_order():
    # Two slabs 2 voxels apart along k (array axis 0): distances scale with spacing k only.
    ref = np.zeros((12, 6, 6), bool)
    ref[3:5] = True
    pred = np.roll(ref, 2, axis=0)
    assert metrics.hausdorff_distance_95(pred, ref, (1.0, 1.0, 3.0)) == pytest.approx(6.0)
    assert metrics.hausdorff_distance_95(pred, ref, (3.0, 3.0, 1.0)) == pytest.approx(2.0)


def test_identical_masks_are_perfect():
    mask = blob((10, 11, 12), 3)
    assert metrics.compute_metrics(mask, mask.astype(np.uint8) * 7, (0.8, 0.8, 2.5)) == {
        "dice": 1.0, "iou": 1.0, "nsd": 1.0, "hd95": 0.0}


def test_empty_mask_conventions():
    empty = np.zeros((6, 7, 8), bool)
    full = empty.copy()
    full[2:4, 2:5, 3:6] = True
    spacing = (1.0, 1.0, 2.0)
    assert metrics.compute_metrics(empty, empty, spacing) == {"dice": 1.0, "iou": 1.0, "nsd": 1.0, "hd95": 0.0}
    for pred, ref in ((empty, full), (full, empty)):
        assert metrics.compute_metrics(pred, ref, spacing) == {
            "dice": 0.0, "iou": 0.0, "nsd": 0.0, "hd95": float("inf")}
    assert metrics.normalized_surface_dice(empty, empty, spacing) == 1.0
    assert metrics.hausdorff_distance_95(full, empty, spacing) == float("inf")


@pytest.mark.parametrize("call, message", [
    (lambda: metrics.compute_metrics(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)), (1, 1, 1)), "same shape"),
    (lambda: metrics.compute_metrics(np.zeros((3, 3)), np.zeros((3, 3)), (1, 1, 1)), "3-D"),
    (lambda: metrics.compute_metrics(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), (1, 0, 1)), "spacing_ijk"),
    (lambda: metrics.compute_metrics(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), (1, 1)), "spacing_ijk"),
    (lambda: metrics.compute_metrics(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), (1, 1, 1), -1.0), "tolerance_mm"),
])
def test_bad_inputs_raise_one_line_value_errors(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)
