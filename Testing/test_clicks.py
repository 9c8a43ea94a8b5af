"""Click simulation: the 3DSAM-adapter protocol, lesion-wise clicks, centres and iterative clicks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from volsam.clicks import (
    adapter_training_clicks,
    adapter_validation_clicks,
    component_at,
    lesion_training_clicks,
    lesions_of,
    next_iterative_click,
    random_foreground_points,
    region_center,
)


def _two_lesions():
    mask = np.zeros((20, 30, 40), bool)
    mask[2:8, 3:9, 4:10] = True  # 6^3 = 216 voxels
    mask[10:18, 15:25, 20:34] = True  # 8 x 10 x 14 = 1120 voxels
    return mask


def test_adapter_training_clicks_follow_the_spec():
    mask = _two_lesions()
    clicks = adapter_training_clicks(mask, np.random.default_rng(0))
    assert len(clicks) == 30
    assert mask[tuple(clicks.points_kji[:10].T)].all()  # 10 foreground voxels first
    assert np.array_equal(clicks.positive, mask[tuple(clicks.points_kji.T)])  # labelled by the voxel hit
    empty = adapter_training_clicks(np.zeros((8, 8, 8)), np.random.default_rng(0))
    assert len(empty) == 20 and not empty.positive.any()
    validation = adapter_validation_clicks(mask, np.random.default_rng(1))
    assert len(validation) == 10 and validation.positive.all()


def test_random_foreground_points_are_seeded():
    mask = _two_lesions()
    first = random_foreground_points(mask, 5, np.random.default_rng([3, 1]))
    assert np.array_equal(first, random_foreground_points(mask, 5, np.random.default_rng([3, 1])))
    assert mask[tuple(first.T)].all()
    with pytest.raises(ValueError, match="mask is empty"):
        random_foreground_points(np.zeros((4, 4, 4)), 1, np.random.default_rng(0))


def test_region_center_is_the_deepest_voxel():
    box = np.zeros((9, 11, 13), bool)
    box[1:8, 2:9, 3:12] = True  # odd extents: one middle voxel on each axis
    assert region_center(box) == (4, 5, 7)
    # The image border counts as boundary: a region filling the image has its centre in the middle.
    assert region_center(np.ones((5, 5, 5))) == (2, 2, 2)
    # Anisotropic spacing: distances in mm decide.
    slab = np.zeros((5, 21, 21), bool)
    slab[:, 5:16, 5:16] = True
    assert region_center(slab, spacing_ijk=(1.0, 1.0, 0.2))[1:] == (10, 10)
    assert region_center(np.pad(np.ones((3, 3), bool), 2)) == (3, 3)  # 2D masks too


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2 ** 31 - 1))
def test_region_center_lies_inside_at_maximal_depth(seed):
    rng = np.random.default_rng(seed)
    mask = ndimage.binary_opening(rng.random((12, 12, 12)) > 0.4)
    if not mask.any():
        mask[5, 5, 5] = True
    center = region_center(mask)
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1, 1:-1]
    assert mask[center] and distance[center] == distance.max()


def test_iterative_clicks_go_to_the_largest_error():
    truth = _two_lesions()
    first = next_iterative_click(np.zeros_like(truth), truth)
    assert first.positive and first.kji == region_center(component_at(truth, (12, 20, 25)))
    prediction = truth.copy()
    prediction[0:20, 0:2, 0:40] = True  # a false positive larger than any miss
    second = next_iterative_click(prediction, truth)
    assert not second.positive and prediction[second.kji] and not truth[second.kji]
    assert next_iterative_click(truth, truth) is None
    with pytest.raises(ValueError, match="differ in shape"):
        next_iterative_click(truth[1:], truth)


def test_lesions_and_lesion_wise_clicks():
    mask = _two_lesions()
    labels, lesions = lesions_of(mask, spacing_ijk=(1.0, 1.0, 1.0))
    assert [lesion.voxels for lesion in lesions] == [216, 1120]
    assert lesions[0].diameter_mm == pytest.approx((6 * 216 / np.pi) ** (1 / 3))
    assert all(labels[lesion.center_kji] == lesion.number for lesion in lesions)
    for seed in range(5):
        clicks, target = lesion_training_clicks(mask, np.random.default_rng(seed))
        assert target.sum() in (216, 1120)  # exactly one lesion is the target
        assert np.array_equal(clicks.positive, target[tuple(clicks.points_kji.T)])
        assert clicks.positive[0]
    clicks, target = lesion_training_clicks(np.zeros((6, 6, 6)), np.random.default_rng(0))
    assert not target.any() and not clicks.positive.any() and len(clicks) >= 1
