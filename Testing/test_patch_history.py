"""The one undo machinery (volsam.sessions.history.PatchHistory) over a target of any dtype."""

from __future__ import annotations

import numpy as np
import pytest

from volsam.geometry import Box
from volsam.sessions.history import ArrayTarget, MaskHistory, Patch, PatchHistory


def record(history: PatchHistory, array: np.ndarray, box: Box, values) -> None:
    before = array[box.slices].copy()
    array[box.slices] = values
    history.add(Patch.of(box, before, array[box.slices].copy()))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint32, np.float32])
def test_patches_restore_any_dtype_exactly(dtype):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 300, (6, 7, 8)).astype(dtype)
    start = array.copy()
    history = PatchHistory(ArrayTarget(array))
    history.begin("two boxes", state="before")
    record(history, array, Box((0, 0, 0), (2, 3, 4)), 7)
    record(history, array, Box((1, 1, 1), (5, 5, 5)), 9)  # overlapping the first: applied in order
    step = history.end(state="after")
    assert step.box == Box((0, 0, 0), (5, 5, 5)) and step.patches[0].dtype == np.dtype(dtype)
    changed = array.copy()

    undone = history.undo()
    assert np.array_equal(array, start) and undone.state_before == "before"
    redone = history.redo()
    assert np.array_equal(array, changed) and redone.state_after == "after"


def test_rules_unchanged_steps_are_kept_only_when_asked_and_the_oldest_go_first():
    array = np.zeros((2, 2, 2), np.uint8)
    history = PatchHistory(ArrayTarget(array), max_steps=2)
    history.begin("nothing")
    assert history.end() is None and not history.can_undo
    history.begin("a click that changed nothing", state=1)
    assert history.end(state=2, keep_unchanged=True).box is None and history.can_undo
    for value in (1, 2):
        history.begin(f"set {value}")
        record(history, array, Box((0, 0, 0), (1, 1, 1)), value)
        history.end()
    assert history.undo().label == "set 2" and history.undo().label == "set 1" and history.undo() is None
    assert array[0, 0, 0] == 0


def test_mask_history_keeps_its_rules_over_the_machinery():
    buffer = np.zeros((3, 4, 5), np.uint8)
    history = MaskHistory(buffer)
    assert history.commit(np.zeros((1, 2, 2), np.uint8), Box((0, 0, 0), (1, 2, 2))) is None  # nothing changed
    history.begin("click", state="no prompts")
    values = np.zeros((1, 3, 3), np.uint8)
    values[0, 1, 1] = 1
    box = history.commit(values, Box((0, 0, 0), (1, 3, 3)))
    assert box == Box((0, 1, 1), (1, 2, 2))  # tightened to the voxel that changed
    assert history.end(state="one prompt") == box
    history.begin("unchanged click", state="one prompt")
    assert history.end(state="two prompts") is None and history.can_undo  # kept: it has a state
    assert history.undo_with_state().state == "one prompt"
    result = history.undo_with_state()
    assert result.box == box and result.state == "no prompts" and not buffer.any()
    with pytest.raises(ValueError, match="3D uint8"):
        MaskHistory(np.zeros((3, 4), np.uint8))
