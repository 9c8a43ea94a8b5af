"""Clicks -> session -> segment through the MRML layer, on real slicer-core nodes.

``RegionGrowSession`` below is a stand-in *session* (not a stand-in for MRML): it follows the
session API of :mod:`volsam.sessions` and segments by growing a region of similar intensity
around each click, so the MRML glue can be checked before the demo model exists. The demo
model's run of the same test is skipped until the model is in ``volsam``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from conftest import rotation  # noqa: E402
from scipy import ndimage  # noqa: E402
from test_mrml_segments import same_points, segment_voxels_world  # noqa: E402

from volsam.geometry import Box, Volume  # noqa: E402
from volsam.mrml import (  # noqa: E402
    SegmentInteraction,
    SessionUndoRules,
    control_point_ras,
    ensure_segment,
    point_prompt_from_control_point,
    standalone_scene,
    volume_from_node,
    volume_node_from_volume,
)
from volsam.mrml.nodes import vtk_from_matrix  # noqa: E402
from volsam.phantoms import TUMOR_LABEL, PhantomConfig, make_phantom  # noqa: E402
from volsam.prompts import PointPrompt, point_prompt  # noqa: E402
from volsam.sessions.history import MaskHistory  # noqa: E402


class RegionGrowSession:
    """Session API stand-in: a positive click adds the connected region of voxels within
    ``tolerance`` of the clicked voxel's value and within ``radius_mm`` of it; a negative
    click removes that region. Every click is one undo step, changed or not; reset is not."""

    undo_rules = SessionUndoRules(unchanged_prompts=True, reset=False)

    def __init__(self, tolerance: float = 25.0, radius_mm: float = 30.0):
        self.tolerance = tolerance
        self.radius_mm = radius_mm
        self.prompts: list[PointPrompt] = []
        self._undone: list[PointPrompt] = []
        self._changed: list[bool] = []
        self._redo_changed: list[bool] = []

    def open_volume(self, volume: Volume) -> None:
        self.volume = volume

    def set_target_buffer(self, buffer: np.ndarray) -> None:
        self.buffer = buffer
        self.history = MaskHistory(buffer)

    def add_point(self, ras, positive: bool = True) -> Box | None:
        prompt = point_prompt(self.volume, ras, "ras", positive)
        centre = np.array(prompt.voxel_kji)
        reach = np.ceil(self.radius_mm / self.volume.spacing[::-1]).astype(int)
        box = Box(centre - reach, centre + reach + 1).clip_to(self.volume.shape_kji)
        k, j, i = np.indices(box.shape)
        ijk = np.stack([i + box.start[2], j + box.start[1], k + box.start[0]], -1).reshape(-1, 3).astype(float)
        near = (np.linalg.norm(self.volume.ijk_to_ras_points(ijk) - np.asarray(ras), axis=1)
                <= self.radius_mm).reshape(box.shape)
        values = self.volume.array[box.slices].astype(float)
        similar = near & (np.abs(values - self.volume.array[tuple(centre)]) <= self.tolerance)
        regions, _ = ndimage.label(similar)
        region = regions == regions[tuple(centre - np.array(box.start))]
        current = self.buffer[box.slices].astype(bool)
        new = (current | region) if prompt.positive else (current & ~region)
        changed = self.history.commit(new.astype(np.uint8), box, "click")
        self.prompts.append(prompt)
        self._changed.append(changed is not None)
        self._undone.clear()
        self._redo_changed.clear()
        return changed

    def undo(self) -> Box | None:
        if not self.prompts:
            return None
        self._undone.append(self.prompts.pop())
        changed = self._changed.pop()
        self._redo_changed.append(changed)
        return self.history.undo() if changed else None

    def redo(self) -> Box | None:
        if not self._undone:
            return None
        self.prompts.append(self._undone.pop())
        changed = self._redo_changed.pop()
        self._changed.append(changed)
        return self.history.redo() if changed else None

    def reset(self) -> Box | None:
        self.buffer[:] = 0
        self.history.clear()
        self.prompts.clear()
        self._changed.clear()
        self._undone.clear()
        self._redo_changed.clear()
        return Box.full(self.buffer.shape)

    @property
    def result(self) -> np.ndarray:
        return self.buffer


def tiny_random_adapter_session():
    """The real 3DSAM-adapter session around a tiny, randomly initialised model: real session
    logic and undo rules, meaningless masks."""
    from volsam.models.sam3d_adapter import build_sam3d_adapter
    from volsam.sessions.adapter_session import AdapterSession

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return AdapterSession(build_sam3d_adapter("tiny").eval(), "cpu")


def demo_adapter_session():
    """The 3DSAM-adapter session with the project's demo model."""
    from volsam.methods import WeightsChoice, get_method

    method = get_method("sam3d-adapter")
    return method.open_session(method.load_model(WeightsChoice(weights="demo"), "cpu"))


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # VolumetricSAMLib, as Slicer installs it
from VolumetricSAMLib.models import ADAPTER_UNDO_RULES as ADAPTER_RULES  # noqa: E402  (what the module uses)

# name: (session factory, undo rules, whether its masks are meant to find the lesion)
SESSIONS = {
    "region-grow": (RegionGrowSession, RegionGrowSession.undo_rules, True),
    "tiny-random-adapter": (tiny_random_adapter_session, ADAPTER_RULES, False),
    "demo-adapter": (demo_adapter_session, ADAPTER_RULES, True),
}


PHANTOM = PhantomConfig(size_ijk=(56, 48, 28), spacing_ijk=(1.6, 1.9, 3.5), rotation_deg_ras=(12, -18, 28),
                        flip_ijk=(True, False, False), lesions_per_case=(1, 1), lesion_diameter_median_mm=24.0,
                        noise_std_hu=2.0, texture_std_hu=1.0, hypodense_fraction=0.0,
                        lesion_contrast_hu_range=(70.0, 80.0))


@pytest.fixture
def scene():
    return standalone_scene()


@pytest.fixture(scope="module")
def phantom():
    image, labels, info = make_phantom(11, PHANTOM)
    return image, labels, info


def transformed_phantom_node(scene, image):
    """The phantom as a volume node under a rotating linear transform (as after registration)."""
    node = volume_node_from_volume(scene, image, "phantom")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    matrix = np.eye(4)
    matrix[:3, :3] = rotation((8, 0, -20))
    matrix[:3, 3] = (15.0, -40.0, 22.0)
    transform.SetMatrixTransformToParent(vtk_from_matrix(matrix))
    node.SetAndObserveTransformNodeID(transform.GetID())
    return node, matrix


def start(scene, volume_node, session, undo_rules=RegionGrowSession.undo_rules):
    volume = volume_from_node(volume_node)
    session.open_volume(volume)
    interaction = SegmentInteraction(session, volume, undo_rules)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segmentation")
    interaction.set_segment(segmentation, ensure_segment(segmentation, None, "Lesion"))
    return volume, interaction, segmentation


def click(interaction, volume, markups, ras, positive=True):
    """Place a markups point where the user sees ``ras`` and run the session on it."""
    index = markups.AddControlPointWorld(vtk.vtkVector3d(*ras))
    point_prompt_from_control_point(volume, markups, index, positive)  # inside the image
    placed = control_point_ras(markups, index)
    return interaction.run_step(lambda session: session.add_point(placed, positive), "click", tag=index)


def paint(segmentation, segment_id, volume: Volume, mask: np.ndarray) -> None:
    """Paint as Segment Editor does: merge a modifier labelmap into the segment through Slicer."""
    modifier = slicer.vtkOrientedImageData()
    modifier.SetExtent(0, volume.shape_ijk[0] - 1, 0, volume.shape_ijk[1] - 1, 0, volume.shape_ijk[2] - 1)
    modifier.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    modifier.SetImageToWorldMatrix(vtk_from_matrix(volume.ijk_to_ras))
    from vtk.util import numpy_support
    numpy_support.vtk_to_numpy(modifier.GetPointData().GetScalars())[:] = mask.astype(np.uint8).ravel()
    assert slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        modifier, segmentation, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MAX)


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


def click_the_lesion(scene, phantom, session_kind):
    """The must-show scenario: an oblique, flipped, anisotropic phantom under a linear transform,
    a positive markups point placed on the lesion in world RAS, one run through the MRML layer."""
    make_session, undo_rules, _ = SESSIONS[session_kind]
    session = make_session()
    image, _, info = phantom
    assert np.linalg.det(image.ijk_to_ras[:3, :3]) < 0 and len(set(np.round(image.spacing, 3))) == 3
    assert not np.allclose(np.abs(image.direction_ras), np.eye(3), atol=0.1)  # oblique
    volume_node, to_world = transformed_phantom_node(scene, image)
    volume, interaction, segmentation = start(scene, volume_node, session, undo_rules)
    lesion_world = (to_world @ np.append(info.lesions[0].center_ras, 1.0))[:3]
    positive = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "positive")
    box = click(interaction, volume, positive, lesion_world)
    return session, volume, interaction, segmentation, box, lesion_world


@pytest.mark.parametrize("session_kind", SESSIONS)
def test_the_session_mask_lands_in_the_segment_where_it_is_in_the_world(scene, phantom, session_kind):
    session, volume, interaction, segmentation, box, _ = click_the_lesion(scene, phantom, session_kind)
    assert box is not None and session.result[box.slices].any()
    k, j, i = np.nonzero(session.result)
    assert same_points(segment_voxels_world(segmentation, interaction.segment_id),
                       volume.ijk_to_ras_points(np.stack([i, j, k], 1).astype(float)))


@pytest.mark.parametrize("session_kind", [kind for kind, (_, _, finds) in SESSIONS.items() if finds])
def test_the_segment_is_around_the_clicked_lesion_in_ras(scene, phantom, session_kind):
    _, volume, interaction, segmentation, _, lesion_world = click_the_lesion(scene, phantom, session_kind)
    _, labels, info = phantom
    voxels = segment_voxels_world(segmentation, interaction.segment_id)
    truth = labels.array == TUMOR_LABEL
    k, j, i = np.nonzero(truth)
    truth_world = volume.ijk_to_ras_points(np.stack([i, j, k], 1).astype(float))
    radius = info.lesions[0].diameter_mm / 2
    # Its centre near the lesion's, its voxels within the lesion's reach, most of the lesion covered.
    assert np.linalg.norm(voxels.mean(axis=0) - truth_world.mean(axis=0)) < radius / 2
    assert np.max(np.linalg.norm(voxels - lesion_world, axis=1)) < 2.5 * radius
    got = interaction.current_mask().astype(bool)
    assert 2 * (got & truth).sum() / (got.sum() + truth.sum()) > 0.7


@pytest.mark.parametrize("session_kind", ["region-grow", "tiny-random-adapter"])
def test_undo_after_three_clicks_restores_the_painted_segment_exactly(scene, phantom, session_kind):
    make_session, undo_rules, _ = SESSIONS[session_kind]
    image, _, info = phantom
    volume_node, to_world = transformed_phantom_node(scene, image)
    volume, interaction, segmentation = start(scene, volume_node, make_session(), undo_rules)
    segment_id = interaction.segment_id
    markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    # The user painted two strokes before clicking, one of them across the lesion.
    strokes = np.zeros(volume.shape_kji, bool)
    lesion_kji = np.array(info.lesions[0].center_ijk[::-1])
    strokes[tuple(slice(c - 2, c + 3) for c in lesion_kji)] = True
    strokes[2:5, 3:9, 4:12] = True
    paint(segmentation, segment_id, volume, strokes)
    painted = raw_labelmap(segmentation, segment_id)

    lesion_world = (to_world @ np.append(info.lesions[0].center_ras, 1.0))[:3]
    body_world = volume.ijk_to_ras_points(np.array([8.0, 24.0, 14.0]))
    click(interaction, volume, markups, lesion_world)
    after_first = raw_labelmap(segmentation, segment_id)
    click(interaction, volume, markups, body_world)
    click(interaction, volume, markups, lesion_world, positive=False)
    after_third = raw_labelmap(segmentation, segment_id)
    assert not same_segment_contents(after_third, painted)

    tags = [interaction.undo().tag for _ in range(3)]

    assert tags == [2, 1, 0]
    assert same_segment_contents(raw_labelmap(segmentation, segment_id), painted)
    assert interaction.undo() is None
    assert np.array_equal(interaction.current_mask().astype(bool), strokes)
    for _ in range(3):
        interaction.redo()
    assert same_segment_contents(raw_labelmap(segmentation, segment_id), after_third)
    interaction.undo()
    interaction.undo()
    assert same_segment_contents(raw_labelmap(segmentation, segment_id), after_first)


def test_painting_between_clicks_is_kept_by_undo_and_seen_by_the_next_click(scene, phantom):
    image, _, info = phantom
    volume_node, to_world = transformed_phantom_node(scene, image)
    session = RegionGrowSession()
    volume, interaction, segmentation = start(scene, volume_node, session)
    segment_id = interaction.segment_id
    markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    lesion_world = (to_world @ np.append(info.lesions[0].center_ras, 1.0))[:3]
    click(interaction, volume, markups, lesion_world)
    stroke = np.zeros(volume.shape_kji, bool)
    stroke[20:24, 2:6, 2:6] = True  # far from the lesion
    paint(segmentation, segment_id, volume, stroke)
    painted = raw_labelmap(segmentation, segment_id)

    click(interaction, volume, markups, volume.ijk_to_ras_points(np.array([8.0, 24.0, 14.0])))

    assert session.buffer[20:24, 2:6, 2:6].all()  # the session started from what the user sees
    assert interaction.current_mask()[20:24, 2:6, 2:6].all()
    interaction.undo()
    assert same_segment_contents(raw_labelmap(segmentation, segment_id), painted)


def test_undo_in_a_shared_layer_gives_the_other_segment_its_voxels_back(scene, phantom):
    image, _, info = phantom
    volume_node, to_world = transformed_phantom_node(scene, image)
    volume, interaction, segmentation = start(scene, volume_node, RegionGrowSession())
    other_id = ensure_segment(segmentation, None, "Organ")
    lesion_kji = np.array(info.lesions[0].center_ijk[::-1])
    organ = np.zeros(volume.shape_kji, bool)
    organ[tuple(slice(c - 3, c + 4) for c in lesion_kji)] = True
    paint(segmentation, other_id, volume, organ)
    segmentation.GetSegmentation().CollapseBinaryLabelmaps()
    assert segmentation.GetSegmentation().GetNumberOfLayers() == 1
    before = raw_labelmap(segmentation, other_id)
    markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")

    click(interaction, volume, markups, (to_world @ np.append(info.lesions[0].center_ras, 1.0))[:3])
    assert not same_segment_contents(raw_labelmap(segmentation, other_id), before)  # the lesion took organ voxels
    interaction.undo()

    assert same_segment_contents(raw_labelmap(segmentation, other_id), before)


def test_reset_clears_the_segment_and_undo_brings_it_back(scene, phantom):
    image, _, info = phantom
    volume_node, to_world = transformed_phantom_node(scene, image)
    session = RegionGrowSession()
    volume, interaction, segmentation = start(scene, volume_node, session)
    markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    click(interaction, volume, markups, (to_world @ np.append(info.lesions[0].center_ras, 1.0))[:3])
    clicked = raw_labelmap(segmentation, interaction.segment_id)

    interaction.reset()
    assert not interaction.current_mask().any() and not session.prompts
    interaction.undo()
    assert same_segment_contents(raw_labelmap(segmentation, interaction.segment_id), clicked)
    assert not session.prompts  # the session's prompts stay forgotten


def test_a_failing_prompt_leaves_segment_and_buffer_consistent(scene, phantom):
    image, _, _ = phantom
    volume_node, _ = transformed_phantom_node(scene, image)
    _, interaction, _ = start(scene, volume_node, RegionGrowSession())

    def broken(session):
        session.buffer[:] = 1
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        interaction.run_step(broken)
    assert not interaction.current_mask().any()
    assert not interaction.can_undo
    with pytest.raises(RuntimeError, match="finish_step without begin_step"):
        interaction.finish_step(None)


def test_switching_segment_starts_a_new_history(scene, phantom):
    image, _, info = phantom
    volume_node, to_world = transformed_phantom_node(scene, image)
    session = RegionGrowSession()
    volume, interaction, segmentation = start(scene, volume_node, session)
    markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    first_id = interaction.segment_id
    click(interaction, volume, markups, (to_world @ np.append(info.lesions[0].center_ras, 1.0))[:3])
    first = raw_labelmap(segmentation, first_id)

    interaction.set_segment(segmentation, ensure_segment(segmentation, None, "Second"))

    assert not interaction.can_undo and not session.prompts
    assert not interaction.current_mask().any()
    assert same_segment_contents(raw_labelmap(segmentation, first_id), first)


# --- the propagation session through the MRML layer, with a slice range ------------------------
def test_propagation_within_a_slice_range_and_undo_back_to_the_painting(scene):
    """SAM2Volume's steps on the real propagation session (a tiny random SAM2 whose decoder
    always finds the object): prompt, range limits, propagate; writes stay in the range; undo
    of every step gives the painted segment back exactly."""
    torch = pytest.importorskip("torch")
    from conftest_sam2 import make_blob_volume, set_object_score_bias

    from volsam.models.sam2_3dmed.build import build_model
    from volsam.models.sam2_3dmed.config import tiny_test_config
    from volsam.models.sam2_3dmed.slicing import SlicePlane
    from volsam.models.sam2_3dmed.tracker import TrackerConfig
    from volsam.sessions.propagation_session import PropagationSession, PropagationSessionConfig
    from VolumetricSAMLib.models import PROPAGATION_UNDO_RULES, range_boundary_slices

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = set_object_score_bias(build_model(tiny_test_config(64)), 50.0)
        image = make_blob_volume((10, 24, 28), direction=rotation((0, 0, 15)) @ np.diag([1.0, -1.0, 1.0]))
        volume_node, _ = transformed_phantom_node(scene, image)
        # Random weights draw masks at random: following only the parts that overlap from slice
        # to slice would end propagation anywhere, and this test is about the range and undo.
        session = PropagationSession(model, PropagationSessionConfig(tracker=TrackerConfig(keep_connected=False)))
        volume = volume_from_node(volume_node)
        session.open_volume(volume)
        interaction = SegmentInteraction(session, volume, PROPAGATION_UNDO_RULES)
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        interaction.set_segment(segmentation, ensure_segment(segmentation))
        segment_id = interaction.segment_id
        strokes = np.zeros(volume.shape_kji, bool)
        strokes[0, 2:6, 2:6] = strokes[5, 1:3, 1:3] = True  # slice 0 is outside the range
        paint(segmentation, segment_id, volume, strokes)
        painted = raw_labelmap(segmentation, segment_id)
        plane = SlicePlane(volume.shape_kji, session.slice_axis)
        first, last = 2, 7
        in_range = plane.slab_box(first, last + 1)
        markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
        centre_world = volume.ijk_to_ras_points(np.array([14.0, 12.0, 4.0]))

        index = markups.AddControlPointWorld(vtk.vtkVector3d(*centre_world))
        ras = control_point_ras(markups, index)
        interaction.run_step(lambda s: s.add_point(ras, True, view_normal=[0, 0, 1]), "click", index, in_range)
        boundaries = range_boundary_slices(plane.num_slices, session.confirmed_slices, first, last)
        assert boundaries == [1, 8]
        empty = np.zeros(plane.slice_shape, np.uint8)
        for boundary in boundaries:
            interaction.run_step(lambda s, b=boundary: s.add_mask(empty, b), "range limit", None, in_range)
        interaction.run_step(lambda s: s.run().changed, "propagation", None, in_range)

        mask = interaction.current_mask().astype(bool)
        assert all(mask[k].any() for k in range(first, last + 1))  # propagated through the range
        assert np.array_equal(mask[:first], strokes[:first]) and not mask[last + 1:].any()  # untouched outside
        for _ in range(4):
            interaction.undo()
        assert same_segment_contents(raw_labelmap(segmentation, segment_id), painted)
        assert session.confirmed_slices == () and not interaction.can_undo
    finally:
        torch.set_num_threads(threads)
