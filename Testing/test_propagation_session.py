"""The SAM2-3dMed propagation session: prompts, propagation in both directions, early stop,
corrections bounded by confirmed slices, undo/redo, cancellation, slice axes, bad input."""

from __future__ import annotations


import numpy as np
import pytest
from conftest_sam2 import *
from conftest_sam2 import make_blob_volume, scripted_masks

pytest.importorskip("torch")

from volsam.geometry import Volume
from volsam.models.sam2_3dmed.tracker import TrackerConfig
from volsam.sessions.propagation_session import PropagationSession, PropagationSessionConfig


def open_session(model, volume=None, early_stop_after=3, direction="axial", buffer=None):
    volume = volume if volume is not None else make_blob_volume()
    config = PropagationSessionConfig(slice_direction=direction,
                                      tracker=TrackerConfig(early_stop_after=early_stop_after))
    session = PropagationSession(model, config)
    buffer = np.zeros(volume.shape_kji, dtype=np.uint8) if buffer is None else buffer
    session.open_volume(volume, buffer)
    return session, volume, buffer


def ijk(*index):
    return np.array(index, dtype=float)


def slice_mask(shape_jki, fill_box):
    mask = np.zeros(shape_jki, dtype=bool)
    mask[fill_box] = True
    return mask


def steps_of(session):
    return [step.slice_index for step in session.propagation_steps()]


def test_prompt_segments_its_slice_then_propagation_covers_both_directions(present_model):
    session, _volume, buffer = open_session(present_model, early_stop_after=0)
    changed = session.add_point(ijk(14, 12, 4), space="ijk")
    assert changed is not None and changed.start[0] == 4 and changed.stop[0] == 5
    assert np.count_nonzero(buffer[:4]) == 0 and np.count_nonzero(buffer[5:]) == 0
    assert session.confirmed_slices == (4,) and session.pending_slices == (4,)
    order = steps_of(session)
    assert order == [5, 6, 7, 8, 9, 3, 2, 1, 0]  # outward from the prompt, each direction in turn
    assert all(np.count_nonzero(buffer[k]) for k in range(10))
    assert session.pending_slices == ()
    assert steps_of(session) == []  # nothing left to propagate


def test_propagate_reports_progress_and_changed_box(present_model):
    session, _volume, _buffer = open_session(present_model, early_stop_after=0)
    session.add_point(ijk(14, 12, 4), space="ijk")
    calls = []
    outcome = session.run(progress=lambda done, total: calls.append((done, total)))
    assert outcome.completed and outcome.status == "completed"
    assert (outcome.units_done, outcome.units_total) == (9, 9)
    assert calls == [(i, 9) for i in range(1, 10)]
    assert outcome.changed is not None and outcome.changed.start[0] == 0 and outcome.changed.stop[0] == 10


def test_early_stop_after_k_absent_slices_clears_the_rest(absent_model):
    before = np.ones(make_blob_volume().shape_kji, dtype=np.uint8)  # stale results everywhere
    session, _volume, buffer = open_session(absent_model, early_stop_after=3, buffer=before)
    session.add_mask(slice_mask((24, 28), np.s_[8:16, 9:19]), slice_index=4)
    predicted = []
    propagate = session.tracker.propagate

    def counting(*args, **kwargs):
        for result in propagate(*args, **kwargs):
            predicted.append(result.slice_index)
            yield result

    session.tracker.propagate = counting
    outcome = session.run()
    assert outcome.completed and outcome.units_done == 9
    assert predicted == [5, 6, 7, 3, 2, 1]  # the model ran 3 slices per direction, then stopped
    assert np.count_nonzero(buffer[4]) == 8 * 10
    assert np.count_nonzero(np.delete(buffer, 4, axis=0)) == 0  # stale results beyond are cleared


def test_early_stop_off_runs_every_slice(absent_model):
    session, _volume, _buffer = open_session(absent_model, early_stop_after=0)
    session.add_mask(slice_mask((24, 28), np.s_[8:16, 9:19]), slice_index=4)
    assert steps_of(session) == [5, 6, 7, 8, 9, 3, 2, 1, 0]


def test_correction_repropagates_up_to_not_across_confirmed_slices(present_model):
    session, _volume, buffer = open_session(present_model, early_stop_after=0)
    first = slice_mask((24, 28), np.s_[2:6, 3:9])
    last = slice_mask((24, 28), np.s_[15:22, 20:26])
    session.add_mask(first, slice_index=1)
    session.add_mask(last, slice_index=8)
    # Both confirmed slices are new: each takes its half of the gap between them.
    assert steps_of(session) == [2, 3, 4, 0, 9, 7, 6, 5]
    outside = buffer[[0, 9]].copy()
    session.add_point(ijk(14, 12, 4), positive=False, space="ijk")  # a correction on slice 4
    assert session.confirmed_slices == (1, 4, 8) and session.pending_slices == (4,)
    assert steps_of(session) == [5, 6, 7, 3, 2]
    np.testing.assert_array_equal(buffer[1], first)  # confirmed slices are never overwritten
    np.testing.assert_array_equal(buffer[8], last)
    np.testing.assert_array_equal(buffer[[0, 9]], outside)  # nothing beyond them was touched


def test_more_clicks_on_a_slice_accumulate(present_model):
    session, _volume, _buffer = open_session(present_model)
    session.add_point(ijk(14, 12, 4), space="ijk")
    session.add_point(ijk(3, 3, 4), positive=False, space="ijk")
    confirmed = session._prompts.confirmed[4]
    assert confirmed.prompt.labels.tolist() == [1, 0]
    assert session.confirmed_slices == (4,)


def test_undo_and_redo_restore_buffer_and_prompts(present_model):
    session, _volume, buffer = open_session(present_model, early_stop_after=0)
    session.add_point(ijk(14, 12, 4), space="ijk")
    after_prompt = buffer.copy()
    session.run()
    after_propagation = buffer.copy()
    assert session.undo() is not None
    np.testing.assert_array_equal(buffer, after_prompt)
    assert session.pending_slices == (4,)  # the propagation can be run again
    assert session.undo() is not None
    assert np.count_nonzero(buffer) == 0 and session.confirmed_slices == ()
    assert session.undo() is None
    assert session.redo() is not None and session.confirmed_slices == (4,)
    assert session.redo() is not None
    np.testing.assert_array_equal(buffer, after_propagation)
    assert session.pending_slices == () and session.redo() is None
    session.undo()
    assert session.run().units_done == 9  # re-run after undo gives the same result
    np.testing.assert_array_equal(buffer, after_propagation)


def test_reset_clears_buffer_and_prompts_and_can_be_undone(present_model):
    session, _volume, buffer = open_session(present_model)
    session.add_point(ijk(14, 12, 4), space="ijk")
    session.run()
    propagated = buffer.copy()
    box = session.reset()
    assert box is not None and np.count_nonzero(buffer) == 0 and session.confirmed_slices == ()
    assert session.undo() == box
    np.testing.assert_array_equal(buffer, propagated)
    assert session.confirmed_slices == (4,)


def test_a_prompt_that_changes_no_voxel_is_still_an_undo_step(absent_model):
    session, _volume, _buffer = open_session(absent_model)
    assert session.add_point(ijk(14, 12, 4), space="ijk") is None  # the object is absent: mask stays 0
    assert session.confirmed_slices == (4,) and session.can_undo
    assert session.undo() is None and session.confirmed_slices == () and session.can_redo
    session.redo()
    assert session.confirmed_slices == (4,)


def test_cancel_keeps_the_slices_done_and_says_so(present_model):
    session, _volume, buffer = open_session(present_model, early_stop_after=0)
    session.add_point(ijk(14, 12, 4), space="ijk")

    def progress(done, total):
        if done == 3:
            session.cancel()

    outcome = session.run(progress=progress)
    assert not outcome.completed and outcome.status == "cancelled"
    assert (outcome.units_done, outcome.units_total) == (3, 9)
    written = [k for k in range(10) if np.count_nonzero(buffer[k])]
    assert written == [4, 5, 6, 7]
    assert session.pending_slices == (4,)  # not finished: propagate again to complete
    assert session.run().completed
    assert all(np.count_nonzero(buffer[k]) for k in range(10))


def test_closing_the_generator_keeps_what_was_written(present_model):
    session, _volume, buffer = open_session(present_model, early_stop_after=0)
    session.add_point(ijk(14, 12, 4), space="ijk")
    steps = session.propagation_steps()
    next(steps)
    next(steps)
    steps.close()
    assert [k for k in range(10) if np.count_nonzero(buffer[k])] == [4, 5, 6]
    session.undo()
    assert [k for k in range(10) if np.count_nonzero(buffer[k])] == [4]


def _permuted_volume():
    """i points superior, j anterior, k right: axial slices are across i."""
    direction = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    return make_blob_volume(shape_kji=(12, 9, 7), direction=direction)


@pytest.mark.parametrize("direction, axis", [("axial", 0), ("coronal", 1), ("sagittal", 2), ((0.1, 0.2, -1.0), 0),
                                             ((0.95, 0.1, 0.3), 2)])
def test_each_slice_axis(tiny_model, direction, axis):
    volume = _permuted_volume()
    session, volume, _buffer = open_session(tiny_model, volume=volume, direction=direction, early_stop_after=0)
    assert session.slice_axis == axis
    centre = np.array(volume.shape_ijk, float) // 2
    session.add_point(centre, space="ijk")
    assert session.confirmed_slices == (int(centre[axis]),)
    order = steps_of(session)
    assert sorted(order + [int(centre[axis])]) == list(range(volume.shape_ijk[axis]))


def test_prompts_on_slices_across_the_axis_of_the_view(tiny_model):
    volume = _permuted_volume()
    session, volume, _buffer = open_session(tiny_model, volume=volume)
    assert session.slice_axis == 0
    coronal_normal = (0.0, 1.0, 0.0)
    session.add_point(ijk(3, 4, 6), space="ijk", view_normal=coronal_normal)
    assert session.slice_axis == 1 and session.confirmed_slices == (4,)
    with pytest.raises(ValueError, match="reset the session"):
        session.add_point(ijk(3, 4, 6), space="ijk", view_normal=(0.0, 0.0, 1.0))
    session.reset()
    session.add_point(ijk(3, 4, 6), space="ijk", view_normal=(0.0, 0.0, 1.0))
    assert session.slice_axis == 0 and session.confirmed_slices == (3,)


def test_ras_prompts_and_box(tiny_model):
    session, volume, _buffer = open_session(tiny_model)
    point = volume.ijk_to_ras_points(ijk(14, 12, 6))
    session.add_point(point)
    assert session.confirmed_slices == (6,)
    a, b = volume.ijk_to_ras_points(ijk(8, 6, 2)), volume.ijk_to_ras_points(ijk(20, 18, 2))
    session.add_box(a, b)
    assert session.confirmed_slices == (2, 6)
    np.testing.assert_allclose(session._prompts.confirmed[2].prompt.box_xyxy, [8, 6, 20, 18], atol=1e-9)


# --- bad input ------------------------------------------------------------------------------------
def test_bad_prompts_are_one_line_value_errors(tiny_model):
    session, _volume, buffer = open_session(tiny_model)
    cases = [
        (lambda: session.add_point(ijk(14, 12, 40), space="ijk"), "outside the image"),
        (lambda: session.add_box(ijk(5, 5, 3), ijk(5, 9, 3), space="ijk"), "nonzero extent"),
        (lambda: session.add_box(ijk(5, 5, 3), ijk(9, 9, 4), space="ijk"), "corners lie on slices 3 and 4"),
        (lambda: session.add_prompt(points=[ijk(5, 5, 3), ijk(6, 6, 5)], positive=[True, True], space="ijk"),
         "one slice"),
        (lambda: session.add_prompt(points=[ijk(5, 5, 3)], positive=[True], box=(ijk(1, 1, 4), ijk(9, 9, 4)),
                                    space="ijk"), "lie on slice 3 but the box on slice 4"),
        (lambda: session.add_mask(np.ones((28, 24)), slice_index=3), "does not match the slice shape"),
        (lambda: session.add_mask(np.ones((24, 28)), slice_index=10), "outside the volume"),
        (lambda: session.add_prompt(), "at least one point or a box"),
        (lambda: session.add_point(ijk(1, 1, 1), space="voxel"), "coordinate space"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            call()
        assert "\n" not in str(error.value)
    assert session.confirmed_slices == () and np.count_nonzero(buffer) == 0


def test_volume_with_one_slice_is_refused(tiny_model):
    array = np.zeros((1, 16, 16), dtype=np.float32)
    session = PropagationSession(tiny_model)
    with pytest.raises(ValueError, match="1 slice across voxel axis k"):
        session.open_volume(Volume.from_spacing(array))
    coronal = PropagationSession(tiny_model, PropagationSessionConfig(slice_direction="coronal"))
    coronal.open_volume(Volume.from_spacing(array))  # 16 slices across j
    assert coronal.num_slices == 16


def test_session_order_and_buffer_checks(tiny_model):
    session = PropagationSession(tiny_model)
    with pytest.raises(ValueError, match="open_volume"):
        session.add_point(ijk(1, 1, 1), space="ijk")
    volume = make_blob_volume()
    session.open_volume(volume)  # makes its own zero buffer
    assert session.result.shape == volume.shape_kji and session.result.dtype == np.uint8
    with pytest.raises(ValueError, match="shape"):
        session.set_target_buffer(np.zeros((3, 3, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        session.set_target_buffer(np.zeros(volume.shape_kji, dtype=np.float32))
    with pytest.raises(ValueError, match="uint8"):
        session.open_volume(volume, np.zeros(volume.shape_kji, dtype=bool))
    with pytest.raises(ValueError, match="unknown slice direction"):
        PropagationSession(tiny_model, PropagationSessionConfig(slice_direction="oblique")).open_volume(volume)


# --- through the registry ---------------------------------------------------------------------------
def test_registry_loads_a_checkpoint_and_runs_the_protocol(tiny_model, tmp_path):
    import torch

    from volsam.methods import SessionSettings, WeightsChoice, get_method
    from volsam.models.sam2_3dmed.checkpoint import save_checkpoint

    method = get_method("sam2-3dmed")
    path = save_checkpoint(tiny_model, tmp_path / "demo.safetensors", contents="whole_model",
                           provenance={"data": "random weights (test)"})
    volume = make_blob_volume()
    loaded = method.load_model(WeightsChoice(weights=str(path)), torch.device("cpu"))
    session = method.open_session(loaded, SessionSettings(slice_direction="axial"))
    session.open_volume(volume)
    positives = [volume.ijk_to_ras_points(ijk(14, 12, 5))]
    negatives = [volume.ijk_to_ras_points(ijk(2, 2, 5))]
    session.add_points(positives, negatives)
    assert session.slice_index_of(positives[0]) == 5 and session.pending_slices == (5,)
    outcome = session.run()
    assert outcome.completed and outcome.units_total == volume.shape_kji[0] - 1
    box = np.array([volume.ijk_to_ras_points(ijk(8, 6, 5)), volume.ijk_to_ras_points(ijk(20, 18, 5))])
    session.add_box(*box)
    assert session.confirmed_slices == (5,)
    with pytest.raises(ValueError, match="sam2.1-tiny"):
        method.load_model(WeightsChoice(weights=str(path), variant="large"), torch.device("cpu"))
    with pytest.raises(ValueError, match="needs weights"):
        method.load_model(WeightsChoice(), torch.device("cpu"))
    session.close()
    with pytest.raises(ValueError, match="no volume is open"):
        session.add_point(positives[0])


def test_negative_clicks_alone_only_remove_voxels(present_model, monkeypatch):
    """A model that answers the negative click with more tissue (as the demo model did on a
    leak) cannot make the mask grow: the clicked slice and its propagation only lose voxels."""
    sam2 = present_model.sam2
    answer = {"rows": slice(None, None), "cols": slice(None, None)}

    def paint(low, rows, cols):
        low[..., answer["rows"], answer["cols"]] = 10.0

    monkeypatch.setattr(sam2, "track_step", scripted_masks(sam2.track_step, present_model.image_size, paint))
    session, volume, buffer = open_session(present_model, early_stop_after=0)
    rows, cols = volume.shape_kji[1:]
    answer.update(rows=slice(0, 8), cols=slice(0, 8))  # the first answers: a corner
    session.add_point(ijk(3, 3, 4), space="ijk")
    session.run()
    before = buffer.copy()
    assert before.any() and not before[:, rows // 2:, :].any()

    answer.update(rows=slice(None, None), cols=slice(4, None))  # now: most of every slice
    session.add_point(ijk(1, 1, 7), positive=False, space="ijk")
    assert not (buffer & ~before).any()  # the clicked slice lost the part the click was on
    assert not buffer[7, :8, :4].any() and before[7, :8, :4].any()
    session.run()
    assert not (buffer & ~before).any()
    assert buffer[8:].any() and not np.array_equal(buffer, before)  # slices beyond lost voxels too

    # With a positive click on that slice the answer is written as the model gives it.
    session.add_point(ijk(20, 16, 7), positive=True, space="ijk")
    assert buffer[7, rows // 2:, 8:].all()
    session.undo(); session.undo(); session.undo()
    assert np.array_equal(buffer, before)
