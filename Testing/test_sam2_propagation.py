"""The propagation engine: slicing, bounded memory, early stop, input checks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest_sam2 import *
from conftest_sam2 import make_blob_volume, scripted_masks

torch = pytest.importorskip("torch")

from volsam.models.sam2_3dmed.memory import BoundedCache, SliceMemory, TravelMemory
from volsam.models.sam2_3dmed.slicing import SlicePlane, slice_axis_for
from volsam.models.sam2_3dmed.tracker import SlicePrompt, SliceTracker, TrackerConfig


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_plane_views_and_slabs(axis):
    array = np.arange(4 * 5 * 6).reshape(4, 5, 6)  # (k, j, i)
    plane = SlicePlane(array.shape, axis)
    assert plane.num_slices == array.shape[2 - axis]
    view = plane.take(array, 2)
    assert view.shape == plane.slice_shape
    assert np.shares_memory(view, array)
    np.testing.assert_array_equal(array[plane.slab_box(2, 3).slices], plane.as_slab(view))
    x, y = plane.in_plane_axes
    point = np.zeros(3)
    point[axis], point[x], point[y] = 2.2, 1.0, 3.0
    slices, xy = plane.locate(point[None])
    assert slices.tolist() == [2] and xy.tolist() == [[1.0, 3.0]]
    index = [0, 0, 0]
    index[axis], index[x], index[y] = 2, 1, 3
    assert view[3, 1] == array[index[2], index[1], index[0]]  # row = y, column = x


def test_slice_axis_follows_anatomy_and_view_normals():
    oblique = np.array([[0.94, -0.34, 0.0], [0.34, 0.94, 0.0], [0.0, 0.0, 1.0]])  # 20 degrees about S
    volume = make_blob_volume(direction=oblique)
    assert [slice_axis_for(volume, d) for d in ("sagittal", "coronal", "axial")] == [0, 1, 2]
    assert slice_axis_for(volume, (0.3, 0.2, -0.9)) == 2
    assert slice_axis_for(volume, (-0.5, 0.87, 0.0)) == 1
    with pytest.raises(ValueError, match="nonzero length"):
        slice_axis_for(volume, (0, 0, 0))


def test_travel_memory_keeps_only_what_sam2_reads():
    memory = TravelMemory(feature_slices=6, pointer_slices=15)
    for s in range(40):
        memory.add(SliceMemory(s, torch.zeros(1, 4), torch.zeros(1, 2, 2, 2)))
    entries = list(memory)
    assert [m.slice_index for m in entries] == list(range(25, 40))
    assert [m.features is not None for m in entries] == [False] * 9 + [True] * 6
    cache = BoundedCache(2)
    for key in range(5):
        cache.put(key, key)
    assert len(cache) == 2 and cache.get(0) is None and cache.get(4) == 4


def _tracker_state(model, num_slices=24, early_stop_after=0):
    volume = make_blob_volume(shape_kji=(num_slices, 20, 22))
    tracker = SliceTracker(model, TrackerConfig(early_stop_after=early_stop_after))
    state = tracker.init_state(volume.array, SlicePlane(volume.shape_kji, 2), (-160.0, 240.0))
    return tracker, state


def test_state_stays_flat_while_propagating(present_model, monkeypatch):
    tracker, state = _tracker_state(present_model, num_slices=24)
    first = tracker.predict_prompt(state, 1, SlicePrompt(points_xy=[[11.0, 10.0]], labels=[1]))
    state.conditioning[1] = first.memory
    seen = []
    track_step = present_model.sam2.track_step

    def spy(*args, **kwargs):
        memory = kwargs["output_dict"]
        seen.append((len(memory["cond_frame_outputs"]), len(memory["non_cond_frame_outputs"]),
                     sum(e["maskmem_features"] is not None for e in memory["non_cond_frame_outputs"].values())))
        return track_step(*args, **kwargs)

    monkeypatch.setattr(present_model.sam2, "track_step", spy)
    results = list(tracker.propagate(state, 1, 1))
    assert [r.slice_index for r in results] == list(range(2, 24))
    assert all(isinstance(r.mask, np.ndarray) and r.mask.shape == (20, 22) for r in results)
    assert max(s[1] for s in seen) == 15 and max(s[2] for s in seen) == 6 and {s[0] for s in seen} == {1}
    assert len(state.features) <= tracker.config.cached_feature_slices(tracker.device)


@pytest.mark.parametrize("early_stop_after, expected", [(3, 3), (1, 1), (0, 7)])
def test_early_stop_in_the_engine(absent_model, early_stop_after, expected):
    tracker, state = _tracker_state(absent_model, num_slices=10, early_stop_after=early_stop_after)
    mask = np.zeros((20, 22), dtype=bool)
    mask[5:15, 6:16] = True
    state.conditioning[2] = tracker.predict_prompt(state, 2, SlicePrompt(mask=mask)).memory
    assert len(list(tracker.propagate(state, 2, 1))) == expected
    assert len(list(tracker.propagate(state, 2, -1, early_stop_after=0))) == 2


def test_engine_input_checks(tiny_model):
    tracker, state = _tracker_state(tiny_model, num_slices=6)
    with pytest.raises(ValueError, match="confirmed slice"):
        next(tracker.propagate(state, 2, 1))
    state.conditioning[2] = tracker.predict_prompt(state, 2, SlicePrompt([[3.0, 3.0]], [1])).memory
    with pytest.raises(ValueError, match="direction must be 1 or -1"):
        next(tracker.propagate(state, 2, 2))
    with pytest.raises(ValueError, match="outside"):
        next(tracker.propagate(state, 2, 1, stop=9))
    with pytest.raises(ValueError, match="outside the volume"):
        tracker.predict_prompt(state, 6, SlicePrompt([[3.0, 3.0]], [1]))
    with pytest.raises(ValueError, match="does not match the slice shape"):
        tracker.predict_prompt(state, 1, SlicePrompt(mask=np.ones((22, 20))))
    with pytest.raises(ValueError, match="cannot be combined"):
        SlicePrompt(points_xy=[[1.0, 1.0]], labels=[1], mask=np.ones((20, 22)))
    with pytest.raises(ValueError, match="labels must be 1"):
        SlicePrompt(points_xy=[[1.0, 1.0]], labels=[2])
    with pytest.raises(ValueError, match="needs points, a box or a mask"):
        SlicePrompt()
    single = make_blob_volume(shape_kji=(1, 8, 8))
    with pytest.raises(ValueError, match="at least 2"):
        tracker.init_state(single.array, SlicePlane(single.shape_kji, 2), (0.0, 1.0))


def _two_objects(track_step, image_size):
    """One object at the top left, another at the bottom right."""

    def paint(low, rows, cols):
        low[..., : rows // 3, : cols // 3] = 10.0
        low[..., -rows // 4:, -cols // 4:] = 10.0

    return scripted_masks(track_step, image_size, paint)


def test_each_slice_keeps_only_the_chosen_object(present_model, monkeypatch):
    sam2 = present_model.sam2
    monkeypatch.setattr(sam2, "track_step", _two_objects(sam2.track_step, present_model.image_size))
    encoded = []
    encode = sam2._encode_new_memory

    def spy(**kwargs):
        encoded.append(kwargs["pred_masks_high_res"].float().clone())
        return encode(**kwargs)

    monkeypatch.setattr(sam2, "_encode_new_memory", spy)
    tracker, state = _tracker_state(present_model, num_slices=8)  # slices of 20 x 22
    top_left, bottom_right = (slice(0, 5), slice(0, 5)), (slice(-3, None), slice(-3, None))

    # A click on the bottom-right object keeps it alone, in the mask and in the memory.
    prompted = tracker.predict_prompt(state, 1, SlicePrompt(points_xy=[[20.0, 18.0]], labels=[1]))
    assert prompted.mask[bottom_right].all() and not prompted.mask[top_left].any()
    assert (encoded[-1][..., :8, :8] == -1024).all() and (encoded[-1][..., -8:, -8:] > 0).all()
    state.conditioning[1] = prompted.memory

    # Propagation follows the part that overlaps the previous slice: the top-left one here.
    start = np.zeros((20, 22), dtype=bool)
    start[1:4, 1:4] = True
    encoded.clear()
    results = list(tracker.propagate(state, 1, 1, start_mask=start))
    assert len(results) == 6 and len(encoded) == 6
    assert all(r.mask[top_left].all() and not r.mask[bottom_right].any() for r in results)
    assert all((e[..., -8:, -8:] == -1024).all() for e in encoded)

    # A start mask that touches neither object: nothing follows, and the direction stops early.
    apart = np.zeros((20, 22), dtype=bool)
    apart[10, 2] = True
    stopped = list(tracker.propagate(state, 1, 1, start_mask=apart, early_stop_after=3))
    assert len(stopped) == 3 and not any(r.mask.any() for r in stopped)

    # Off, both objects stay: the stock predictor's masks.
    stock = SliceTracker(present_model, TrackerConfig(early_stop_after=0, keep_connected=False))
    assert all(r.mask[top_left].all() and r.mask[bottom_right].all()
               for r in stock.propagate(state, 1, 1, start_mask=start))



def _ring(track_step, image_size):
    """A ring (a bright rim around a dark core) in the top left half and a square in the bottom
    right corner."""

    def paint(low, rows, cols):
        low[..., : rows // 2, : cols // 2] = 10.0
        low[..., rows // 8: 3 * rows // 8, cols // 8: 3 * cols // 8] = -10.0  # the core
        low[..., -rows // 4:, -cols // 4:] = 10.0

    return scripted_masks(track_step, image_size, paint)


def test_a_click_on_a_parts_outline_picks_that_part():
    from volsam.models.sam2_3dmed.tracker import _parts_at_clicks

    parts = np.zeros((20, 20), dtype=np.int32)
    parts[2:8, 2:8] = 1
    parts[4:6, 4:6] = 0  # part 1 is a ring around a dark core
    parts[12:18, 12:18] = 2

    def at(*clicks, tolerance=2.0):
        rows, cols = np.array(clicks).T
        return _parts_at_clicks(parts, rows, cols, tolerance)

    assert at((4, 4)) == [1]  # in the core: enclosed by the ring
    assert at((10, 14)) == [2]  # two pixels above the square: within one decoder cell
    assert at((10, 14), tolerance=1.0) == []
    assert at((10, 10), tolerance=1.0) == []  # between the parts: neither
    assert at((4, 4), (15, 15)) == [1, 2]


def test_a_click_keeps_the_part_around_it_and_nothing_when_it_hit_none(present_model, monkeypatch):
    sam2 = present_model.sam2
    monkeypatch.setattr(sam2, "track_step", _ring(sam2.track_step, present_model.image_size))
    tracker, state = _tracker_state(present_model, num_slices=8)  # slices of 20 x 22
    # A click in the dark core: the ring around it is the clicked object, the square is not.
    ring = tracker.predict_prompt(state, 1, SlicePrompt(points_xy=[[5.0, 5.0]], labels=[1]))
    assert ring.mask[0, :].any() and not ring.mask[5, 5] and not ring.mask[-2:, -2:].any()
    # A click beside every part: none is the clicked object, so nothing is kept to propagate.
    beside = tracker.predict_prompt(state, 1, SlicePrompt(points_xy=[[20.0, 2.0]], labels=[1]))
    assert not beside.mask.any()
    state.conditioning[1] = beside.memory
    assert not any(r.mask.any() for r in tracker.propagate(state, 1, 1, start_mask=beside.mask, early_stop_after=3))
    # Without a positive click (a box), every part stays.
    boxed = tracker.predict_prompt(state, 1, SlicePrompt(box_xyxy=[0, 0, 21, 19]))
    assert boxed.mask[-2:, -2:].all() and boxed.mask[0, :5].all()
