"""The interaction controller on real slicer-core MRML nodes, whose real events drive it.

Prompts are placed the way Slicer places them: control points added to the controller's markups
nodes (``PointPositionDefinedEvent`` fires), a ROI drawn and its placement ended (the
interaction node leaves place mode). The model is the stand-in of :mod:`conftest_controller`
here (the demo models' runs are in ``test_mrml_controller_models.py``); what is asserted is the
segment, the markups and the history, voxel for voxel.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from conftest import rotation  # noqa: E402
from conftest_controller import StandInMethod  # noqa: E402
from conftest_mrml import (  # noqa: E402
    check_stroke_after_a_step_is_its_own_step,
    paint,
    raw_labelmap,
    same_segment_contents,
)

from volsam.geometry import Box, Volume  # noqa: E402
from volsam.methods import WeightsChoice  # noqa: E402
from volsam.mrml import standalone_scene, volume_node_from_volume  # noqa: E402
from volsam.mrml.controller import InteractionController, range_boundary_slices  # noqa: E402
from volsam.mrml.nodes import control_point_ras, prompt_markups_node  # noqa: E402
from volsam.mrml.segments import ensure_segment, set_reference_geometry  # noqa: E402
from volsam.mrml.worker import ModelWorker  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def oblique_volume() -> Volume:
    """A small volume on an oblique, flipped, anisotropic grid."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation((10, -15, 20)) @ np.diag([-1.2, 1.4, 2.5])
    matrix[:3, 3] = (30.0, -20.0, 12.0)
    array = np.zeros((12, 30, 34), np.int16)
    array[4:9, 10:20, 12:24] = 100
    return Volume(array, matrix)


@pytest.fixture
def scene():
    return standalone_scene()


@pytest.fixture
def method():
    return StandInMethod()


@pytest.fixture
def controller(scene, method):
    volume_node = volume_node_from_volume(scene, oblique_volume(), "phantom")
    controller = InteractionController(scene, method)
    controller.initialize(volume_node, weights=WeightsChoice("demo"), device="cpu")
    controller.wait_idle(timeout=60)
    assert controller.state.ready, controller.state
    yield controller
    controller.close()


def ras_of(controller, ijk) -> np.ndarray:
    return controller.volume.ijk_to_ras_points(np.array(ijk, float))


def place_point(controller, role, ijk) -> None:
    """What a click in a view does: a control point placed in the role's markups node."""
    controller.prompt_node(role).AddControlPointWorld(vtk.vtkVector3d(*ras_of(controller, ijk)))


def place_box(controller, centre_ijk, size_mm) -> None:
    """What drawing a box does: place mode for the ROI, its control point and size, then the end of
    the (non-persistent) placement, which leaves place mode."""
    controller.start_placing("box")
    roi = controller.prompt_node("box")
    roi.AddControlPointWorld(vtk.vtkVector3d(*ras_of(controller, centre_ijk)))
    roi.SetSize(*size_mm)
    interaction = scene_interaction_node(controller.scene)
    interaction.SetCurrentInteractionMode(interaction.ViewTransform)


def scene_interaction_node(scene):
    return scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")


def poll_until(controller, condition, polls: int = 6000) -> None:
    """Poll as a main loop does until ``condition(state)`` holds (the bound only guards a hang)."""
    for _ in range(polls):
        controller.poll(0.01)
        if condition(controller.state):
            return


def segment_raw(controller):
    return raw_labelmap(controller.segmentation_node, controller.state.segment_id)


def markups_positions(controller, role):
    node = controller.prompt_node(role)
    return [tuple(np.round(control_point_ras(node, index), 6)) for index in range(node.GetNumberOfControlPoints())]


# --- prompts, undo and redo -------------------------------------------------------------------
def test_a_placed_point_runs_at_once_and_undo_redo_restore_segment_and_point(controller):
    before = segment_raw(controller)
    place_point(controller, "positive", (18, 15, 6))
    controller.wait_idle(timeout=30)
    after = segment_raw(controller)
    assert controller.interaction.current_mask().any() and controller.state.can_undo
    assert len(markups_positions(controller, "positive")) == 1

    controller.undo()
    assert same_segment_contents(segment_raw(controller), before)
    assert markups_positions(controller, "positive") == []
    controller.redo()
    assert same_segment_contents(segment_raw(controller), after)
    assert markups_positions(controller, "positive") == [tuple(np.round(ras_of(controller, (18, 15, 6)), 6))]


def test_without_auto_run_prompts_wait_and_run_as_one_step(controller):
    controller.auto_run = False
    place_point(controller, "positive", (18, 15, 6))
    place_point(controller, "negative", (18, 15, 7))
    assert controller.state.pending_prompts == 2 and not controller.interaction.current_mask().any()
    controller.run_pending()
    controller.wait_idle(timeout=30)
    assert controller.session.calls.count("points") == 1 and controller.interaction.current_mask().any()
    controller.undo()
    assert not controller.interaction.current_mask().any() and not controller.state.can_undo
    assert markups_positions(controller, "positive") == markups_positions(controller, "negative") == []


def test_a_box_is_undone_and_redone_as_a_whole(controller):
    """Defect 3: a ROI keeps one centre point, so a (node, index) tag taken at placement pointed
    at nothing; undo left the box and redo logged 'more than maximum number of control points'."""
    roi = controller.prompt_node("box")
    place_box(controller, (17, 14, 6), (8.0, 9.0, 1.0))
    controller.wait_idle(timeout=30)
    assert controller.session.calls == ["open_volume", "box"]
    boxed = segment_raw(controller)
    centre, size = np.array(roi.GetCenterWorld()), roi.GetSize()

    controller.undo()
    assert roi.GetNumberOfControlPoints() == 0 and not controller.interaction.current_mask().any()
    controller.redo()
    assert roi.GetNumberOfControlPoints() == 1
    assert np.allclose(roi.GetCenterWorld(), centre) and np.allclose(roi.GetSize(), size)
    assert same_segment_contents(segment_raw(controller), boxed)
    assert controller.session.calls == ["open_volume", "box"]  # restoring the ROI ran nothing

    # A second box replaces the first; undo puts the first back, whole.
    place_box(controller, (10, 20, 4), (6.0, 6.0, 1.0))
    controller.wait_idle(timeout=30)
    assert controller.session.calls.count("box") == 2
    controller.undo()
    assert np.allclose(roi.GetCenterWorld(), centre) and np.allclose(roi.GetSize(), size)
    assert same_segment_contents(segment_raw(controller), boxed)


def test_a_box_and_points_placed_together_run_as_two_steps_box_first(controller):
    controller.auto_run = False
    roi = controller.prompt_node("box")
    place_box(controller, (17, 14, 6), (8.0, 9.0, 1.0))
    place_point(controller, "negative", (17, 14, 6))
    assert controller.state.pending_prompts == 2
    controller.run_pending()
    controller.wait_idle(timeout=30)
    assert controller.session.calls == ["open_volume", "box", "points"]
    controller.undo()  # the point goes, the box stays
    assert markups_positions(controller, "negative") == [] and roi.GetNumberOfControlPoints() == 1
    controller.undo()
    assert roi.GetNumberOfControlPoints() == 0 and not controller.state.can_undo


def test_a_box_outside_the_image_is_refused_and_taken_away(controller):
    controller.auto_run = False
    place_box(controller, (200, 200, 6), (8.0, 9.0, 1.0))
    place_point(controller, "positive", (18, 15, 6))
    controller.run_pending()
    controller.wait_idle(timeout=30)
    assert "does not overlap the image" in controller.state.error
    assert controller.prompt_node("box").GetNumberOfControlPoints() == 0
    controller.run_pending()  # the point placed with it still runs
    controller.wait_idle(timeout=30)
    assert controller.session.calls == ["open_volume", "points"] and controller.interaction.current_mask().any()


def test_undo_redo_after_point_box_paint_and_propagation_is_bit_exact_at_every_step(controller):
    """The must-show sequence: each step's segment recorded, then undone to the start and redone
    to the end, comparing the raw labelmap at every step (a Segment Editor stroke is a step too)."""
    segmentation, segment_id = controller.segmentation_node, controller.state.segment_id
    volume = controller.volume
    stroke = np.zeros(volume.shape_kji, bool)
    stroke[2:4, 2:5, 2:6] = True
    states = [segment_raw(controller)]
    paint(segmentation, segment_id, volume, stroke)  # painted with Segment Editor before any prompt
    assert np.array_equal(controller.interaction.current_mask().astype(bool), stroke)
    states.append(segment_raw(controller))
    place_point(controller, "positive", (18, 15, 6))
    controller.wait_idle(timeout=30)
    states.append(segment_raw(controller))
    place_box(controller, (26, 8, 9), (5.0, 5.0, 1.0))
    controller.wait_idle(timeout=30)
    states.append(segment_raw(controller))
    brush = np.ones((1, 3, 3), np.uint8)
    controller.record_edit(brush, Box((10, 25, 25), (11, 28, 28)))  # a paint stroke through the app
    states.append(segment_raw(controller))
    controller.record_edit(brush, Box((6, 14, 17), (7, 17, 20)), erase=True)
    states.append(segment_raw(controller))
    controller.propagate()
    controller.wait_idle(timeout=30)
    states.append(segment_raw(controller))
    assert all(not same_segment_contents(a, b) for a, b in zip(states, states[1:]))

    for expected in reversed(states[:-1]):
        controller.undo()
        assert same_segment_contents(segment_raw(controller), expected)
    assert not controller.state.can_undo and not controller.interaction.current_mask().any()
    for expected in states[1:]:
        controller.redo()
        assert same_segment_contents(segment_raw(controller), expected)
    assert not controller.state.can_redo


def test_painting_between_prompts_is_seen_by_the_next_prompt_and_kept_by_its_undo(controller):
    segmentation, segment_id = controller.segmentation_node, controller.state.segment_id
    place_point(controller, "positive", (18, 15, 6))
    controller.wait_idle(timeout=30)
    stroke = np.zeros(controller.volume.shape_kji, bool)
    stroke[10, 25:28, 28:31] = True
    paint(segmentation, segment_id, controller.volume, stroke | controller.interaction.current_mask().astype(bool))
    painted = segment_raw(controller)
    place_point(controller, "negative", (18, 15, 6))
    controller.wait_idle(timeout=30)
    assert controller.interaction.current_mask()[10, 25:28, 28:31].all()
    controller.undo()
    assert same_segment_contents(segment_raw(controller), painted)


def test_the_next_prompt_sees_segment_editor_painting_and_app_strokes_alike(controller):
    segmentation, segment_id = controller.segmentation_node, controller.state.segment_id
    editor_stroke = np.zeros(controller.volume.shape_kji, bool)
    editor_stroke[1, 2:5, 2:5] = True
    paint(segmentation, segment_id, controller.volume, editor_stroke)
    controller.record_edit(np.ones((1, 3, 3), np.uint8), Box((10, 25, 25), (11, 28, 28)))
    place_point(controller, "positive", (18, 15, 6))
    controller.wait_idle(timeout=30)
    seen = controller.session.result
    assert seen[1, 2:5, 2:5].all() and seen[10, 25:28, 25:28].all()
    controller.undo()
    controller.undo()  # the app stroke; the editor's stroke stays (it came before both)
    assert np.array_equal(controller.interaction.current_mask().astype(bool), editor_stroke)


def test_a_segment_editor_stroke_after_the_last_step_is_an_undo_step_of_its_own(controller):
    """Defect: a stroke made after the last step was no step: undo restored the step's box from
    its before-patch, overwriting the stroke there, and redo could not bring it back."""
    check_stroke_after_a_step_is_its_own_step(controller, lambda: place_point(controller, "positive", (18, 15, 6)))


def test_a_segment_editor_stroke_in_a_layer_shared_with_another_segment_is_undone_exactly(scene, method):
    volume = oblique_volume()
    volume_node = volume_node_from_volume(scene, volume, "phantom")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.CreateDefaultDisplayNodes()
    set_reference_geometry(segmentation, volume)
    lesion_id, organ_id = ensure_segment(segmentation, None, "Lesion"), ensure_segment(segmentation, None, "Organ")
    organ = np.zeros(volume.shape_kji, bool)
    organ[4:9, 12:18, 15:22] = True  # under the click
    paint(segmentation, organ_id, volume, organ)
    segmentation.GetSegmentation().CollapseBinaryLabelmaps()
    assert segmentation.GetSegmentation().GetNumberOfLayers() == 1
    controller = InteractionController(scene, method)
    try:
        controller.initialize(volume_node, segmentation, lesion_id, weights=WeightsChoice("demo"), device="cpu")
        controller.wait_idle(timeout=60)
        assert controller.state.segment_id == lesion_id
        check_stroke_after_a_step_is_its_own_step(
            controller, lambda: place_point(controller, "positive", (18, 15, 6)), others=(organ_id,))
        assert segmentation.GetSegmentation().GetNumberOfLayers() == 1
    finally:
        controller.close()


def test_a_stroke_shows_as_undoable_at_once_and_poll_takes_it_in_between_jobs(controller):
    segmentation, segment_id = controller.segmentation_node, controller.state.segment_id
    before = segment_raw(controller)
    stroke = np.zeros(controller.volume.shape_kji, bool)
    stroke[3, 4:7, 5:9] = True
    assert not controller.state.can_undo
    paint(segmentation, segment_id, controller.volume, stroke)  # the segmentation's event publishes the state
    assert controller.state.can_undo and not controller.interaction.can_undo
    controller.poll(0.0)  # between jobs: the stroke becomes a step
    assert controller.interaction.can_undo and controller.state.message == "Edit in Segment Editor: one undo step."
    painted = segment_raw(controller)
    controller.undo()
    assert same_segment_contents(segment_raw(controller), before) and not controller.state.can_undo
    controller.redo()
    assert same_segment_contents(segment_raw(controller), painted)
    # Two strokes taken in at one time are one step; a poll with nothing new records nothing.
    paint(segmentation, segment_id, controller.volume, np.roll(stroke, 5, axis=2))
    paint(segmentation, segment_id, controller.volume, np.roll(stroke, 10, axis=2))
    controller.poll(0.0)
    controller.poll(0.0)
    controller.undo()
    assert same_segment_contents(segment_raw(controller), painted)


def test_a_stroke_painted_while_a_prompt_runs_is_a_step_before_the_prompts(controller):
    segmentation, segment_id = controller.segmentation_node, controller.state.segment_id
    before = segment_raw(controller)
    controller.session.gate.clear()  # the model holds the click
    place_point(controller, "positive", (18, 15, 6))
    assert controller.busy
    stroke = np.zeros(controller.volume.shape_kji, bool)
    stroke[6, 14:17, 10:30] = True  # across the click's ball and beyond it
    stroke[2, 3:5, 3:5] = True  # far from it
    paint(segmentation, segment_id, controller.volume, stroke)
    painted = segment_raw(controller)
    controller.session.gate.set()
    controller.wait_idle(timeout=30)
    clicked = segment_raw(controller)
    assert controller.interaction.current_mask()[2, 3:5, 3:5].all()  # the click kept the far stroke
    place_point(controller, "negative", (18, 15, 6))
    controller.wait_idle(timeout=30)
    assert controller.session.result[2, 3:5, 3:5].all()  # the next prompt saw the far stroke

    controller.undo()  # the negative click
    assert same_segment_contents(segment_raw(controller), clicked)
    controller.undo()  # the click: the stroke is back where the click wrote
    assert same_segment_contents(segment_raw(controller), painted)
    controller.undo()  # the stroke
    assert same_segment_contents(segment_raw(controller), before) and not controller.state.can_undo
    controller.redo()
    controller.redo()
    assert same_segment_contents(segment_raw(controller), clicked)


def test_reset_clears_prompts_and_segment_as_one_step(controller):
    place_point(controller, "positive", (18, 15, 6))
    controller.wait_idle(timeout=30)
    clicked, points = segment_raw(controller), markups_positions(controller, "positive")
    controller.reset()
    assert not controller.interaction.current_mask().any() and markups_positions(controller, "positive") == []
    controller.undo()
    assert same_segment_contents(segment_raw(controller), clicked)
    assert markups_positions(controller, "positive") == points


def test_next_segment_moves_on_and_keeps_the_last_one(controller):
    place_point(controller, "positive", (18, 15, 6))
    controller.wait_idle(timeout=30)
    first_id, first = controller.state.segment_id, segment_raw(controller)
    controller.next_segment()
    controller.wait_idle(timeout=30)
    second_id = controller.state.segment_id
    assert second_id != first_id and not controller.state.can_undo
    assert markups_positions(controller, "positive") == []
    assert same_segment_contents(raw_labelmap(controller.segmentation_node, first_id), first)
    segment_ids = list(controller.segmentation_node.GetSegmentation().GetSegmentIDs())
    assert segment_ids == [first_id, second_id]


# --- propagation ------------------------------------------------------------------------------
def test_propagation_within_a_slice_range_never_writes_outside_it(controller):
    controller.slice_range = (3, 8)
    place_point(controller, "positive", (18, 15, 5))
    controller.propagate()  # queued behind the click: the range limits are computed after it ran
    controller.wait_idle(timeout=30)
    assert controller.state.confirmed_slices == (2, 5, 9)
    mask = controller.interaction.current_mask()
    assert all(mask[k].any() for k in range(3, 9)) and not mask[:3].any() and not mask[9:].any()
    assert controller.state.progress is None and "propagation" in controller.state.message.lower()


def test_confirm_a_corrected_slice_and_propagate_the_correction(controller):
    place_point(controller, "positive", (18, 15, 5))
    controller.propagate()
    controller.wait_idle(timeout=30)
    assert controller.state.pending_slices == ()
    controller.propagate_correction()
    controller.wait_idle(timeout=30)
    assert controller.state.error == "confirm a corrected slice first"
    brush = np.ones((1, 4, 4), np.uint8)
    controller.record_edit(brush, Box((9, 2, 2), (10, 6, 6)))  # the user corrects slice 9
    controller.confirm_slice(9)
    controller.wait_idle(timeout=30)
    assert 9 in controller.state.confirmed_slices and controller.state.pending_slices == (9,)
    controller.propagate_correction()
    controller.wait_idle(timeout=30)
    assert controller.interaction.current_mask()[11, 2:6, 2:6].all()
    assert controller.state.pending_slices == ()


def test_cancel_stops_a_propagation_and_keeps_what_was_done_as_one_step(controller):
    place_point(controller, "positive", (18, 15, 5))
    controller.wait_idle(timeout=30)
    clicked = segment_raw(controller)
    session = controller.session
    session.hold_after, _ = 3, session.unit_gate.clear()
    controller.propagate()
    poll_until(controller, lambda state: state.progress is not None and state.progress[0] == 3)
    assert controller.state.progress == (3, 11) and controller.state.busy
    controller.cancel()
    session.unit_gate.set()
    controller.wait_idle(timeout=30)
    assert "cancelled after 3 of 11 slices" in controller.state.message
    assert controller.state.pending_slices == (5,) and controller.state.progress is None
    partly = controller.interaction.current_mask()
    assert partly[[0, 1, 2]].any() and not partly[6:].any()
    controller.undo()
    assert same_segment_contents(segment_raw(controller), clicked)


def test_following_the_view_gives_the_session_the_normal_of_the_view_prompted_in(controller, scene):
    """A point placed in a sagittal view lies on that view's plane: the session slices across it."""
    from volsam.geometry import closest_voxel_axis

    controller.follow_view = True
    point = ras_of(controller, (18, 15, 6))
    sagittal = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    sagittal.SetLayoutName("Yellow")
    sagittal.SetOrientationToSagittal()
    sagittal.JumpSliceByCentering(*point)
    place_point(controller, "positive", (18, 15, 6))
    controller.wait_idle(timeout=30)
    assert controller.session.slice_axis == closest_voxel_axis(controller.volume, (1.0, 0.0, 0.0)) == 0  # i
    assert controller.view_across_slicing_axis() is sagittal
    assert controller.slice_index_in_view(sagittal) == 18


def test_initializing_again_on_another_volume_reuses_the_model(controller, scene, method):
    other = volume_node_from_volume(scene, oblique_volume(), "second phantom")
    first_session = controller.session
    controller.initialize(other, weights=WeightsChoice("demo"), device="cpu")
    controller.wait_idle(timeout=30)
    assert controller.state.ready and method.loads == 1 and first_session.closed
    assert controller.session is not first_session and controller.volume.array.shape == (12, 30, 34)


def test_range_limits_are_the_slices_just_outside_the_range():
    assert range_boundary_slices(10, (), 2, 7) == [1, 8]
    assert range_boundary_slices(10, (1,), 0, 7) == [8]
    with pytest.raises(ValueError, match="within 0..9"):
        range_boundary_slices(10, (), 3, 10)


# --- defect 7: changes while a job runs ---------------------------------------------------
def test_a_segment_selected_during_a_job_is_used_after_it(controller):
    """A segment change during a job used to be dropped (the widget ignored it while busy)."""
    first_id = controller.state.segment_id
    segmentation = controller.segmentation_node
    other_id = segmentation.GetSegmentation().AddEmptySegment("", "Other")
    controller.session.gate.clear()
    place_point(controller, "positive", (18, 15, 6))
    assert controller.state.busy
    controller.select_segment(segmentation, other_id)
    controller.session.gate.set()
    controller.wait_idle(timeout=30)
    assert controller.state.segment_id == other_id
    assert raw_labelmap(segmentation, first_id)[2].any()  # the click's result is in the first segment
    assert not controller.interaction.current_mask().any()


def test_the_confirmed_slices_are_never_read_while_the_worker_changes_them(controller):
    """SAM2Volume's step chain read the session's confirmed slices on the main thread during a job."""
    session = controller.session
    place_point(controller, "positive", (18, 15, 5))
    controller.slice_range = (2, 9)
    controller.propagate()
    session.hold_after, _ = 2, session.unit_gate.clear()
    poll_until(controller, lambda state: state.progress == (2, 9))  # the main loop polls meanwhile
    assert controller.state.busy and controller.state.confirmed_slices == (1, 5, 10)  # as the run started
    session.unit_gate.set()
    controller.wait_idle(timeout=30)
    assert controller.state.confirmed_slices == (1, 5, 10)
    assert session.slices_read_while_working == 0


def test_requests_made_during_a_job_run_after_it_in_order(controller):
    """Undo pressed while a click runs undoes that click once it has landed, not the step before."""
    session = controller.session
    session.gate.clear()
    place_point(controller, "positive", (18, 15, 6))
    controller.undo()
    controller.redo()
    controller.undo()
    assert controller.state.busy and not controller.state.can_undo
    session.gate.set()
    controller.wait_idle(timeout=30)
    assert not controller.interaction.current_mask().any() and controller.state.can_redo
    assert markups_positions(controller, "positive") == []


def test_a_volume_changed_during_a_job_is_reopened_before_the_next_prompt(controller, scene):
    session = controller.session
    session.gate.clear()
    place_point(controller, "positive", (18, 15, 6))
    volume_node = scene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
    slicer.util.updateVolumeFromArray(volume_node, slicer.util.arrayFromVolume(volume_node) * 2)
    session.gate.set()
    controller.wait_idle(timeout=30)
    clicked = controller.interaction.current_mask().copy()
    assert clicked.any() and controller.volume.array.max() == 100  # the click ran on the volume it saw
    place_point(controller, "positive", (10, 20, 4))
    controller.wait_idle(timeout=30)
    assert session.calls == ["open_volume", "points", "open_volume", "points"]
    assert controller.volume.array.max() == 200 and (controller.interaction.current_mask() >= clicked).all()


def test_closing_the_scene_during_a_job_drops_it_and_lets_go_of_every_node(controller, scene):
    session = controller.session
    session.gate.clear()
    place_point(controller, "positive", (18, 15, 6))
    assert controller.state.busy
    scene.Clear(0)
    session.gate.set()
    controller.wait_idle(timeout=30)
    state = controller.state
    assert not state.ready and not state.busy and state.error is None, state
    assert controller.interaction is None and controller.segmentation_node is None and session.closed
    controller.undo()  # nothing to act on: a message, not an exception
    assert controller.state.error == "press Initialize first"


def test_removing_the_segmentation_lets_go_of_it(controller, scene):
    positive, session = controller.prompt_node("positive"), controller.session
    scene.RemoveNode(controller.segmentation_node)
    assert not controller.state.ready and controller.segmentation_node is None and session.closed
    assert controller.state.message == "'phantom lesions' was removed: press Initialize again."
    positive.AddControlPointWorld(vtk.vtkVector3d(0, 0, 0))  # no longer observed: nothing runs
    assert not controller.state.busy and session.calls == ["open_volume"]


def test_cancel_during_loading_cancels_it(scene, method):
    """Cancel on the loading dialog used to do nothing."""
    controller = InteractionController(scene, method)
    try:
        volume_node = volume_node_from_volume(scene, oblique_volume(), "phantom")
        method.load_gate.clear()
        controller.initialize(volume_node, device="cpu")
        assert controller.state.busy and not controller.state.ready
        controller.cancel()
        method.load_gate.set()
        controller.wait_idle(timeout=30)
        assert not controller.state.ready and "cancelled" in controller.state.message
        assert method.sessions and method.sessions[-1].closed
    finally:
        controller.close()


def test_prompts_and_propagation_before_initialize_say_what_to_do(scene, method):
    controller = InteractionController(scene, method)
    try:
        assert not controller.state.ready and not controller.state.busy
        controller.propagate()
        assert controller.state.error == "press Initialize first"
        controller.prompt_node("positive").AddControlPointWorld(vtk.vtkVector3d(0, 0, 0))
        assert controller.state.error == "press Initialize first" and not controller.state.busy
    finally:
        controller.close()


def test_a_method_without_boxes_has_no_box_prompt(scene):
    controller = InteractionController(scene, StandInMethod("PointsOnly", capabilities=("points",)))
    try:
        assert controller.prompt_roles == ("positive", "negative")
        with pytest.raises(ValueError, match="takes points, not boxes"):
            controller.prompt_node("box")
    finally:
        controller.close()


def test_the_placing_state_follows_the_interaction_node(controller, scene):
    """The box button's checked state never followed placement: it now follows the state."""
    seen = []
    controller.add_listener(lambda state: seen.append(state.placing))
    controller.start_placing("box")
    assert controller.state.placing == "box"
    interaction = scene_interaction_node(scene)
    interaction.SetCurrentInteractionMode(interaction.ViewTransform)
    assert controller.state.placing is None and seen[-2:] == ["box", None]
    controller.start_placing("negative")
    assert controller.state.placing == "negative"


def test_weights_needed_is_handed_to_the_front_end(scene, method):
    from volsam.weights.download import CATALOG, WeightsNeeded

    controller = InteractionController(scene, method)
    try:
        method.load_error = WeightsNeeded(CATALOG["sam-vit-b"], "the frozen image encoder is needed")
        controller.initialize(volume_node_from_volume(scene, oblique_volume(), "phantom"), device="cpu")
        controller.wait_idle(timeout=30)
        needed = controller.state.weights_needed
        assert needed is not None and needed.entry.key == "sam-vit-b" and not controller.state.ready
        assert "sam_vit_b_01ec64.pth is needed" in controller.state.message
    finally:
        controller.close()


def test_a_changed_volume_is_sent_to_the_model_again_before_the_next_prompt(controller, scene):
    volume_node = scene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
    slicer.util.updateVolumeFromArray(volume_node, slicer.util.arrayFromVolume(volume_node) + 1)
    place_point(controller, "positive", (18, 15, 6))
    controller.wait_idle(timeout=30)
    assert controller.session.calls == ["open_volume", "open_volume", "points"]
    assert controller.volume.array.min() == 1 and controller.interaction.current_mask().any()


# --- defect 1: waiting releases the GIL -------------------------------------------------------
def test_poll_waits_for_the_job_in_a_call_that_lets_the_worker_run(controller):
    """The widget polled ``future.done()`` from a timer: a job made progress only while the main
    thread was in Python. ``poll(timeout)`` waits in a GIL-releasing call and returns as soon as
    the job is done (so one call is enough for a job that needs the GIL throughout)."""
    place_busy = threading.Event()

    def python_bound_work(*args, **kwargs):
        place_busy.set()
        total = 0
        for value in range(200_000):  # pure Python: needs the GIL all along
            total += value
        return original(*args, **kwargs)

    session = controller.session
    original = session.add_points
    session.add_points = python_bound_work
    controller.auto_run = False
    place_point(controller, "positive", (18, 15, 6))
    controller.run_pending()
    assert controller.state.busy
    assert controller.poll(timeout=60) is True
    assert place_busy.is_set() and not controller.state.busy and controller.interaction.current_mask().any()


# --- defect 7: quitting never waits for a job -------------------------------------------------
def test_the_model_thread_never_keeps_the_application_from_quitting():
    """The old executor's threads were joined at exit, so Slicer waited for a running job."""
    code = textwrap.dedent(f"""
        import sys, threading
        sys.path.insert(0, {str(ROOT)!r})
        from volsam.mrml.worker import ModelWorker
        worker = ModelWorker()
        started = threading.Event()
        worker.submit(lambda: (started.set(), threading.Event().wait()))
        started.wait()
        print("quitting")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and "quitting" in result.stdout, result.stderr
    assert ModelWorker().thread.daemon


# --- defect 6: collections released ----------------------------------------------------------
def test_looking_up_prompt_nodes_does_not_keep_removed_nodes_alive(scene):
    """``GetNodesByClass`` returns a collection its caller owns; it was never released, so every
    markups node it held lived on after removal."""
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "a user's markups")
    reference = vtk.vtkWeakReference()
    reference.Set(node)
    for _ in range(3):
        prompt_markups_node(scene, "Owner", "positive")
    scene.RemoveNode(node)
    del node
    assert reference.Get() is None
