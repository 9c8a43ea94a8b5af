"""Geometry: conversions between voxel indices, RAS/LPS millimetres and SimpleITK images."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_volume, rotation
from volsam.geometry import (Box, Volume, closest_voxel_axis, lps_to_ras, orientation_code, reorient_like,
                             volume_from_sitk, volume_to_sitk)

angles = st.tuples(*[st.floats(-180, 180)] * 3)
flips = st.tuples(*[st.sampled_from((1, -1))] * 3)
spacings = st.tuples(*[st.floats(0.2, 6.0)] * 3)
origins = st.tuples(*[st.floats(-500, 500)] * 3)
shapes = st.tuples(*[st.integers(1, 9)] * 3)


@settings(max_examples=200, deadline=None)
@given(angles, flips, spacings, origins, shapes, st.lists(st.tuples(*[st.floats(-300, 300)] * 3), min_size=1, max_size=5))
def test_point_to_index_and_back_round_trips(angles_, flips_, spacing, origin, shape, points):
    volume = make_volume(shape, spacing, angles_, flips_, origin)
    points = np.array(points)
    ijk = volume.ras_to_ijk_points(points)
    assert np.max(np.abs(volume.ijk_to_ras_points(ijk) - points)) < 1e-6
    lps = lps_to_ras(points)
    assert np.max(np.abs(volume.ijk_to_lps_points(volume.lps_to_ijk_points(lps)) - lps)) < 1e-6


@settings(max_examples=100, deadline=None)
@given(angles, flips, spacings, origins, shapes)
def test_voxel_centre_maps_to_its_own_voxel(angles_, flips_, spacing, origin, shape):
    volume = make_volume(shape, spacing, angles_, flips_, origin)
    ijk = np.array([[i, j, k] for k in range(shape[0]) for j in range(shape[1]) for i in range(shape[2])])
    ras = volume.ijk_to_ras_points(ijk)
    assert np.array_equal(volume.ras_to_nearest_ijk(ras), ijk)
    assert volume.contains_ijk(ijk).all()


@settings(max_examples=100, deadline=None)
@given(angles, flips, spacings, origins, shapes)
def test_sitk_round_trip_keeps_geometry(angles_, flips_, spacing, origin, shape):
    volume = make_volume(shape, spacing, angles_, flips_, origin)
    back = volume_from_sitk(volume_to_sitk(volume))
    assert back.same_geometry(volume, tolerance_mm=1e-9)
    assert np.array_equal(back.array, volume.array)


def test_sitk_conversion_flips_x_and_y_between_lps_and_ras():
    import SimpleITK as sitk

    image = sitk.Image(4, 5, 6, sitk.sitkUInt8)
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetSpacing((0.5, 1.0, 2.0))
    volume = volume_from_sitk(image)
    assert np.allclose(volume.origin_ras, [-10, 20, 30])
    assert np.allclose(volume.spacing, [0.5, 1.0, 2.0])
    assert volume.shape_kji == (6, 5, 4)
    # index (1, 0, 0) in LPS is 0.5 mm towards L, i.e. -0.5 in R
    assert np.allclose(volume.ijk_to_ras_points([1, 0, 0]), [-10.5, 20, 30])
    assert volume.orientation_code == "LPS"


def test_orientation_codes():
    assert orientation_code(np.eye(4)) == "RAS"
    assert orientation_code(np.diag([-1, -1, 1, 1])) == "LPS"
    assert orientation_code(np.diag([1, 1, -3, 1])) == "RAI"


def test_same_geometry_tolerance():
    volume = make_volume()
    shifted = Volume(volume.array, volume.ijk_to_ras + np.pad(np.full((3, 1), 5e-5), ((0, 1), (3, 0))))
    assert volume.same_geometry(shifted)
    assert not volume.same_geometry(shifted, tolerance_mm=1e-6)
    moved = Volume(volume.array, volume.ijk_to_ras + np.pad(np.full((3, 1), 1e-3), ((0, 1), (3, 0))))
    assert not volume.same_geometry(moved)


@settings(max_examples=60, deadline=None)
@given(st.permutations([0, 1, 2]), flips, shapes, angles)
def test_reorient_like_recovers_a_reindexed_copy(perm, flips_, shape, angles_):
    reference = make_volume(shape, (0.7, 1.3, 2.1), angles_, (1, 1, 1), (3.0, -4.0, 5.0))
    # Re-index the reference: new index axis a is old axis perm[a], possibly flipped.
    new_to_old = np.zeros((4, 4))
    new_to_old[3, 3] = 1
    for a in range(3):
        n = reference.shape_ijk[perm[a]]
        new_to_old[perm[a], a] = flips_[a]
        new_to_old[perm[a], 3] = 0 if flips_[a] == 1 else n - 1
    array = reference.array
    for a in range(3):
        if flips_[a] == -1:
            array = np.flip(array, axis=2 - perm[a])
    array = np.transpose(array, [2 - perm[2 - n] for n in range(3)])
    reindexed = Volume(np.ascontiguousarray(array), reference.ijk_to_ras @ new_to_old)
    # Same physical samples: every voxel centre carries the same value in both.
    for ijk in [(0, 0, 0), tuple(np.array(reindexed.shape_ijk) - 1)]:
        ras = reindexed.ijk_to_ras_points(np.array(ijk, float))
        old = reference.ras_to_nearest_ijk(ras)
        assert reindexed.array[ijk[::-1]] == reference.array[tuple(old[::-1])]
    back = reorient_like(reindexed, reference)
    assert np.array_equal(back.array, reference.array)


def test_reorient_like_refuses_other_grids():
    a = make_volume()
    b = make_volume(spacing=(0.8, 1.1, 2.0))
    with pytest.raises(ValueError, match="do not share one voxel grid"):
        reorient_like(a, b)


def test_box_operations():
    box = Box((1, 2, 3), (4, 6, 8))
    assert box.shape == (3, 4, 5)
    assert box.union(Box((0, 0, 0), (1, 1, 1))) == Box((0, 0, 0), (4, 6, 8))
    assert box.intersection(Box((2, 2, 2), (10, 3, 10))) == Box((2, 2, 3), (4, 3, 8))
    assert Box((-2, 0, 0), (3, 3, 3)).clip_to((2, 2, 2)) == Box((0, 0, 0), (2, 2, 2))
    mask = np.zeros((5, 6, 7), bool)
    mask[1, 2:4, 6] = True
    assert Box.from_mask(mask) == Box((1, 2, 6), (2, 4, 7))
    assert Box.from_mask(np.zeros((2, 2, 2))) is None


def test_closest_voxel_axis_for_oblique_volume():
    volume = make_volume(angles=(10, 0, 0), flips=(1, 1, -1))
    assert closest_voxel_axis(volume, (0, 0, 1)) == 2
    assert closest_voxel_axis(volume, (1, 0, 0)) == 0
    permuted = Volume.from_spacing(np.zeros((2, 2, 2)), direction_ras=rotation((0, 0, 0))[:, [2, 0, 1]])
    assert closest_voxel_axis(permuted, (0, 0, 1)) == 0


def test_bad_geometry_is_refused():
    with pytest.raises(ValueError, match="4x4"):
        Volume(np.zeros((2, 2, 2)), np.eye(3))
    with pytest.raises(ValueError, match="singular"):
        Volume(np.zeros((2, 2, 2)), np.diag([1, 0, 1, 1]))
    with pytest.raises(ValueError, match="3D array"):
        Volume(np.zeros((2, 2)), np.eye(4))
