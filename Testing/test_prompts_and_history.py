"""Prompts in voxel coordinates and the undo/redo history of a mask buffer."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_volume
from volsam.geometry import Box
from volsam.prompts import box_prompt, mask_prompt, point_prompt
from volsam.sessions.history import MaskHistory, UndoResult


def test_point_prompts_in_each_space_land_on_the_same_voxel(oblique_volume):
    voxel = np.array([5, 7, 3])
    ras = oblique_volume.ijk_to_ras_points(voxel)
    lps = ras * [-1, -1, 1]
    for coordinates, space in ((ras, "ras"), (lps, "lps"), (voxel, "ijk")):
        prompt = point_prompt(oblique_volume, coordinates, space, positive=False)
        assert np.array_equal(prompt.voxel_ijk, voxel)
        assert prompt.voxel_kji == (3, 7, 5)
        assert not prompt.positive


def test_point_outside_is_a_clear_error(oblique_volume):
    far = oblique_volume.ijk_to_ras_points([-3, 0, 0])
    with pytest.raises(ValueError, match=r"lies outside the image .*RAS extent"):
        point_prompt(oblique_volume, far)
    with pytest.raises(ValueError, match="coordinate space"):
        point_prompt(oblique_volume, far, "xyz")
    with pytest.raises(ValueError, match="3 coordinates"):
        point_prompt(oblique_volume, [1, 2])


def test_box_and_mask_prompts(oblique_volume):
    box = box_prompt(oblique_volume, [6, 2, 4], [1, 8, 4], space="ijk")
    assert box.min_ijk == (1, 2, 4) and box.max_ijk == (6, 8, 4)
    with pytest.raises(ValueError, match="does not match"):
        mask_prompt(oblique_volume, np.zeros((2, 2, 2)))


def test_history_undo_redo_restores_exactly():
    rng = np.random.default_rng(1)
    buffer = (rng.random((8, 9, 10)) > 0.7).astype(np.uint8)  # what the user had painted
    painted = buffer.copy()
    history = MaskHistory(buffer)
    states = [buffer.copy()]
    for step in range(3):
        box = Box((step, 1, 2), (step + 4, 7, 9))
        changed = history.commit(rng.integers(0, 2, box.shape).astype(np.uint8), box)
        assert changed is not None and changed.clip_to(box.stop) == changed
        states.append(buffer.copy())
    for expected in reversed(states[:-1]):
        assert history.undo() is not None
        assert np.array_equal(buffer, expected)
    assert np.array_equal(buffer, painted)
    assert history.undo() is None
    for expected in states[1:]:
        history.redo()
        assert np.array_equal(buffer, expected)
    assert history.redo() is None


def test_history_groups_steps_and_drops_redo_on_new_change():
    buffer = np.zeros((4, 4, 4), np.uint8)
    history = MaskHistory(buffer)
    history.begin("propagation")
    history.commit(np.ones((1, 4, 4), np.uint8), Box((0, 0, 0), (1, 4, 4)))
    history.commit(np.ones((1, 4, 4), np.uint8), Box((3, 0, 0), (4, 4, 4)))
    assert history.end() == Box((0, 0, 0), (4, 4, 4))
    assert history.undo() == Box((0, 0, 0), (4, 4, 4)) and not buffer.any()
    history.redo()
    history.undo()
    history.commit(np.ones((1, 1, 1), np.uint8), Box((2, 2, 2), (3, 3, 3)))
    assert not history.can_redo
    assert history.commit(np.ones((1, 1, 1), np.uint8), Box((2, 2, 2), (3, 3, 3))) is None


def test_history_refuses_bad_buffers_and_boxes():
    with pytest.raises(ValueError, match="uint8"):
        MaskHistory(np.zeros((2, 2, 2), np.float32))
    history = MaskHistory(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="do not fit"):
        history.commit(np.zeros((3, 3, 3)), Box((0, 0, 0), (3, 3, 3)))


def test_history_restores_the_callers_state_with_the_mask():
    buffer = np.zeros((4, 4, 4), np.uint8)
    history = MaskHistory(buffer)
    history.begin("click", state="no clicks")
    history.commit(np.ones((1, 2, 2), np.uint8), Box((1, 1, 1), (2, 3, 3)))
    assert history.end(state="one click") == Box((1, 1, 1), (2, 3, 3))
    assert history.undo_with_state() == UndoResult(Box((1, 1, 1), (2, 3, 3)), "no clicks")
    assert not buffer.any()
    assert history.redo_with_state() == UndoResult(Box((1, 1, 1), (2, 3, 3)), "one click")
    assert buffer.sum() == 4
    assert history.undo_with_state() is not None and history.undo_with_state() is None


def test_a_state_only_step_is_undoable_and_ordered_with_mask_steps():
    buffer = np.zeros((4, 4, 4), np.uint8)
    history = MaskHistory(buffer)
    history.begin("click", state=0)
    history.commit(np.ones((1, 1, 1), np.uint8), Box((0, 0, 0), (1, 1, 1)))
    history.end(state=1)
    # A click that changed the prompts but no voxel: still a step of its own.
    history.begin("click", state=1)
    history.commit(np.ones((1, 1, 1), np.uint8), Box((0, 0, 0), (1, 1, 1)))
    assert history.end(state=2) is None and history.can_undo
    assert history.undo_with_state() == UndoResult(None, 1) and buffer[0, 0, 0] == 1
    assert history.undo_with_state() == UndoResult(Box((0, 0, 0), (1, 1, 1)), 0) and not buffer.any()
    assert history.redo_with_state() == UndoResult(Box((0, 0, 0), (1, 1, 1)), 1)
    assert history.redo_with_state() == UndoResult(None, 2) and not history.can_redo
    assert history.undo() is None and history.undo() == Box((0, 0, 0), (1, 1, 1))  # mask-only view


def test_a_step_without_state_after_is_recorded_only_if_the_mask_changed():
    buffer = np.zeros((4, 4, 4), np.uint8)
    history = MaskHistory(buffer)
    history.begin("propagate", state="pending")
    assert history.end() is None and not history.can_undo  # nothing changed: no empty step
    history.begin("propagate", state="pending")
    history.commit(np.ones((1, 4, 4), np.uint8), Box((2, 0, 0), (3, 4, 4)))
    history.end()  # the state stayed as it was, so redo gives back the state before
    assert history.undo_with_state().state == "pending"
    assert history.redo_with_state().state == "pending"


def test_max_steps_bounds_state_and_mask_steps_alike():
    buffer = np.zeros((4, 4, 4), np.uint8)
    history = MaskHistory(buffer, max_steps=2)
    for step in range(3):
        history.begin("click", state=step)
        if step == 1:
            history.commit(np.ones((1, 1, 1), np.uint8), Box((0, 0, 0), (1, 1, 1)))
        history.end(state=step + 1)
    assert history.undo_with_state() == UndoResult(None, 2)
    assert history.undo_with_state() == UndoResult(Box((0, 0, 0), (1, 1, 1)), 1)
    assert history.undo_with_state() is None and not history.can_undo  # the first step is forgotten
