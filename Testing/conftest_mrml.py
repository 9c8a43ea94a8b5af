"""What the MRML tests share: painting as Segment Editor does, a segment's raw contents, and the
check that a Segment Editor stroke made after a model step is an undo step of its own."""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from volsam.geometry import Box, Volume
from volsam.mrml.nodes import vtk_from_matrix


def paint(segmentation, segment_id, volume: Volume, mask: np.ndarray, overwrite=()) -> None:
    """Paint as Segment Editor does: merge a modifier labelmap into the segment through Slicer.
    ``overwrite``: the segments the editor may paint over (it passes them in its overwrite modes;
    with them a labelmap layer shared with those segments stays shared)."""
    modifier = slicer.vtkOrientedImageData()
    modifier.SetExtent(0, volume.shape_ijk[0] - 1, 0, volume.shape_ijk[1] - 1, 0, volume.shape_ijk[2] - 1)
    modifier.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    modifier.SetImageToWorldMatrix(vtk_from_matrix(volume.ijk_to_ras))
    numpy_support.vtk_to_numpy(modifier.GetPointData().GetScalars())[:] = mask.astype(np.uint8).ravel()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if overwrite:
        assert logic.SetBinaryLabelmapToSegment(modifier, segmentation, segment_id, logic.MODE_MERGE_MAX, None, False,
                                                list(overwrite))
    else:
        assert logic.SetBinaryLabelmapToSegment(modifier, segmentation, segment_id, logic.MODE_MERGE_MAX)


def raw_labelmap(segmentation, segment_id):
    """The segment's labelmap exactly: extent, geometry and every raw value."""
    image = segmentation.GetBinaryLabelmapInternalRepresentation(segment_id)
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return image.GetExtent(), str([matrix.GetElement(r, c) for r in range(4) for c in range(4)]), \
        slicer.util.arrayFromSegmentInternalBinaryLabelmap(segmentation, segment_id).copy()


def same_segment_contents(a, b) -> bool:
    """Equal voxel for voxel on the grid (the labelmap's extent may have grown in between)."""
    return a[1] == b[1] and _voxels(a) == _voxels(b)


def _voxels(raw):
    extent, _, values = raw
    k, j, i = np.nonzero(values)
    return sorted(zip(i + extent[0], j + extent[2], k + extent[4], values[k, j, i]))


def stroke_over_and_beside(mask: np.ndarray) -> np.ndarray:
    """A Segment Editor stroke across a row of ``mask``'s box: over part of the mask, over voxels of
    its box outside it (a model step's before-patch would overwrite those), and outside the box."""
    box = Box.from_mask(mask)
    k, j = (box.start[0] + box.stop[0]) // 2, box.start[1]  # the box's first row: only partly in the mask
    stroke = np.zeros(mask.shape, bool)
    stroke[k, j:j + 2, max(box.start[2] - 4, 0):box.stop[2] + 4] = True
    in_box = np.zeros(mask.shape, bool)
    in_box[box.slices] = True
    assert (stroke & mask).any() and (stroke & ~mask & in_box).any() and (stroke & ~in_box).any()
    return stroke


def check_stroke_after_a_step_is_its_own_step(controller, click, others=()) -> None:
    """click -> Segment Editor stroke -> undo (the stroke goes, the click's mask is back exactly)
    -> undo (before the click) -> redo -> redo (the stroke is back exactly); ``others``: segments
    sharing the layer, whose contents must follow bit for bit too."""
    segmentation, segment_id = controller.segmentation_node, controller.state.segment_id

    def contents():
        return [raw_labelmap(segmentation, sid) for sid in (segment_id, *others)]

    def same(a, b):
        return all(same_segment_contents(x, y) for x, y in zip(a, b))

    before = contents()
    click()
    controller.wait_idle(timeout=600)
    clicked, mask = contents(), controller.interaction.current_mask().astype(bool)
    assert mask.any() and not same(clicked, before)
    points = {role: controller.prompt_node(role).GetNumberOfControlPoints() for role in ("positive", "negative")}
    paint(segmentation, segment_id, controller.volume, stroke_over_and_beside(mask), overwrite=others)
    painted = contents()
    assert not same(painted, clicked)

    controller.undo()
    assert same(contents(), clicked)
    assert controller.state.message == "Undo: edit in Segment Editor."
    assert np.array_equal(controller.interaction.current_mask().astype(bool), mask)
    assert {role: controller.prompt_node(role).GetNumberOfControlPoints() for role in points} == points
    controller.undo()
    assert same(contents(), before) and not controller.state.can_undo
    controller.redo()
    assert same(contents(), clicked)
    controller.redo()
    assert same(contents(), painted) and not controller.state.can_redo
    assert controller.state.error is None, controller.state
