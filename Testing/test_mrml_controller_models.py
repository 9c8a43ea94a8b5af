"""The interaction controller with the shipped demo models, through the registry, on real MRML.

The must-show sequence of the Slicer modules, as a user makes it: clicks placed as markups
control points, a box drawn as a ROI, a stroke painted, a propagation, a corrected slice confirmed and its correction
propagated (SAM2-3dMed); then undo to
the start and redo to the end, the segment compared bit for bit with what it was at every step.
The phantom is small (and the masks are checked to find its lesion), so the run stays short.
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")
torch = pytest.importorskip("torch")

from conftest_mrml import (  # noqa: E402
    check_stroke_after_a_step_is_its_own_step,
    paint,
    raw_labelmap,
    same_segment_contents,
)
from conftest_sam2 import single_thread_torch  # noqa: E402,F401  (autouse: one torch thread on shared CI)

from volsam.geometry import Box  # noqa: E402
from volsam.methods import SessionSettings, WeightsChoice, get_method  # noqa: E402
from volsam.mrml import standalone_scene, volume_node_from_volume  # noqa: E402
from volsam.mrml.controller import InteractionController  # noqa: E402
from volsam.phantoms import TUMOR_LABEL, PhantomConfig, make_phantom  # noqa: E402

PHANTOM = PhantomConfig(size_ijk=(64, 64, 24), spacing_ijk=(1.0, 1.0, 2.0), rotation_deg_ras=(0, 0, 12),
                        lesions_per_case=(1, 1), lesion_diameter_median_mm=22.0)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(5, PHANTOM)


def open_controller(method_name, phantom, settings=None):
    image, labels, info = phantom
    scene = standalone_scene()
    volume_node = volume_node_from_volume(scene, image, "phantom")
    controller = InteractionController(scene, get_method(method_name))
    controller.initialize(volume_node, weights=WeightsChoice("demo"), settings=settings or SessionSettings(),
                          device="cpu")
    controller.wait_idle(timeout=600)
    assert controller.state.ready, controller.state
    return controller


def lesion_ras(phantom):
    image, _, info = phantom
    return image.ijk_to_ras_points(np.array(info.lesions[0].center_ijk, float))


def dice(controller, phantom) -> float:
    _, labels, _ = phantom
    mask, truth = controller.interaction.current_mask().astype(bool), labels.array == TUMOR_LABEL
    return 2 * (mask & truth).sum() / (mask.sum() + truth.sum())


def segment_raw(controller):
    return raw_labelmap(controller.segmentation_node, controller.state.segment_id)


def undo_redo_all(controller, states) -> None:
    """Undo to the first state and redo to the last, comparing the raw labelmap at every step."""
    for expected in reversed(states[:-1]):
        controller.undo()
        assert same_segment_contents(segment_raw(controller), expected)
    assert not controller.state.can_undo
    for expected in states[1:]:
        controller.redo()
        assert same_segment_contents(segment_raw(controller), expected)
    assert not controller.state.can_redo


def test_samadapt3d_clicks_and_painting_undo_and_redo_bit_exactly(phantom):
    controller = open_controller("sam3d-adapter", phantom)
    try:
        volume = controller.volume
        stroke = np.zeros(volume.shape_kji, bool)
        stroke[1:3, 2:6, 2:6] = True
        states = [segment_raw(controller)]
        paint(controller.segmentation_node, controller.state.segment_id, volume, stroke)  # Segment Editor: a step
        states.append(segment_raw(controller))
        controller.prompt_node("positive").AddControlPointWorld(vtk.vtkVector3d(*lesion_ras(phantom)))
        controller.wait_idle(timeout=600)
        assert dice(controller, phantom) > 0.6
        states.append(segment_raw(controller))
        controller.record_edit(np.ones((1, 3, 3), np.uint8), Box((20, 50, 50), (21, 53, 53)))  # app stroke
        states.append(segment_raw(controller))
        outside = lesion_ras(phantom) + np.array([0.0, 0.0, 4.0])
        controller.prompt_node("negative").AddControlPointWorld(vtk.vtkVector3d(*outside))
        controller.wait_idle(timeout=600)
        states.append(segment_raw(controller))
        assert controller.state.error is None, controller.state
        undo_redo_all(controller, states)
        assert controller.prompt_node("positive").GetNumberOfControlPoints() == 1
        assert controller.prompt_node("negative").GetNumberOfControlPoints() == 1
    finally:
        controller.close()


def test_samadapt3d_a_segment_editor_stroke_after_a_click_is_an_undo_step_of_its_own(phantom):
    controller = open_controller("sam3d-adapter", phantom)
    try:
        node = controller.prompt_node("positive")
        check_stroke_after_a_step_is_its_own_step(
            controller, lambda: node.AddControlPointWorld(vtk.vtkVector3d(*lesion_ras(phantom))))
        assert dice(controller, phantom) > 0.6  # the stroke is small: the click's mask stays
    finally:
        controller.close()


def test_sam2volume_point_box_paint_and_propagation_undo_and_redo_bit_exactly(phantom):
    controller = open_controller("sam2-3dmed", phantom, SessionSettings(slice_direction="axial"))
    try:
        image, _, info = phantom
        centre_k = info.lesions[0].center_ijk[2]
        controller.prompt_node("positive").AddControlPointWorld(vtk.vtkVector3d(*lesion_ras(phantom)))
        controller.wait_idle(timeout=600)
        states = [segment_raw(controller)]  # after the click
        assert controller.state.confirmed_slices == (centre_k,)

        # A box on a slice two above, drawn as a ROI around the lesion.
        roi = controller.prompt_node("box")
        controller.start_placing("box")
        centre = np.array(info.lesions[0].center_ijk, float) + (0, 0, 2)
        roi.AddControlPointWorld(vtk.vtkVector3d(*image.ijk_to_ras_points(centre)))
        radius = info.lesions[0].diameter_mm / 2 + 3
        roi.SetSize(2 * radius, 2 * radius, 1.0)
        interaction = controller.scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
        interaction.SetCurrentInteractionMode(interaction.ViewTransform)
        controller.wait_idle(timeout=600)
        assert controller.state.confirmed_slices == (centre_k, centre_k + 2)
        states.append(segment_raw(controller))

        controller.record_edit(np.ones((1, 4, 4), np.uint8), Box((centre_k, 2, 2), (centre_k + 1, 6, 6)))
        states.append(segment_raw(controller))
        controller.propagate()
        controller.wait_idle(timeout=600)
        states.append(segment_raw(controller))
        assert dice(controller, phantom) > 0.6 and controller.state.pending_slices == ()
        assert controller.state.error is None, controller.state

        # Correct a slice away from the prompts, confirm it, propagate the correction.
        corrected = centre_k - 3
        controller.record_edit(np.ones((1, 3, 3), np.uint8), Box((corrected, 58, 58), (corrected + 1, 61, 61)))
        states.append(segment_raw(controller))
        controller.confirm_slice(corrected)
        controller.wait_idle(timeout=600)
        assert controller.state.pending_slices == (corrected,)
        states.append(segment_raw(controller))
        controller.propagate_correction()
        controller.wait_idle(timeout=600)
        assert controller.state.pending_slices == () and controller.state.error is None, controller.state
        assert controller.interaction.current_mask()[corrected, 58:61, 58:61].all()
        states.append(segment_raw(controller))

        for expected in reversed(states[:-1]):
            controller.undo()
            assert same_segment_contents(segment_raw(controller), expected)
        controller.undo()  # the first click: nothing left
        assert not controller.interaction.current_mask().any() and not controller.state.can_undo
        assert controller.state.confirmed_slices == () and roi.GetNumberOfControlPoints() == 0
        for expected in states:
            controller.redo()
            assert same_segment_contents(segment_raw(controller), expected)
        assert roi.GetNumberOfControlPoints() == 1
        assert controller.state.confirmed_slices == (centre_k - 3, centre_k, centre_k + 2)
    finally:
        controller.close()
