"""The adapter session's device path gives exactly the masks of the host (numpy) path it replaced.

:class:`HostPathSession` keeps the old path as it was: the crop sampled, z-scored and masked in
numpy, the probability brought to the host, the negative-click rule over all clicks in numpy,
the map back onto the volume grid and the kept-object step (scipy labelling) on the host. Both
sessions take the same clicks, on random and demo weights, on oblique, flipped and anisotropic
volumes, and their buffers must be equal after every step. The device path runs here on CPU
tensors; on CUDA the same code runs on the GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_volume
from conftest_adapter import tiny_model

from volsam.clicks import connected_regions
from volsam.devices import to_device
from volsam.geometry import Volume
from volsam.models.sam3d_adapter.crops import (
    NearestClick,
    keep_clicked_parts,
    sample_trilinear,
)
from volsam.sessions.adapter_session import AdapterSession, AdapterSessionOptions

pytest_plugins = ["conftest_adapter"]


# --- the host path, as it was -------------------------------------------------------------------
def host_sample_trilinear(array, index_kji_axes) -> np.ndarray:
    sizes = array.shape
    lows = [int(max(0, np.floor(a.min()))) for a in index_kji_axes]
    highs = [int(min(n - 1, np.ceil(a.max()))) + 1 for a, n in zip(index_kji_axes, sizes)]
    if any(h <= lo for lo, h in zip(lows, highs)):
        block = np.zeros((1, 1, 1), np.float32)
        lows = [0, 0, 0]
    else:
        block = np.asarray(array[lows[0]:highs[0], lows[1]:highs[1], lows[2]:highs[2]], dtype=np.float32)
    coordinates = []
    for axis, positions in enumerate(index_kji_axes):
        local = np.clip(positions - lows[axis], 0, block.shape[axis] - 1)
        n = block.shape[axis]
        coordinates.append(torch.from_numpy((2 * local / max(n - 1, 1) - 1).astype(np.float32)))
    k, j, i = torch.meshgrid(*coordinates, indexing="ij")
    grid = torch.stack([i, j, k], dim=-1)[None]
    return F.grid_sample(torch.from_numpy(np.ascontiguousarray(block))[None, None], grid, mode="bilinear",
                         padding_mode="border", align_corners=True)[0, 0].numpy()


def host_outside_mask(axes_kji, shape_kji) -> np.ndarray:
    inside = [(a >= -0.5) & (a <= n - 0.5) for a, n in zip(axes_kji, shape_kji)]
    return ~(inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :])


def host_keep_clicked_parts(mask: np.ndarray, clicks_kji: np.ndarray) -> np.ndarray:
    parts, count = connected_regions(mask)
    inside = np.all((clicks_kji >= 0) & (clicks_kji < mask.shape), axis=1)
    hit = np.unique(parts[tuple(clicks_kji[inside].T)]) if inside.any() else np.zeros(0, int)
    hit = hit[hit > 0]
    if count <= 1 or not len(hit):
        return mask
    return np.isin(parts, hit)


def host_negative_rule(probability: np.ndarray, positives_dhw, negatives_dhw) -> np.ndarray:
    size = probability.shape
    axes = [np.arange(n, dtype=np.float32) for n in size]

    def nearest(points):
        best = np.full(size, np.inf, np.float32)
        for d, h, w in np.asarray(points, np.float32):
            squared = ((axes[0] - d) ** 2)[:, None, None] + ((axes[1] - h) ** 2)[None, :, None] + ((axes[2] - w) ** 2)
            np.minimum(best, squared, out=best)
        return best

    result = probability.copy()
    result[nearest(negatives_dhw) < nearest(positives_dhw)] = 0.0
    return result


class HostPathSession(AdapterSession):
    """The session with its voxel work done on the host in numpy, as before the device path."""

    def crop_image(self, grid):
        axes_kji = grid.volume_axes_kji()
        crop = self.preset.apply(host_sample_trilinear(self._volume.array, axes_kji))
        crop[host_outside_mask(axes_kji, self._volume.shape_kji)] = 0.0
        return crop

    def _predict(self, crop, positives_dhw, negatives_dhw):
        embedding = self._cache(crop).embedding
        if self.uses_labels:
            points = np.concatenate([positives_dhw, negatives_dhw])
            labels = np.array([1] * len(positives_dhw) + [0] * len(negatives_dhw))
            return self.predictor.predict(embedding, points[:, [0, 2, 1]], labels)
        probability = self.predictor.predict(embedding, positives_dhw[:, [0, 2, 1]]).cpu().numpy()
        if len(negatives_dhw):
            probability = host_negative_rule(probability, positives_dhw, negatives_dhw)
        return torch.from_numpy(probability)

    def _volume_mask(self, crop, probability):
        grid = self._grid(crop)
        box = grid.volume_box(self._volume.shape_kji)
        if box.is_empty:
            return box, np.zeros(box.shape, np.uint8)
        mask = host_sample_trilinear(probability.numpy(), grid.crop_axes_kji(box)) > self.options.threshold
        if self.options.keep_connected:
            seeds = np.round(np.array(crop.seeds))
            mask = host_keep_clicked_parts(mask, seeds[:, ::-1].astype(int) - np.array(box.start))
        return box, mask.astype(np.uint8)


# --- volumes and clicks -------------------------------------------------------------------------
GEOMETRIES = {
    "oblique_flipped_anisotropic": {"spacing": (0.8, 1.1, 2.5), "angles": (20, -10, 35), "flips": (1, -1, 1)},
    "lps_axial_flipped": {"spacing": (0.7, 0.7, 3.0), "angles": (0, 0, 0), "flips": (-1, -1, 1)},
}


def blob_volume(geometry: str, dtype=np.float32) -> Volume:
    """HU noise with two bright blobs (two objects for the kept-object step) in a given geometry."""
    volume = make_volume(shape_kji=(24, 56, 64), origin=(-30.0, 12.0, 40.0), **GEOMETRIES[geometry])
    k, j, i = np.meshgrid(*[np.arange(n) for n in volume.shape_kji], indexing="ij")
    hounsfield = 40 + 15 * volume.array
    hounsfield[((k - 12) / 5) ** 2 + ((j - 28) / 9) ** 2 + ((i - 30) / 9) ** 2 <= 1] += 120
    hounsfield[((k - 12) / 4) ** 2 + ((j - 28) / 6) ** 2 + ((i - 50) / 5) ** 2 <= 1] += 120
    return Volume(hounsfield.astype(dtype), volume.ijk_to_ras)


def ras(volume: Volume, kji) -> np.ndarray:
    return volume.ijk_to_ras_points(np.array(kji[::-1], float))


CLICKS = [((12, 28, 30), True), ((12, 30, 33), True), ((12, 28, 38), False), ((12, 20, 26), False),
          ((12, 28, 52), True), ((12, 26, 27), True)]


def assert_same_masks(device_session, host_session, volume, clicks=CLICKS, check_not_vacuous=True):
    device_session.open_volume(volume)
    host_session.open_volume(volume)
    fractions = []
    for kji, positive in clicks:
        box = device_session.add_point(ras(volume, kji), positive)
        assert box == host_session.add_point(ras(volume, kji), positive)
        np.testing.assert_array_equal(device_session.result, host_session.result, err_msg=f"after click {kji}")
        fractions.append(device_session.result.mean())
    for _ in range(2):  # undo, then a new click: the distance maps follow the restored prompts
        device_session.undo()
        host_session.undo()
    kji, positive = (12, 27, 36), False
    device_session.add_point(ras(volume, kji), positive)
    host_session.add_point(ras(volume, kji), positive)
    np.testing.assert_array_equal(device_session.result, host_session.result)
    if check_not_vacuous:  # the masks compared hold object and background
        assert max(fractions) > 0.005 and min(fractions) < 0.5


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize("growth", [0, 2])
def test_device_path_gives_the_host_path_masks_with_random_weights(geometry, growth):
    model = tiny_model(seed=4)
    # Random weights: lower the threshold to where this model's probabilities split the crop.
    options = AdapterSessionOptions(max_growth_crops=growth, growth_min_voxels=5, threshold=0.45)
    volume = blob_volume(geometry)
    assert_same_masks(AdapterSession(model, "cpu", options), HostPathSession(model, "cpu", options), volume)


def test_device_path_gives_the_host_path_masks_with_the_demo_model():
    from volsam.methods import WeightsChoice, get_method

    loaded = get_method("sam3d-adapter").load_model(WeightsChoice(weights="demo"), torch.device("cpu"))
    volume = blob_volume("oblique_flipped_anisotropic", dtype=np.int16)
    # The same image flipped along k (a negative-stride view) with the matching matrix.
    flip = np.diag([1.0, 1.0, -1.0, 1.0])
    flip[2, 3] = volume.shape_kji[0] - 1
    flipped = Volume(volume.array[::-1], volume.ijk_to_ras @ flip)
    for image in (volume, flipped):
        for options in (AdapterSessionOptions(max_growth_crops=2, growth_min_voxels=5),
                        AdapterSessionOptions(mode="paper", keep_connected=False)):
            flood = AdapterSession(loaded.model, "cpu", replace_keep(options, "flood"))
            assert_same_masks(flood, HostPathSession(loaded.model, "cpu", options), image)


def replace_keep(options: AdapterSessionOptions, method: str) -> AdapterSessionOptions:
    from dataclasses import replace

    return replace(options, keep_method=method)


# --- the pieces ---------------------------------------------------------------------------------
def test_flood_fill_keeps_the_parts_that_scipy_labelling_keeps():
    rng = np.random.default_rng(0)
    for trial in range(20):
        noise = torch.from_numpy(rng.normal(size=(1, 1, 14, 17, 19)).astype(np.float32))
        mask = F.avg_pool3d(noise, 3, 1, 1)[0, 0] > 0.25  # blobs of every shape, several parts
        clicks = rng.integers(-2, 20, size=(rng.integers(0, 5), 3))
        expected = host_keep_clicked_parts(mask.numpy(), clicks)
        for method in ("label", "flood"):
            kept = keep_clicked_parts(mask, clicks, method)
            np.testing.assert_array_equal(kept.numpy(), expected, err_msg=f"trial {trial}, {method}")
    with pytest.raises(ValueError, match="method must be one of"):
        keep_clicked_parts(mask, clicks, "bfs")


def test_nearest_click_map_grows_click_by_click_and_rebuilds_after_an_undo():
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 12, size=(5, 3))
    grown = NearestClick((12, 13, 14), "cpu")
    for n in range(1, 6):
        fresh = NearestClick((12, 13, 14), "cpu")
        np.testing.assert_array_equal(grown.update(points[:n]).numpy(), fresh.update(points[:n]).numpy())
    undone = grown.update(points[[0, 2]])  # not an extension of what it held: rebuilt
    np.testing.assert_array_equal(undone.numpy(), NearestClick((12, 13, 14), "cpu").update(points[[0, 2]]).numpy())


@pytest.mark.parametrize("dtype", [np.int16, np.float64, np.uint16])
def test_the_volume_on_the_device_samples_what_the_host_sampled(dtype):
    array = np.random.default_rng(2).integers(-900, 900 if dtype != np.uint16 else 1800,
                                              size=(9, 10, 11)).astype(dtype)
    tensor = to_device(array[:, ::-1], "cpu")  # a negative-stride view is copied, not refused
    assert tensor.dtype == (torch.int16 if dtype == np.int16 else torch.float32)
    axes = [np.linspace(-1.3, n + 0.4, 7) for n in array.shape]
    np.testing.assert_array_equal(sample_trilinear(tensor, axes).numpy(),
                                  host_sample_trilinear(array[:, ::-1], axes))


def test_warmup_leaves_the_session_as_it_was():
    model = tiny_model(seed=4)
    options = AdapterSessionOptions(max_growth_crops=0, threshold=0.45)
    volume = blob_volume("lps_axial_flipped")
    warm, cold = AdapterSession(model, "cpu", options), AdapterSession(model, "cpu", options)
    for session in (warm, cold):
        session.open_volume(volume)
        session.add_point(ras(volume, CLICKS[0][0]))
    before = warm.result.copy()
    warm.warmup()
    assert warm.volume is volume and len(warm.prompts.clicks) == 1 and np.array_equal(warm.result, before)
    for session in (warm, cold):  # the crop's cached encoder output and history are still there
        session.add_point(ras(volume, CLICKS[1][0]))
        session.undo()
    np.testing.assert_array_equal(warm.result, before)
    for session in (warm, cold):
        session.redo()
    assert warm.result.any()
    np.testing.assert_array_equal(warm.result, cold.result)
