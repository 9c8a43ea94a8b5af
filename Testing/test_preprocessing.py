"""Resampling, intensity handling and crops."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import make_volume
from volsam.geometry import Box
from volsam.preprocessing import (CT_WINDOWS, apply_window, clip_percentiles, crop, crop_around_point,
                                  crop_box_around, paste_crop, resample_like, resample_to_spacing, zscore)


def test_resampling_keeps_extent_and_maps_back():
    volume = make_volume((10, 12, 14), (0.8, 1.2, 2.5), (15, 5, -20), (1, -1, 1))
    labels = volume.with_array((volume.array > 0.5).astype(np.uint8))
    iso = resample_to_spacing(labels, (1.0, 1.0, 1.0), "nearest")
    assert iso.shape_ijk == (11, 14, 25)  # round(14*0.8), round(12*1.2), round(10*2.5)
    assert np.allclose(iso.spacing, 1.0)
    assert np.allclose(iso.direction_ras, volume.direction_ras)
    for corners_a, corners_b in [(volume.bounds_ras(), iso.bounds_ras())]:
        assert np.allclose(corners_a[0], corners_b[0], atol=0.5)
        assert np.allclose(corners_a[1], corners_b[1], atol=0.5)
    back = resample_like(iso, labels, "nearest")
    assert back.same_geometry(labels, 1e-9)
    # Nearest there and back again: most voxels survive (the 2.5 mm axis is subsampled to 1 mm).
    assert np.mean(back.array == labels.array) > 0.9


def test_exact_integer_resampling_round_trips_labels():
    volume = make_volume((4, 6, 8), (2.0, 2.0, 2.0), (30, 0, 0), (1, 1, -1))
    labels = volume.with_array((volume.array > 0).astype(np.uint8))
    fine = resample_to_spacing(labels, (1.0, 1.0, 1.0), "nearest")
    assert fine.shape_ijk == (16, 12, 8)
    back = resample_like(fine, labels, "nearest")
    assert np.array_equal(back.array, labels.array)


def test_linear_resampling_of_probabilities_stays_in_range():
    volume = make_volume((6, 6, 6), (1.5, 1.5, 3.0))
    probability = volume.with_array(np.clip(volume.array, 0, 1).astype(np.float32))
    iso = resample_to_spacing(probability, 1.0, "linear")
    back = resample_like(iso, probability, "linear")
    assert back.array.dtype == np.float32
    assert back.array.min() >= 0 and back.array.max() <= 1


def test_intensity_functions():
    hu = np.array([-1000, -160, 40, 240, 3000], np.float32)
    assert np.allclose(apply_window(hu, CT_WINDOWS["soft_tissue"]), [0, 0, 0.5, 1, 1])
    assert np.allclose(zscore(np.array([1.0, 3.0]), 2.0, 0.5), [-2, 2])
    with pytest.raises(ValueError, match="positive standard deviation"):
        zscore(hu, 0, 0)
    values = np.arange(1000, dtype=np.float32)
    clipped = clip_percentiles(values, 1, 99)
    assert clipped.min() == 0 and clipped.max() == 1
    assert np.all(clip_percentiles(np.ones(10)) == 0)


@settings(max_examples=60, deadline=None)
@given(st.tuples(*[st.integers(1, 12)] * 3), st.tuples(*[st.integers(-6, 18)] * 3),
       st.tuples(*[st.integers(1, 9)] * 3))
@example(shape=(1, 1, 2), center=(0, 0, -2), size=(1, 1, 1))  # crop wholly outside, negative stop
def test_crop_and_paste_round_trip(shape, center, size):
    array = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 1
    piece, box = crop_around_point(array, center, size, pad_value=0)
    assert piece.shape == tuple(size)
    inside = box.clip_to(shape)
    assert np.count_nonzero(piece) == int(np.prod(inside.shape))
    target = np.zeros_like(array)
    written = paste_crop(target, piece, box)
    assert written == inside
    assert np.array_equal(target[inside.slices], array[inside.slices])
    assert np.count_nonzero(target) == int(np.prod(inside.shape))


def test_crop_convention_matches_3dsam_adapter():
    box = crop_box_around((100, 10, 64), 128)
    assert box == Box((36, -54, 0), (164, 74, 128))
    piece = crop(np.ones((3, 3, 3)), Box((-1, -1, -1), (2, 2, 2)), pad_value=-5)
    assert piece[0, 0, 0] == -5 and piece[1, 1, 1] == 1
    with pytest.raises(ValueError, match="does not fit"):
        paste_crop(np.zeros((3, 3, 3)), np.zeros((2, 2, 2)), Box((0, 0, 0), (3, 3, 3)))
