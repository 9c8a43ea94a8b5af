"""volsam.mrml.nodes on real slicer-core MRML nodes: volumes, transforms, markups, ROIs, views."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from conftest import make_volume, rotation  # noqa: E402

from volsam.geometry import reorient_like  # noqa: E402
from volsam.io import read_image, write_image  # noqa: E402
from volsam.mrml import (  # noqa: E402
    box_prompt_from_roi,
    defined_control_points_ras,
    node_to_world_matrix,
    point_prompt_from_control_point,
    slice_normal_ras,
    slice_views_containing,
    standalone_scene,
    volume_from_node,
    volume_node_from_volume,
)
from volsam.mrml.nodes import matrix_from_vtk, vtk_from_matrix  # noqa: E402

GEOMETRIES = {
    "axis-aligned": dict(angles=(0, 0, 0), flips=(1, 1, 1), spacing=(1.0, 1.0, 1.0)),
    "oblique-flipped-anisotropic": dict(angles=(20, -10, 35), flips=(1, -1, 1), spacing=(0.8, 1.1, 2.5)),
    "left-handed-lps-like": dict(angles=(0, 0, 180), flips=(1, 1, -1), spacing=(0.7, 0.7, 3.0)),
}


@pytest.fixture
def scene():
    return standalone_scene()


def linear_transform_node(scene, angles=(5, 30, -15), translation=(12.0, -7.5, 40.0), parent=None):
    matrix = np.eye(4)
    matrix[:3, :3] = rotation(angles)
    matrix[:3, 3] = translation
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    node.SetMatrixTransformToParent(vtk_from_matrix(matrix))
    if parent is not None:
        node.SetAndObserveTransformNodeID(parent.GetID())
    return node, matrix


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_volume_node_round_trip_keeps_voxels_and_geometry(scene, geometry):
    volume = make_volume(**GEOMETRIES[geometry])
    node = volume_node_from_volume(scene, volume, "ct")
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    assert np.allclose(matrix_from_vtk(ijk_to_ras), volume.ijk_to_ras)

    back = volume_from_node(node)
    assert np.array_equal(back.array, volume.array)
    assert np.allclose(back.ijk_to_ras, volume.ijk_to_ras)
    assert back.array is not volume.array and not np.shares_memory(back.array, slicer.util.arrayFromVolume(node))


def test_node_geometry_agrees_with_the_engine_reading_the_same_file(scene, tmp_path):
    """Slicer's reader (LPS file -> RAS node) and volsam's reader put every voxel at one place."""
    image = make_volume(angles=(15, -20, 30), flips=(-1, 1, -1), spacing=(1.2, 0.9, 2.5))
    path = tmp_path / "oblique.nrrd"
    write_image(image, path)
    volumes_logic = slicer.vtkSlicerVolumesLogic()
    volumes_logic.SetMRMLScene(scene)
    loaded = volumes_logic.AddArchetypeVolume(str(path), "oblique")
    from_slicer = volume_from_node(loaded)
    from_engine = read_image(path)
    aligned = reorient_like(from_slicer, from_engine)
    assert np.array_equal(aligned.array, from_engine.array)


def test_volume_under_nested_linear_transforms_is_in_world_coordinates(scene):
    volume = make_volume()
    node = volume_node_from_volume(scene, volume, "ct")
    outer, outer_matrix = linear_transform_node(scene, (0, 0, 90), (100.0, 0.0, 0.0))
    inner, inner_matrix = linear_transform_node(scene, parent=outer)
    node.SetAndObserveTransformNodeID(inner.GetID())

    world = volume_from_node(node)
    assert np.allclose(node_to_world_matrix(node), outer_matrix @ inner_matrix)
    assert np.allclose(world.ijk_to_ras, outer_matrix @ inner_matrix @ volume.ijk_to_ras)
    # A point placed where voxel (3, 5, 7) is displayed maps back onto that voxel.
    markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    markups.AddControlPointWorld(vtk.vtkVector3d(*world.ijk_to_ras_points(np.array([3.0, 5.0, 7.0]))))
    prompt = point_prompt_from_control_point(world, markups, 0, positive=False)
    assert prompt.voxel_ijk.tolist() == [3, 5, 7] and not prompt.positive


def test_markups_under_their_own_transform_are_read_in_world_coordinates(scene):
    volume = make_volume()
    markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    transform, matrix = linear_transform_node(scene)
    markups.SetAndObserveTransformNodeID(transform.GetID())
    target = volume.ijk_to_ras_points(np.array([10.0, 4.0, 2.0]))
    local = np.linalg.inv(matrix) @ np.append(target, 1.0)
    markups.AddControlPoint(vtk.vtkVector3d(*local[:3]))
    assert np.allclose(defined_control_points_ras(markups), [target])
    assert point_prompt_from_control_point(volume, markups, 0, True).voxel_ijk.tolist() == [10, 4, 2]


def test_non_linear_transform_is_refused_with_a_way_out(scene):
    node = volume_node_from_volume(scene, make_volume(), "ct")
    transform_node = scene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
    grid = vtk.vtkGridTransform()
    displacement = vtk.vtkImageData()
    displacement.SetDimensions(2, 2, 2)
    displacement.AllocateScalars(vtk.VTK_DOUBLE, 3)
    grid.SetDisplacementGridData(displacement)
    transform_node.SetAndObserveTransformToParent(grid)
    node.SetAndObserveTransformNodeID(transform_node.GetID())
    with pytest.raises(ValueError, match="non-linear transform 'warp'.*harden"):
        volume_from_node(node)


def test_point_outside_the_image_is_a_clear_error(scene):
    volume = make_volume()
    markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    markups.AddControlPoint(vtk.vtkVector3d(*volume.ijk_to_ras_points(np.array([-3.0, 0.0, 0.0]))))
    with pytest.raises(ValueError, match="lies outside the image"):
        point_prompt_from_control_point(volume, markups, 0, True)


def test_unplaced_and_skipped_points_are_not_prompts(scene):
    markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    markups.AddControlPoint(vtk.vtkVector3d(1.0, 2.0, 3.0))
    markups.AddControlPoint(vtk.vtkVector3d(4.0, 5.0, 6.0))
    markups.UnsetNthControlPointPosition(1)
    markups.AddControlPoint(vtk.vtkVector3d(7.0, 8.0, 9.0))
    markups.SetNthControlPointPositionMissing(2)
    assert np.allclose(defined_control_points_ras(markups), [[1.0, 2.0, 3.0]])
    assert defined_control_points_ras(None).shape == (0, 3)


def test_roi_becomes_a_box_on_the_slice_through_its_centre(scene):
    volume = make_volume(shape_kji=(12, 20, 24))
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    # An ROI aligned with the oblique grid, spanning voxels i 4..10, j 6..12, k 3..7.
    low, high = np.array([4.0, 6.0, 3.0]), np.array([10.0, 12.0, 7.0])
    orientation = np.eye(4)
    orientation[:3, :3] = volume.direction_ras
    orientation[:3, 3] = volume.ijk_to_ras_points((low + high) / 2)
    roi.SetAndObserveObjectToNodeMatrix(vtk_from_matrix(orientation))
    roi.SetSize(*((high - low) * volume.spacing))
    box = box_prompt_from_roi(volume, roi, slice_axis=2)
    assert np.allclose(box.min_ijk, [4, 6, 5], atol=1e-6)
    assert np.allclose(box.max_ijk, [10, 12, 5], atol=1e-6)


def test_roi_outside_the_image_is_refused(scene):
    volume = make_volume()
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "far")
    roi.SetCenter(1000.0, 1000.0, 1000.0)
    roi.SetSize(5.0, 5.0, 5.0)
    with pytest.raises(ValueError, match="'far' does not overlap the image"):
        box_prompt_from_roi(volume, roi, slice_axis=2)


def test_slice_view_of_a_placed_point(scene):
    red = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    red.SetLayoutName("Red")
    yellow = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    yellow.SetLayoutName("Yellow")
    # Red: axial plane at S = 10; Yellow: sagittal plane at R = -4.
    red.SetSliceToRASByNTP(0, 0, 1, 1, 0, 0, 0, 0, 10, 0)
    yellow.SetSliceToRASByNTP(1, 0, 0, 0, 1, 0, -4, 0, 0, 0)
    assert np.allclose(slice_normal_ras(red), [0, 0, 1]) and np.allclose(slice_normal_ras(yellow), [1, 0, 0])
    assert slice_views_containing([3.0, 7.0, 10.2], [red, yellow], 0.5) == [red]
    assert slice_views_containing([-4.0, 7.0, 10.0], [red, yellow], 0.5) == [red, yellow]
    assert slice_views_containing([0.0, 0.0, 0.0], [red, yellow], 0.5) == []
