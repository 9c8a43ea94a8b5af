"""volsam.mrml.segments on real slicer-core segmentation nodes.

The oracle for "where did the voxels go" is computed independently of the code under test:
from the segment's internal labelmap, its own image-to-node matrix and the node's parent
transform, into world RAS, compared with the world positions of the intended voxels.
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from conftest import make_volume, rotation  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

from volsam.geometry import Box, Volume  # noqa: E402
from volsam.mrml import SegmentGridError, SegmentOnGrid, ensure_segment, standalone_scene  # noqa: E402
from volsam.mrml.nodes import matrix_from_vtk, node_to_world_matrix, vtk_from_matrix  # noqa: E402

GRID = dict(shape_kji=(14, 18, 22), spacing=(0.8, 1.1, 2.5), angles=(20, -10, 35), flips=(1, -1, 1))


@pytest.fixture
def scene():
    return standalone_scene()


@pytest.fixture
def volume():
    return make_volume(**GRID)


def new_segmentation(scene, name="seg"):
    return scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)


def segment_voxels_world(segmentation_node, segment_id) -> np.ndarray:
    """World RAS centres of the voxels of a segment, straight from its internal labelmap."""
    image = segmentation_node.GetBinaryLabelmapInternalRepresentation(segment_id)
    extent = image.GetExtent()
    if extent[1] < extent[0]:
        return np.zeros((0, 3))
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(image.GetDimensions()[::-1])
    label = segmentation_node.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    k, j, i = np.nonzero(values == label)
    ijk = np.stack([i + extent[0], j + extent[2], k + extent[4]], axis=1).astype(float)
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    to_world = node_to_world_matrix(segmentation_node) @ matrix_from_vtk(matrix)
    return ijk @ to_world[:3, :3].T + to_world[:3, 3]


def mask_voxels_world(volume: Volume, mask: np.ndarray) -> np.ndarray:
    k, j, i = np.nonzero(mask)
    return volume.ijk_to_ras_points(np.stack([i, j, k], axis=1).astype(float))


def same_points(a: np.ndarray, b: np.ndarray) -> bool:
    def key(points):
        return sorted(map(tuple, np.round(points, 3)))
    return a.shape == b.shape and key(a) == key(b)


def blob(shape, box: Box, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(box.shape) < 0.5).astype(np.uint8)


def test_ensure_segment_reuses_or_creates(scene):
    segmentation = new_segmentation(scene)
    first = ensure_segment(segmentation, None, "Lesion")
    assert segmentation.GetSegmentation().GetSegment(first).GetName() == "Lesion"
    assert ensure_segment(segmentation, first) == first
    assert ensure_segment(segmentation, "no such id") != first
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2


def test_writing_a_box_changes_only_that_box(scene, volume):
    segmentation = new_segmentation(scene)
    segment = SegmentOnGrid(segmentation, ensure_segment(segmentation), volume)
    expected = np.zeros(volume.shape_kji, np.uint8)
    first, second = Box((1, 2, 3), (6, 9, 12)), Box((4, 5, 8), (12, 16, 20))
    for number, box in enumerate((first, second)):
        values = blob(volume.shape_kji, box, seed=number)
        segment.write(values, box)
        expected[box.slices] = values
    assert np.array_equal(segment.read(), expected)
    assert segment.labelmap_box() == first.union(second)
    # Where the voxels are in the world, computed without the code under test.
    assert same_points(segment_voxels_world(segmentation, segment.segment_id), mask_voxels_world(volume, expected))


def test_segmentation_under_a_linear_transform(scene, volume):
    segmentation = new_segmentation(scene)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = np.eye(4)
    matrix[:3, :3] = rotation((0, 25, 10))
    matrix[:3, 3] = (30.0, -12.0, 5.0)
    transform.SetMatrixTransformToParent(vtk_from_matrix(matrix))
    segmentation.SetAndObserveTransformNodeID(transform.GetID())
    segment = SegmentOnGrid(segmentation, ensure_segment(segmentation), volume)
    box = Box((2, 3, 4), (9, 12, 15))
    values = blob(volume.shape_kji, box)
    segment.write(values, box)
    expected = np.zeros(volume.shape_kji, np.uint8)
    expected[box.slices] = values
    assert same_points(segment_voxels_world(segmentation, segment.segment_id), mask_voxels_world(volume, expected))


def test_labelmap_grows_in_place_and_stays_shared(scene, volume):
    segmentation = new_segmentation(scene)
    first_id = ensure_segment(segmentation, None, "A")
    second_id = ensure_segment(segmentation, None, "B")
    first = SegmentOnGrid(segmentation, first_id, volume)
    # B shares A's layer (both were empty); give it voxels through Slicer's own API.
    segmentation.GetSegmentation().CollapseBinaryLabelmaps()
    second = SegmentOnGrid(segmentation, second_id, volume)
    assert segmentation.GetSegmentation().GetNumberOfLayers() == 1
    first.write(np.ones((2, 2, 2), np.uint8), Box((1, 1, 1), (3, 3, 3)))
    second.write(np.ones((2, 3, 2), np.uint8), Box((5, 5, 5), (7, 8, 7)))
    second_before = second.read()

    first.write(np.ones((1, 2, 2), np.uint8), Box((13, 16, 20), (14, 18, 22)))  # far corner: labelmap grows

    assert segmentation.GetSegmentation().GetNumberOfLayers() == 1
    assert np.array_equal(second.read(), second_before)
    assert first.read().sum() == 8 + 4
    assert first.labelmap_box() == Box((1, 1, 1), (14, 18, 22))


def test_shared_layer_write_touches_only_its_label_and_raw_values_restore_all(scene, volume):
    segmentation = new_segmentation(scene)
    first_id, second_id = ensure_segment(segmentation, None, "A"), ensure_segment(segmentation, None, "B")
    first = SegmentOnGrid(segmentation, first_id, volume)
    segmentation.GetSegmentation().CollapseBinaryLabelmaps()
    second = SegmentOnGrid(segmentation, second_id, volume)
    assert second.label_value != first.label_value
    box = Box((2, 2, 2), (8, 8, 8))
    second.write(np.ones(box.shape, np.uint8), box)
    first.write(np.ones((3, 3, 3), np.uint8), Box((0, 0, 0), (3, 3, 3)))
    raw_before = first.read_raw(box)

    mask = np.zeros(box.shape, np.uint8)
    mask[:3, :3, :3] = 1  # overlaps B's corner; everything else in the box is "not A"
    first.write(mask, box)
    assert first.read(box)[:3, :3, :3].all() and first.read(box).sum() == 27
    assert second.read(box).sum() == box.shape[0] * box.shape[1] * box.shape[2] - 27
    assert first.read(Box((0, 0, 0), (2, 2, 2))).all()  # A outside the box untouched

    first.write_raw(raw_before, box)
    assert np.array_equal(first.read_raw(box), raw_before)
    assert first.read(box).sum() == 1 and first.read(box)[0, 0, 0]  # voxel (2, 2, 2) was A's
    assert second.read(box).sum() == box.shape[0] * box.shape[1] * box.shape[2] - 1


def test_segment_on_another_grid_is_resampled_onto_the_volume_grid(scene, volume):
    segmentation = new_segmentation(scene)
    segment_id = ensure_segment(segmentation)
    # A sphere drawn on an axis-aligned 0.5 mm grid (as if segmented on another volume).
    centre = volume.ijk_to_ras_points(np.array([11.0, 9.0, 7.0]))
    radius = 6.0
    other = slicer.vtkOrientedImageData()
    size = 40
    other.SetExtent(0, size - 1, 0, size - 1, 0, size - 1)
    other.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    origin = centre - 0.5 * (size - 1) / 2
    other.SetImageToWorldMatrix(vtk_from_matrix(np.array([[0.5, 0, 0, origin[0]], [0, 0.5, 0, origin[1]],
                                                          [0, 0, 0.5, origin[2]], [0, 0, 0, 1.0]])))
    z, y, x = np.mgrid[0:size, 0:size, 0:size] * 0.5
    inside = np.linalg.norm(np.stack([x, y, z], -1) + origin - centre, axis=-1) <= radius
    numpy_support.vtk_to_numpy(other.GetPointData().GetScalars())[:] = inside.ravel()
    segmentation.GetSegmentation().GetSegment(segment_id).AddRepresentation(
        slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName(), other)

    segment = SegmentOnGrid(segmentation, segment_id, volume)

    k, j, i = np.indices(volume.shape_kji)
    voxel_ras = volume.ijk_to_ras_points(np.stack([i, j, k], -1).reshape(-1, 3).astype(float))
    expected = (np.linalg.norm(voxel_ras - centre, axis=1) <= radius).reshape(volume.shape_kji)
    got = segment.read().astype(bool)
    dice = 2 * (got & expected).sum() / (got.sum() + expected.sum())
    assert dice > 0.85
    geometry = segmentation.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    reference = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, reference)
    matrix = vtk.vtkMatrix4x4()
    reference.GetImageToWorldMatrix(matrix)
    assert np.allclose(matrix_from_vtk(matrix), volume.ijk_to_ras)


def test_edits_survive_saving_and_loading(scene, volume, tmp_path):
    segmentation = new_segmentation(scene)
    segment = SegmentOnGrid(segmentation, ensure_segment(segmentation), volume)
    box = Box((3, 4, 5), (10, 12, 14))
    segment.write(blob(volume.shape_kji, box), box)
    expected = segment.read()
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(tmp_path / "lesion.seg.nrrd"))
    assert storage.WriteData(segmentation)
    loaded = new_segmentation(scene, "loaded")
    assert storage.ReadData(loaded)
    loaded_id = loaded.GetSegmentation().GetNthSegmentID(0)
    assert np.array_equal(SegmentOnGrid(loaded, loaded_id, volume).read(), expected)


def test_closed_surface_is_rebuilt_from_the_written_voxels(scene, volume):
    segmentation = new_segmentation(scene)
    segment = SegmentOnGrid(segmentation, ensure_segment(segmentation), volume)
    segmentation.CreateClosedSurfaceRepresentation()
    box = Box((4, 4, 4), (10, 12, 14))
    segment.write(np.ones(box.shape, np.uint8), box)
    segmentation.CreateClosedSurfaceRepresentation()  # what the 3D view asks for on redraw
    surface = vtk.vtkPolyData()
    segmentation.GetClosedSurfaceRepresentation(segment.segment_id, surface)
    assert surface.GetNumberOfPoints() > 0


def test_surface_only_segmentation_is_refused_with_a_way_out(scene, volume):
    segmentation = new_segmentation(scene, "surfaces")
    segment_id = ensure_segment(segmentation)
    segmentation.GetSegmentation().SetSourceRepresentationName(
        slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName())
    with pytest.raises(SegmentGridError, match="'surfaces' is stored as 'Closed surface'.*binary labelmap"):
        SegmentOnGrid(segmentation, segment_id, volume)


def test_boxes_outside_the_volume_are_refused(scene, volume):
    segmentation = new_segmentation(scene)
    segment = SegmentOnGrid(segmentation, ensure_segment(segmentation), volume)
    with pytest.raises(ValueError, match="reaches outside the volume"):
        segment.write(np.ones((2, 2, 2), np.uint8), Box((-1, 0, 0), (1, 2, 2)))
