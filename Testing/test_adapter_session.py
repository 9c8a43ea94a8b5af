"""The 3DSAM-adapter click session: geometry of crops and clicks, crop reuse and merging,
negative clicks, growth, the paper's protocol, undo/redo, the CLI runner and bad inputs.

Most tests use :class:`SpherePredictor` (balls of known radius around the clicks) so that
every expected voxel is computable; one test runs the real tiny model end to end.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_volume
from conftest_adapter import SpherePredictor, tiny_model

from volsam.geometry import Box, Volume
from volsam.models.sam3d_adapter.presets import get_preset
from volsam.models.sam3d_adapter.crops import apply_negative_rule, keep_clicked_parts
from volsam.sessions.adapter_session import AdapterSession, AdapterSessionOptions

pytest_plugins = ["conftest_adapter"]

GEOMETRIES = {
    "oblique_flipped_anisotropic": {"spacing": (0.8, 1.1, 2.5), "angles": (20, -10, 35), "flips": (1, -1, 1)},
    "lps_axial_flipped": {"spacing": (0.7, 0.7, 3.0), "angles": (0, 0, 0), "flips": (-1, -1, 1)},
    "flipped_k": {"spacing": (1.0, 1.0, 1.0), "angles": (0, 0, 90), "flips": (1, 1, -1)},
}


def volume_of(name, shape_kji=(30, 60, 70)) -> Volume:
    return make_volume(shape_kji=shape_kji, origin=(-30.0, 12.0, 40.0), **GEOMETRIES[name])


def ramp_volume(name) -> Volume:
    """HU linear in physical space (within every preset's clip range): trilinear sampling is exact."""
    volume = volume_of(name)
    k, j, i = np.meshgrid(*[np.arange(n) for n in volume.shape_kji], indexing="ij")
    ras = volume.ijk_to_ras_points(np.stack([i, j, k], -1).reshape(-1, 3).astype(float))
    hounsfield = 60 + 0.4 * ras[:, 0] - 0.3 * ras[:, 1] + 0.5 * ras[:, 2]
    return Volume(hounsfield.reshape(volume.shape_kji).astype(np.float32), volume.ijk_to_ras)


def session_for(volume, radius=5.0, **options) -> tuple[AdapterSession, SpherePredictor]:
    predictor = SpherePredictor(crop_size=32, radius=radius)
    session = AdapterSession(predictor=predictor, options=AdapterSessionOptions(**options))
    session.open_volume(volume)
    return session, predictor


def voxel_ras(volume, kji) -> np.ndarray:
    return volume.ijk_to_ras_points(np.array(kji[::-1], float))


def distances_mm(volume, box: Box, center_ras) -> np.ndarray:
    k, j, i = np.meshgrid(*[np.arange(a, b) for a, b in zip(box.start, box.stop)], indexing="ij")
    ras = volume.ijk_to_ras_points(np.stack([i, j, k], -1).astype(float))
    return np.linalg.norm(ras - center_ras, axis=-1)


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_clicks_land_on_the_clicked_voxels(geometry):
    volume = ramp_volume(geometry)
    session, predictor = session_for(volume, radius=5.0, max_growth_crops=0)
    voxel = (15, 30, 35)
    click = voxel_ras(volume, voxel)
    session.add_point(click)
    crop = predictor.embedded[0]
    preset = get_preset("ct")
    assert crop[16, 16, 16] == pytest.approx(preset.apply(volume.array[voxel]), abs=1e-4)
    # The whole crop is the ramp sampled on a 1 mm grid along the voxel axes, centred on the click.
    grid = session._grid(session.prompts.crops[0])
    d, h, w = np.meshgrid(*[np.arange(32)] * 3, indexing="ij")
    ijk = grid.crop_to_ijk(np.stack([d, h, w], -1).reshape(-1, 3).astype(float))
    ras = volume.ijk_to_ras_points(ijk)
    inside = volume.contains_ijk(ijk)
    expected = preset.apply(60 + 0.4 * ras[:, 0] - 0.3 * ras[:, 1] + 0.5 * ras[:, 2]).reshape(32, 32, 32)
    assert np.abs(crop.reshape(-1)[inside] - expected.reshape(-1)[inside]).max() < 1e-3
    assert np.all(crop.reshape(-1)[~inside] == 0.0)  # outside the volume: 0 = the dataset mean
    # Crop voxel steps are 1 mm along the volume's i, j, k axes.
    assert np.allclose(np.linalg.norm(ras.reshape(32, 32, 32, 3)[0, 0, 1] - ras.reshape(32, 32, 32, 3)[0, 0, 0]), 1.0)
    assert np.allclose(predictor.calls[0], [[16, 16, 16]])
    # The mask is the 5 mm ball around the click, in physical space.
    mask = session.result
    assert mask[voxel] == 1
    box = Box.from_mask(mask)
    distance = distances_mm(volume, Box((0, 0, 0), volume.shape_kji), click)
    assert np.all(mask[distance < 4.0] == 1) and np.all(mask[distance > 6.0] == 0)
    assert box is not None

    # A second click inside the crop: no new encoder run, its crop coordinates follow the axes.
    second = (15, 30, 38)  # 3 voxels along i = 3 * spacing_i mm along the crop's w axis
    session.add_point(voxel_ras(volume, second))
    assert len(predictor.embedded) == 1
    step_w = 3 * volume.spacing[0]
    assert np.allclose(predictor.calls[-1], [[16, 16, 16], [16, 16 + step_w, 16]], atol=1e-6)  # [d, w, h]


def test_click_outside_opens_a_new_crop_which_wins_in_its_extent():
    volume = Volume.from_spacing(np.zeros((40, 40, 120), np.float32))
    session, predictor = session_for(volume, radius=6.0, max_growth_crops=0)
    session.add_point(voxel_ras(volume, (20, 20, 20)))  # crop A covers i in [4, 36)
    first = session.result.copy()
    assert first[20, 20, 14:27].all() and not first[20, 20, 27:].any()
    session.add_point(voxel_ras(volume, (20, 20, 40)))  # outside A: crop B covers i in [24, 56)
    assert len(predictor.embedded) == 2
    row = session.result[20, 20]
    assert row[14:24].all()  # A's ball outside B's extent stays
    assert not row[24:34].any()  # inside B's extent B decides (its ball is around i = 40)
    assert row[34:47].all() and not row[47:].any()
    assert [tuple(b.start) for b in session.crop_boxes] == [(4, 4, 4), (4, 4, 24)]


def test_negative_clicks_remove_what_is_closer_to_them():
    volume = Volume.from_spacing(np.zeros((40, 40, 60), np.float32))
    session, _ = session_for(volume, radius=8.0, max_growth_crops=0)
    session.add_point(voxel_ras(volume, (20, 20, 20)))
    assert session.result[20, 20, 12:29].all()
    box = session.add_point(voxel_ras(volume, (20, 20, 26)), positive=False)
    row = session.result[20, 20]
    assert row[12:24].all() and not row[24:].any()  # voxel 23 is 3 mm from both clicks: a tie keeps it
    assert box is not None and box.contains_kji((20, 20, 25))
    # A negative click outside every crop changes nothing now but is remembered.
    assert session.add_point(voxel_ras(volume, (20, 20, 55)), positive=False) is None
    assert len(session.prompts.clicks) == 3

    probability = np.ones((5, 5, 5), np.float32)
    kept = apply_negative_rule(probability, np.array([[2.0, 2.0, 0.0]]), np.array([[2.0, 2.0, 4.0]]))
    assert kept[2, 2].tolist() == [1, 1, 1, 0, 0]  # the middle voxel is a tie and stays


class SphereAndDecoy(SpherePredictor):
    """Balls around the clicks, plus a decoy ball the user never clicked in a crop corner."""

    def predict(self, embedding, points_dwh, labels=None):
        probability = super().predict(embedding, points_dwh, labels)
        probability[:6, :6, :6] = 1.0
        return probability


@pytest.mark.parametrize("mode", ["interactive", "paper"])
def test_only_the_clicked_object_is_kept(mode):
    volume = Volume.from_spacing(np.zeros((40, 40, 40), np.float32))
    sessions = {}
    for keep in (True, False):
        session = AdapterSession(predictor=SphereAndDecoy(crop_size=32, radius=4.0),
                                 options=AdapterSessionOptions(mode=mode, keep_connected=keep, max_growth_crops=0))
        session.open_volume(volume)
        session.add_point(voxel_ras(volume, (20, 20, 20)))
        sessions[keep] = session.result.copy()
    assert sessions[True][20, 20, 20] and sessions[False][20, 20, 20]
    decoy = sessions[False] & ~sessions[True]
    assert decoy.sum() == 6 ** 3 and not sessions[True][:10, :10, :10].any()

    parts = np.zeros((5, 5, 9), bool)
    parts[1:3, 1:3, 1:3] = parts[1:3, 1:3, 5:8] = True
    assert keep_clicked_parts(parts, np.array([[1, 1, 6]])).sum() == 12  # the clicked part
    assert keep_clicked_parts(parts, np.array([[1, 1, 1], [2, 2, 7]])).sum() == 20  # both clicked
    assert keep_clicked_parts(parts, np.array([[4, 4, 4], [9, 9, 9]])).sum() == 20  # none on a part: all


def test_undo_and_redo_restore_masks_exactly():
    volume = volume_of("oblique_flipped_anisotropic")
    buffer = np.zeros(volume.shape_kji, np.uint8)
    buffer[0, 0, :5] = 7  # the caller's own content outside every crop is never touched
    predictor = SpherePredictor(crop_size=32, radius=6.0)
    session = AdapterSession(predictor=predictor, options=AdapterSessionOptions(max_growth_crops=0))
    session.open_volume(volume, buffer)
    snapshots = [buffer.copy()]
    clicks = [((15, 30, 35), True), ((15, 40, 35), True), ((15, 30, 38), False), ((3, 5, 8), True)]
    for voxel, positive in clicks:
        session.add_point(voxel_ras(volume, voxel), positive)
        snapshots.append(buffer.copy())
    session.reset()
    snapshots.append(buffer.copy())
    assert not buffer[1:].any() and buffer[0, 0, :5].tolist() == [0] * 5
    for expected in reversed(snapshots[:-1]):
        session.undo()
        assert np.array_equal(buffer, expected)
    assert session.undo() is None and not session.can_undo
    for expected in snapshots[1:]:
        session.redo()
        assert np.array_equal(buffer, expected)
    assert session.redo() is None
    # Undo, then a new click: the redo branch is dropped, the state follows the mask.
    session.undo()
    session.undo()
    assert np.array_equal(buffer, snapshots[-3]) and len(session.prompts.clicks) == 3
    session.add_point(voxel_ras(volume, (20, 30, 40)))
    assert not session.can_redo and len(session.prompts.clicks) == 4
    assert session.result is buffer


def test_growth_follows_the_mask_beyond_the_crop():
    # 32 voxels across k and j: the crop spans them, so only its i faces have volume beyond.
    volume = Volume.from_spacing(np.zeros((32, 32, 150), np.float32))
    session, predictor = session_for(volume, radius=40.0, max_growth_crops=2, growth_min_voxels=5)
    session.add_point(voxel_ras(volume, (16, 16, 60)))
    first_box = session.crop_boxes[0]
    assert len(predictor.embedded) == 3  # the first crop and two neighbours along i
    row = session.result[16, 16]
    assert row[first_box.stop[2]:first_box.stop[2] + 10].all() and row[first_box.start[2] - 10:first_box.start[2]].all()
    assert {c.origin for c in session.prompts.crops} == {"click", "growth"}
    session.undo()
    assert not session.result.any() and session.prompts.crops == ()

    # Crop faces on the volume's border open nothing; and the limit holds.
    small, predictor = session_for(Volume.from_spacing(np.zeros((20, 20, 20), np.float32)), radius=40.0)
    small.add_point(voxel_ras(small.volume, (10, 10, 10)))
    assert len(predictor.embedded) == 1
    capped, predictor = session_for(volume, radius=40.0, max_growth_crops=0)
    capped.add_point(voxel_ras(volume, (16, 16, 60)))
    assert len(predictor.embedded) == 1


def test_paper_mode_crops_once_around_the_clicks():
    volume = Volume.from_spacing(np.zeros((40, 40, 150), np.float32), spacing=(1.0, 1.0, 2.0))
    session, predictor = session_for(volume, radius=40.0, mode="paper", growth_min_voxels=1)
    session.add_point(voxel_ras(volume, (10, 20, 60)))
    session.add_point(voxel_ras(volume, (15, 20, 71)))
    # Centre on the 1 mm grid: floor((min + max) / 2) per axis: i 65.5 -> 65, k (mm) 20..30 -> 25.
    center = session.prompts.crops[0].center_ijk
    assert center == (65.0, 20.0, 12.5)
    assert predictor.calls[-1].tolist() == [[11.0, 11.0, 16.0], [21.0, 22.0, 16.0]]  # [d, w, h] integers
    assert len(predictor.embedded) == 2  # the centre moved, so the second click re-encodes
    mask = session.result
    box = session.crop_boxes[0]
    outside = mask.copy()
    outside[box.slices] = 0
    assert mask[box.slices].any() and not outside.any()  # nothing outside the one crop
    # Several clicks at once: one crop, one encoder run; the same result as clicking one by one.
    batch, predictor = session_for(volume, radius=40.0, mode="paper")
    batch.add_points([voxel_ras(volume, (10, 20, 60)), voxel_ras(volume, (15, 20, 71))])
    assert len(predictor.embedded) == 1 and np.array_equal(batch.result, mask)


def test_bad_inputs_are_clear_errors():
    volume = volume_of("flipped_k")
    session, _ = session_for(volume)
    with pytest.raises(ValueError, match="lies outside the image"):
        session.add_point(voxel_ras(volume, (15, 30, 35)) + 500)
    with pytest.raises(ValueError, match="3 finite coordinates"):
        session.add_point([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="uint8 array of the volume's"):
        session.set_target_buffer(np.zeros(volume.shape_kji, np.float32))
    with pytest.raises(ValueError, match="unknown intensity preset 'liver'"):
        AdapterSession(predictor=SpherePredictor(), options=AdapterSessionOptions(preset="liver"))
    with pytest.raises(ValueError, match="mode must be one of"):
        AdapterSessionOptions(mode="fast")
    fresh = AdapterSession(predictor=SpherePredictor())
    with pytest.raises(ValueError, match="no volume is open"):
        fresh.add_point([0.0, 0.0, 0.0])


def test_real_tiny_model_reuses_its_encoder_output():
    volume = ramp_volume("oblique_flipped_anisotropic")
    session = AdapterSession(tiny_model(seed=4), "cpu", AdapterSessionOptions(max_growth_crops=0))
    session.open_volume(volume)
    session.add_point(voxel_ras(volume, (15, 30, 35)))
    embedding = next(iter(session._embeddings.values()))
    session.add_point(voxel_ras(volume, (16, 31, 35)))
    assert len(session._embeddings) == 1 and next(iter(session._embeddings.values())) is embedding
    assert session.result.dtype == np.uint8 and set(np.unique(session.result)) <= {0, 1}


def test_registry_loads_a_checkpoint_and_opens_a_protocol_session(tmp_path):
    from volsam.methods import SessionSettings, WeightsChoice, get_method
    from volsam.models.sam3d_adapter.checkpoints import save_checkpoint
    from volsam.sessions.protocol import UnsupportedPrompt

    method = get_method("sam3d-adapter")
    path = save_checkpoint(tiny_model(seed=5), tmp_path / "tiny.safetensors")
    volume = ramp_volume("lps_axial_flipped")
    click = voxel_ras(volume, (15, 30, 35))
    loaded = method.load_model(WeightsChoice(weights=str(path)), torch.device("cpu"))
    session = method.open_session(loaded, SessionSettings(preset="kits"))
    session.open_volume(volume)
    session.add_points([click])
    assert session.run().completed and session.run().changed is None  # clicks gave the whole result
    direct = AdapterSession(tiny_model(seed=5), "cpu", AdapterSessionOptions(preset="kits"))
    direct.open_volume(volume)
    direct.add_points([click])
    assert np.array_equal(session.result, direct.result)
    with pytest.raises(UnsupportedPrompt, match="sam3d-adapter takes points, not a box"):
        session.add_box(click, click + 5)
    with pytest.raises(ValueError, match="needs --weights"):
        method.load_model(WeightsChoice(), torch.device("cpu"))
    session.close()
    with pytest.raises(ValueError, match="no volume is open"):
        session.add_point(click)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_refuses_cuda_where_there_is_none(tmp_path, capsys):
    import SimpleITK as sitk

    from volsam.cli import main
    from volsam.geometry import volume_to_sitk

    volume = volume_of("flipped_k")
    sitk.WriteImage(volume_to_sitk(volume), str(tmp_path / "image.nii.gz"))
    click = ",".join(f"{v:.3f}" for v in voxel_ras(volume, (15, 30, 35)))
    code = main(["segment", "--model", "sam3d-adapter", "--weights", "x.pth", "--image", str(tmp_path / "image.nii.gz"),
                 "--point", click, "--device", "cuda", "--out", str(tmp_path / "mask.nii.gz")])
    assert code == 2 and "CUDA is not available" in capsys.readouterr().err
