"""Slices encoded ahead in batches: the same frames, features and masks as one slice at a time.

The reference test against the stock video predictor runs with the default batch; here the
batch sizes are compared with each other, in both directions and with a batch that does not
divide the slices, and the encoder's calls are counted.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest_sam2 import *
from conftest_sam2 import make_blob_volume

torch = pytest.importorskip("torch")

from volsam.models.sam2_3dmed.frames import IntensityConfig
from volsam.models.sam2_3dmed.slicing import SlicePlane
from volsam.models.sam2_3dmed.tracker import SlicePrompt, SliceTracker, TrackerConfig


def _propagate(model, encode_batch, volume, start=6):
    tracker = SliceTracker(model, TrackerConfig(early_stop_after=0, encode_batch=encode_batch))
    state = tracker.init_state(volume.array, SlicePlane(volume.shape_kji, 2), IntensityConfig().value_range(volume.array))
    first = tracker.predict_prompt(state, start, SlicePrompt(points_xy=[[11.0, 10.0]], labels=[1]))
    state.conditioning[start] = first.memory
    masks = {}
    for direction in (1, -1):
        masks.update({r.slice_index: r.mask for r in tracker.propagate(state, start, direction)})
    return masks, state


def test_batched_encoding_gives_the_masks_of_one_slice_at_a_time(present_model, monkeypatch):
    volume = make_blob_volume(shape_kji=(17, 20, 22))
    batches = []
    forward_image = present_model.sam2.forward_image

    def spy(images):
        batches.append(images.shape[0])
        return forward_image(images)

    monkeypatch.setattr(present_model.sam2, "forward_image", spy)
    single, _ = _propagate(present_model, 1, volume)
    assert batches == [1] * 17  # the prompted slice, then each slice alone
    batches.clear()
    batched, state = _propagate(present_model, 4, volume)
    # The prompted slice (6) alone; up: 7-10, 11-14, 15-16; down: 5-2, 1-0.
    assert batches == [1, 4, 4, 2, 4, 2]
    assert len(state.features) <= TrackerConfig(encode_batch=4).cached_feature_slices == 5
    assert sorted(single) == sorted(batched) == [s for s in range(17) if s != 6]
    for s in single:
        np.testing.assert_array_equal(single[s], batched[s], err_msg=f"slice {s}")
    fractions = [m.mean() for m in single.values()]
    assert max(fractions) > 0.02 and min(fractions) < 0.98  # not vacuous


def test_a_batch_of_frames_is_the_frames_one_by_one(present_model):
    volume = make_blob_volume(shape_kji=(6, 20, 22))
    array = volume.array.astype(np.int16)  # int16 crosses to the device as it is
    tracker = SliceTracker(present_model)
    state = tracker.init_state(array, SlicePlane(array.shape, 0), (-100.0, 250.0))  # 22 sagittal slices
    together = state.frames.frames([3, 0, 21])
    assert together.shape == (3, 3, present_model.image_size, present_model.image_size)
    for n, s in enumerate([3, 0, 21]):
        torch.testing.assert_close(together[n], state.frames.frame(s), rtol=0, atol=0)
    with pytest.raises(IndexError, match="slice 22 outside"):
        state.frames.frames([1, 22])
    with pytest.raises(ValueError, match="encode_batch must be >= 1"):
        TrackerConfig(encode_batch=0)
    with pytest.raises(ValueError, match="compile_mode must be one of"):
        TrackerConfig(compile_mode="fast")
