"""Reference test (spec D10): with the BD fusion off and the same weights, frames and prompts,
our propagation reproduces the stock ``sam2`` video predictor's masks slice for slice, in each
direction (the stock predictor from a fresh state per direction, early stop off)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest_sam2 import *

torch = pytest.importorskip("torch")
sam2_video_predictor = pytest.importorskip("sam2.sam2_video_predictor")

from volsam.models.sam2_3dmed.build import sam2_model_settings
from volsam.models.sam2_3dmed.slicing import SlicePlane
from volsam.models.sam2_3dmed.tracker import SlicePrompt, SliceTracker, TrackerConfig

# Hole filling needs the sam2 package's optional compiled extension; both sides skip it alike.
pytestmark = pytest.mark.filterwarnings("ignore:cannot import name '_C':UserWarning")


def _volume(num_slices=7, rows=36, cols=44, seed=1):
    rng = np.random.default_rng(seed)
    array = rng.normal(0.0, 30.0, size=(num_slices, rows, cols)).astype(np.float32)
    k, j, i = np.meshgrid(np.arange(num_slices), np.arange(rows), np.arange(cols), indexing="ij")
    array[((k - 3) / 3) ** 2 + ((j - 18) / 9) ** 2 + ((i - 22) / 11) ** 2 <= 1] += 180.0
    return array


def _stock_predictor_by_hand(model):
    """``SAM2VideoPredictor`` of the same architecture, with the settings that
    ``build_sam2_video_predictor(apply_postprocessing=True)`` adds, and the same weights."""
    from hydra.utils import instantiate

    settings = sam2_model_settings(model.config.architecture, model.config.postprocessing)
    settings["_target_"] = "sam2.sam2_video_predictor.SAM2VideoPredictor"
    settings["fill_hole_area"] = 8
    predictor = instantiate(settings, _recursive_=True).eval()
    predictor.load_state_dict(model.sam2.state_dict(), strict=True)
    return predictor


def _ours(model, array, slice_index, prompt):
    """Prompt result and {slice: mask} per direction from our tracker."""
    tracker = SliceTracker(model, TrackerConfig(early_stop_after=0, fill_hole_area=8, keep_connected=False))
    state = tracker.init_state(array, SlicePlane(array.shape, 2), (-100.0, 250.0))
    result = tracker.predict_prompt(state, slice_index, prompt)
    state.conditioning[slice_index] = result.memory
    directions = {d: {r.slice_index: r.mask for r in tracker.propagate(state, slice_index, d)} for d in (1, -1)}
    frames = torch.stack([state.frames.frame(s) for s in range(array.shape[0])])
    return result.mask, directions, frames


def _stock(predictor, frames, rows, cols, slice_index, add_prompt, monkeypatch):
    """Prompt mask and {slice: mask} per direction from the stock predictor, fed our frames."""
    monkeypatch.setattr(sam2_video_predictor, "load_video_frames", lambda **kwargs: (frames, rows, cols))
    directions, prompt_masks = {}, []
    for direction in (1, -1):
        state = predictor.init_state(video_path="frames held in memory")
        _, _, masks = add_prompt(predictor, state)
        prompt_masks.append((masks[0, 0] > 0).numpy())
        out = predictor.propagate_in_video(state, start_frame_idx=slice_index, reverse=direction < 0)
        directions[direction] = {f: (m[0, 0] > 0).numpy() for f, _, m in out if f != slice_index}
    assert np.array_equal(prompt_masks[0], prompt_masks[1])
    return prompt_masks[0], directions


def _assert_same(ours, stock, num_slices, slice_index):
    (ours_prompt, ours_dirs), (stock_prompt, stock_dirs) = ours, stock
    np.testing.assert_array_equal(ours_prompt, stock_prompt)
    for direction in (1, -1):
        expected = list(range(slice_index + direction, num_slices if direction > 0 else -1, direction))
        assert sorted(ours_dirs[direction]) == sorted(expected) == sorted(stock_dirs[direction])
        for s in expected:
            np.testing.assert_array_equal(ours_dirs[direction][s], stock_dirs[direction][s],
                                          err_msg=f"slice {s}, direction {direction}")
    # Not vacuous: the masks compared have both object and background somewhere.
    fractions = [m.mean() for d in ours_dirs.values() for m in d.values()] + [ours_prompt.mean()]
    assert max(fractions) > 0.02 and min(fractions) < 0.98


@pytest.fixture(scope="module")
def reference_model(tiny_model_128):
    import copy

    model = copy.deepcopy(tiny_model_128)
    model.boundary_fusion_enabled = False
    # Random weights put the object score just below zero (every mask empty); lift it so
    # the masks compared are not trivially empty, keeping the head's weights.
    with torch.no_grad():
        model.sam2.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += 0.5
    return model


@pytest.mark.parametrize("prompt_kind", ["click", "box_and_negative_click", "mask"])
def test_propagation_matches_stock_video_predictor(reference_model, monkeypatch, prompt_kind):
    array = _volume()
    n, rows, cols = array.shape
    s = 3
    if prompt_kind == "click":
        prompt = SlicePrompt(points_xy=[[22.0, 18.0]], labels=[1])

        def add(predictor, state):
            return predictor.add_new_points_or_box(state, s, 1, points=[[22.0, 18.0]], labels=[1])
    elif prompt_kind == "box_and_negative_click":
        prompt = SlicePrompt(points_xy=[[30.0, 20.0]], labels=[0], box_xyxy=[11.0, 9.0, 33.0, 27.0])

        def add(predictor, state):
            return predictor.add_new_points_or_box(state, s, 1, points=[[30.0, 20.0]], labels=[0],
                                                   box=[11.0, 9.0, 33.0, 27.0])
    else:
        mask = np.zeros((rows, cols), dtype=bool)
        mask[10:27, 12:33] = True
        prompt = SlicePrompt(mask=mask)

        def add(predictor, state):
            return predictor.add_new_mask(state, s, 1, mask)
    ours_prompt, ours_dirs, frames = _ours(reference_model, array, s, prompt)
    stock = _stock(_stock_predictor_by_hand(reference_model), frames, rows, cols, s, add, monkeypatch)
    _assert_same((ours_prompt, ours_dirs), stock, n, s)


def test_official_sam2_1_tiny_from_package_builder_matches(tmp_path, monkeypatch):
    """The stock predictor as the package builds it (sam2.1 hiera-tiny config, only the image
    size changed), saved as an official checkpoint and loaded through our loader."""
    from sam2.build_sam import build_sam2_video_predictor

    from volsam.models.sam2_3dmed.checkpoint import load_model

    size = 128
    torch.manual_seed(3)
    predictor = build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml", device="cpu",
        hydra_overrides_extra=[f"++model.image_size={size}"])
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": predictor.state_dict()}, path)
    model = load_model(sam2_checkpoint=path, image_size=size)
    assert model.config.architecture.variant == "tiny"
    model.boundary_fusion_enabled = False
    array = _volume(num_slices=5)
    n, rows, cols = array.shape
    s = 2
    prompt = SlicePrompt(points_xy=[[22.0, 18.0], [8.0, 30.0]], labels=[1, 0])
    ours_prompt, ours_dirs, frames = _ours(model, array, s, prompt)

    def add(predictor, state):
        return predictor.add_new_points_or_box(state, s, 1, points=[[22.0, 18.0], [8.0, 30.0]], labels=[1, 0])

    stock = _stock(predictor, frames, rows, cols, s, add, monkeypatch)
    _assert_same((ours_prompt, ours_dirs), stock, n, s)


def test_boundary_fusion_is_in_the_mask_path(reference_model, monkeypatch):
    """Control: with a trained (here: perturbed) BD branch fused in, masks leave the stock ones,
    so the equality above is a real check of the BD-off path."""
    import copy

    model = copy.deepcopy(reference_model)
    model.boundary_fusion_enabled = True
    with torch.no_grad():
        torch.manual_seed(5)
        model.boundary.fusion_projection.weight.normal_(0.0, 2.0)
    array = _volume()
    _n, rows, cols = array.shape
    prompt = SlicePrompt(points_xy=[[22.0, 18.0]], labels=[1])
    ours_prompt, ours_dirs, frames = _ours(model, array, 3, prompt)

    def add(predictor, state):
        return predictor.add_new_points_or_box(state, 3, 1, points=[[22.0, 18.0]], labels=[1])

    stock_prompt, stock_dirs = _stock(_stock_predictor_by_hand(model), frames, rows, cols, 3, add, monkeypatch)
    differing = [s for d in (1, -1) for s in ours_dirs[d] if not np.array_equal(ours_dirs[d][s], stock_dirs[d][s])]
    assert differing or not np.array_equal(ours_prompt, stock_prompt)
