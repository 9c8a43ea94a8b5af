"""Synthetic phantoms: determinism, nnU-Net layout, labels, lesion sizes and contrast, geometry."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from volsam.geometry import reorient_like
from volsam.io import read_image
from volsam.phantoms import (ORGAN_LABEL, TUMOR_LABEL, VARIATION_FULL, PhantomConfig, Variation,
                             lesion_kinds, make_phantom, write_phantom_dataset)

# About 140 x 140 x 140 mm in 64 x 64 x 40 voxels: fast, yet roomy enough for 40 mm lesions.
SMALL = PhantomConfig(size_ijk=(64, 64, 40), spacing_ijk=(2.2, 2.2, 3.5))
OBLIQUE = PhantomConfig(size_ijk=(96, 96, 32), spacing_ijk=(0.8, 0.8, 2.5), rotation_deg_ras=(12.0, -8.0, 20.0),
                        flip_ijk=(True, False, False), lesion_diameter_median_mm=12.0)


def lesion_components(labels, spacing_ijk):
    """Connected lesions as {component number: volume-equivalent diameter in mm}."""
    components, count = ndimage.label(labels.array == TUMOR_LABEL, np.ones((3, 3, 3)))
    voxel_mm3 = float(np.prod(spacing_ijk))
    volumes = np.bincount(components.ravel())[1:] * voxel_mm3
    return components, {n + 1: (6 * v / np.pi) ** (1 / 3) for n, v in enumerate(volumes)}


def test_same_seed_same_phantom_other_seed_other_phantom():
    image_a, labels_a, info_a = make_phantom(7, SMALL)
    image_b, labels_b, info_b = make_phantom(7, SMALL)
    image_c, _, _ = make_phantom(8, SMALL)
    np.testing.assert_array_equal(image_a.array, image_b.array)
    np.testing.assert_array_equal(labels_a.array, labels_b.array)
    assert info_a == info_b
    assert not np.array_equal(image_a.array, image_c.array)


def test_dataset_has_nnunet_layout(tmp_path):
    write_phantom_dataset(tmp_path, cases=2, seed=3, config=SMALL)
    dataset = json.loads((tmp_path / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "CT"}
    assert dataset["labels"] == {"background": 0, "organ": 1, "tumor": 2}
    assert dataset["numTraining"] == 2 and dataset["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (tmp_path / "imagesTr").iterdir()) == ["phantom_000_0000.nii.gz",
                                                                       "phantom_001_0000.nii.gz"]
    assert sorted(p.name for p in (tmp_path / "labelsTr").iterdir()) == ["phantom_000.nii.gz", "phantom_001.nii.gz"]

    phantoms = json.loads((tmp_path / "phantoms.json").read_text())
    assert phantoms["seed"] == 3 and sorted(phantoms["cases"]) == ["phantom_000", "phantom_001"]
    for case_id, case in phantoms["cases"].items():
        image = read_image(tmp_path / "imagesTr" / f"{case_id}_0000.nii.gz")
        labels = read_image(tmp_path / "labelsTr" / f"{case_id}.nii.gz")
        assert image.array.dtype == np.int16 and labels.array.dtype == np.uint8
        assert image.same_geometry(labels)
        np.testing.assert_allclose(labels.ijk_to_ras, case["ijk_to_ras"], atol=1e-4)
        assert set(np.unique(labels.array)) == {0, ORGAN_LABEL, TUMOR_LABEL}
        for lesion in case["lesions"]:
            i, j, k = lesion["center_ijk"]
            assert labels.array[k, j, i] == TUMOR_LABEL
            np.testing.assert_allclose(labels.ijk_to_ras_points(np.array([i, j, k], float)),
                                       lesion["center_ras"], atol=1e-3)


def test_first_cases_do_not_depend_on_the_case_count(tmp_path):
    one = write_phantom_dataset(tmp_path / "one", cases=1, seed=5, config=SMALL)
    two = write_phantom_dataset(tmp_path / "two", cases=2, seed=5, config=SMALL)
    assert one["cases"]["phantom_000"] == two["cases"]["phantom_000"]


def test_a_failure_part_way_leaves_no_half_dataset(tmp_path, monkeypatch):
    import volsam.phantoms as phantoms

    made = []

    def fail_on_the_second(seed, config):
        if made:
            raise RuntimeError("disk full")
        made.append(seed)
        return make_phantom(seed, config)

    monkeypatch.setattr(phantoms, "make_phantom", fail_on_the_second)
    with pytest.raises(RuntimeError, match="disk full"):
        write_phantom_dataset(tmp_path / "data", cases=2, seed=3, config=SMALL)
    assert made and sorted(p.name for p in (tmp_path / "data").rglob("*")) == []


def test_a_lesion_rim_reaching_the_border_is_clipped_there():
    # Case (3, 149) of the default grid places a lesion whose rim's whole voxels reach one
    # voxel past the volume's first slice; stamping it used to fail with an IndexError.
    _, labels, info = make_phantom((3, 149))
    components, diameters = lesion_components(labels, (1.5, 1.5, 2.5))
    assert len(diameters) == len(info.lesions) == 2
    for lesion in info.lesions:
        assert components[lesion.center_ijk[::-1]] > 0


@pytest.mark.parametrize("seed", range(4))
def test_lesions_match_their_info_and_sit_inside_organs(seed):
    image, labels, info = make_phantom(seed, SMALL)
    assert 1 <= len(info.lesions) <= 3
    components, diameters = lesion_components(labels, SMALL.spacing_ijk)
    assert len(diameters) == len(info.lesions)
    for lesion in info.lesions:
        i, j, k = lesion.center_ijk
        component = components[k, j, i]
        assert component > 0  # the centre to click on is a lesion voxel
        assert diameters[component] == pytest.approx(lesion.diameter_mm, abs=1e-3)
        assert 5.0 <= lesion.diameter_mm <= 60.0
        assert 20.0 <= abs(lesion.contrast_hu) <= 80.0
    lesions = labels.array == TUMOR_LABEL
    shell = ndimage.binary_dilation(lesions) & ~lesions
    assert np.all(labels.array[shell] == ORGAN_LABEL)  # every lesion is enclosed by organ
    inner = labels.array[2:-2, 2:-2, 2:-2]
    assert np.count_nonzero(labels.array) == np.count_nonzero(inner)  # nothing near the border


def test_default_lesions_are_mostly_10_to_40_mm():
    diameters = [lesion.diameter_mm for seed in range(8) for lesion in make_phantom(seed, SMALL)[2].lesions]
    assert all(5.0 <= d <= 60.0 for d in diameters)
    assert np.mean([10.0 <= d <= 40.0 for d in diameters]) >= 0.7


@pytest.mark.parametrize("config, low, high", [
    (PhantomConfig(size_ijk=(96, 96, 64), spacing_ijk=(3.0, 3.0, 3.5), lesion_diameter_median_mm=60.0,
                   lesion_diameter_log_sigma=0.0), 55.0, 60.0),
    (PhantomConfig(size_ijk=(64, 64, 24), spacing_ijk=(0.8, 0.8, 2.5), lesion_diameter_median_mm=5.0,
                   lesion_diameter_log_sigma=0.0), 5.0, 5.5),
], ids=["60mm", "5mm"])
def test_both_ends_of_the_size_range_are_reachable(config, low, high):
    _, labels, info = make_phantom(0, config)
    _, diameters = lesion_components(labels, config.spacing_ijk)
    assert low <= info.lesions[0].diameter_mm <= high
    assert all(5.0 <= d <= 60.0 for d in diameters.values())


def test_intensities_are_ct_like_and_lesion_contrast_is_as_recorded():
    for config in (replace(SMALL, noise_std_hu=0.0, texture_std_hu=0.0, blur_sigma_voxels=0.0), SMALL):
        image, labels, info = make_phantom(2, config)
        assert image.array[0, 0, 0] < -900  # air in the corner
        organ_mean = image.array[ndimage.binary_erosion(labels.array == ORGAN_LABEL)].mean()
        assert 0 <= organ_mean <= 70
        components, _ = lesion_components(labels, config.spacing_ijk)
        for lesion in info.lesions:
            i, j, k = lesion.center_ijk
            core = ndimage.binary_erosion(components == components[k, j, i])
            if not core.any():
                continue
            measured = image.array[core].mean() - lesion.organ_hu
            assert measured == pytest.approx(lesion.contrast_hu, abs=1.0 if config.noise_std_hu == 0 else 12.0)


@pytest.mark.parametrize("fraction, sign", [(1.0, -1), (0.0, 1)])
def test_hypodense_fraction_sets_the_contrast_sign(fraction, sign):
    _, _, info = make_phantom(1, replace(SMALL, hypodense_fraction=fraction))
    assert all(np.sign(lesion.contrast_hu) == sign for lesion in info.lesions)


def test_anisotropic_oblique_flipped_grid_keeps_its_geometry(tmp_path):
    image, labels, info = make_phantom(4, OBLIQUE)
    np.testing.assert_allclose(image.spacing, OBLIQUE.spacing_ijk)
    assert np.linalg.det(image.direction_ras) < 0  # i is mirrored
    assert not np.allclose(np.abs(image.direction_ras), np.eye(3))  # oblique
    assert image.same_geometry(labels)
    _, diameters = lesion_components(labels, OBLIQUE.spacing_ijk)
    assert sorted(diameters.values()) == pytest.approx(sorted(lesion.diameter_mm for lesion in info.lesions), abs=1e-3)
    for lesion in info.lesions:
        i, j, k = lesion.center_ijk
        assert labels.array[k, j, i] == TUMOR_LABEL
        np.testing.assert_allclose(image.ijk_to_ras_points(np.array([i, j, k], float)), lesion.center_ras, atol=1e-6)

    write_phantom_dataset(tmp_path, cases=1, seed=0, config=OBLIQUE)
    written = read_image(tmp_path / "labelsTr" / "phantom_000.nii.gz")
    assert written.same_geometry(make_phantom((0, 0), OBLIQUE)[1])


def test_flipping_only_reorders_the_same_voxels():
    plain = replace(SMALL, rotation_deg_ras=(5.0, 0.0, 10.0))
    flipped = replace(plain, flip_ijk=(True, False, True))
    image, labels, info = make_phantom(6, plain)
    image_flipped, labels_flipped, info_flipped = make_phantom(6, flipped)
    np.testing.assert_array_equal(reorient_like(image_flipped, image).array, image.array)
    np.testing.assert_array_equal(reorient_like(labels_flipped, labels).array, labels.array)
    for lesion, lesion_flipped in zip(info.lesions, info_flipped.lesions):
        np.testing.assert_allclose(lesion.center_ras, lesion_flipped.center_ras, atol=1e-6)


def test_rewriting_a_dataset_replaces_its_cases_and_removes_stale_staging(tmp_path):
    (tmp_path / "data").mkdir()
    stale = tmp_path / "data" / ".staging-999999999-left-by-a-killed-run"
    stale.mkdir()
    (stale / "imagesTr").mkdir()
    write_phantom_dataset(tmp_path / "data", cases=2, seed=3, config=SMALL)
    (tmp_path / "data" / "splits_final.json").write_text("[]")  # the user's file is kept
    write_phantom_dataset(tmp_path / "data", cases=1, seed=4, config=SMALL)
    names = sorted(str(p.relative_to(tmp_path / "data")) for p in (tmp_path / "data").rglob("*"))
    assert names == ["dataset.json", "imagesTr", "imagesTr/phantom_000_0000.nii.gz", "labelsTr",
                     "labelsTr/phantom_000.nii.gz", "phantoms.json", "splits_final.json"]
    assert json.loads((tmp_path / "data" / "phantoms.json").read_text())["seed"] == 4


def test_a_folder_of_other_files_or_a_file_is_refused_and_left_as_it_was(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    for out in (tmp_path, tmp_path / "mine.txt"):
        with pytest.raises(ValueError, match="holds no phantom dataset|is a file"):
            write_phantom_dataset(out, cases=1, seed=0, config=SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


@pytest.mark.parametrize("options, message", [
    ({"size_ijk": (8, 96, 64)}, "size_ijk"),
    ({"spacing_ijk": (1.0, 0.0, 1.0)}, "spacing_ijk"),
    ({"flip_ijk": (1, 0, 0)}, "flip_ijk"),
    ({"lesions_per_case": (2, 1)}, "lesions_per_case"),
    ({"lesion_diameter_range_mm": (10.0, 5.0)}, "lesion_diameter_range_mm"),
    ({"lesion_diameter_median_mm": 80.0}, "lesion_diameter_median_mm"),
    ({"hypodense_fraction": 1.5}, "hypodense_fraction"),
    ({"noise_std_hu": -1.0}, "noise_std_hu"),
])
def test_bad_config_raises_one_line_value_error(options, message):
    with pytest.raises(ValueError, match=message) as error:
        PhantomConfig(**options)
    assert "\n" not in str(error.value)


def test_image_too_small_for_any_lesion_is_a_clear_error():
    with pytest.raises(ValueError, match="no room"):
        make_phantom(0, PhantomConfig(size_ijk=(16, 16, 16), spacing_ijk=(0.5, 0.5, 0.5)))


# --- domain randomisation (issue 15) ----------------------------------------------------------------
FULL = PhantomConfig(variation=VARIATION_FULL)
FULL_SEEDS = [(15, n) for n in range(10)]


@pytest.fixture(scope="module")
def randomised():
    return [make_phantom(seed, FULL) for seed in FULL_SEEDS]


def test_randomised_phantoms_are_deterministic_per_seed(randomised):
    image, labels, info = make_phantom(FULL_SEEDS[3], FULL)
    np.testing.assert_array_equal(image.array, randomised[3][0].array)
    np.testing.assert_array_equal(labels.array, randomised[3][1].array)
    assert info == randomised[3][2]


def test_randomised_grids_span_the_scanner_looks(randomised):
    spacings = np.array([image.spacing for image, _, _ in randomised])
    assert np.all((spacings[:, :2] >= 0.7 * 0.95) & (spacings[:, :2] <= 1.0 * 1.05))
    assert np.all((spacings[:, 2] >= 1.0) & (spacings[:, 2] <= 3.0)) and np.ptp(spacings[:, 2]) > 0.5
    sizes = np.array([image.shape_ijk for image, _, _ in randomised])
    assert np.all((sizes[:, :2] >= 96) & (sizes[:, :2] <= 128)) and np.all((sizes[:, 2] >= 40) & (sizes[:, 2] <= 72))
    directions = [image.direction_ras for image, _, _ in randomised]
    oblique = [not np.allclose(np.abs(d), np.eye(3), atol=1e-6) for d in directions]
    mirrored = [np.linalg.det(d) < 0 for d in directions]
    assert any(oblique) and not all(oblique) and any(mirrored)
    for direction in directions:  # rotated by at most 20 degrees about each axis
        assert np.all(np.abs(direction).max(axis=0) >= np.cos(np.radians(20)) ** 3 - 1e-6)


def test_randomised_lesions_span_the_kinds_and_match_their_info(randomised):
    lesions = [lesion for _, _, info in randomised for lesion in info.lesions]
    kinds = [lesion_kinds(lesion) for lesion in lesions]
    assert {k["rim"] for k in kinds} == {"rim", "no rim"}
    assert {k["density"] for k in kinds} == {"hypo", "hyper"}
    assert len({k["contrast"] for k in kinds}) >= 2
    assert all(15.0 <= abs(lesion.contrast_hu) <= 45.0 for lesion in lesions)
    assert any(lesion.at_organ_edge for lesion in lesions)
    assert any(lesion.diameter_mm < 10 for lesion in lesions) and any(lesion.diameter_mm > 20 for lesion in lesions)
    for image, labels, info in randomised:
        components, diameters = lesion_components(labels, image.spacing)
        assert len(diameters) == len(info.lesions)  # nearby lesions never merge
        for lesion in info.lesions:
            i, j, k = lesion.center_ijk
            assert components[k, j, i] > 0
            assert diameters[components[k, j, i]] == pytest.approx(lesion.diameter_mm, abs=1e-3)


def test_a_rimmed_lesion_has_a_bright_rim_around_a_darker_core_where_the_centre_lies():
    found = 0
    for n in range(40):
        # A clean look, so the rim and core intensities can be read off exactly.
        image, labels, info = make_phantom((16, n), replace(FULL, variation=replace(
            VARIATION_FULL, rim_probability=1.0, noise_std_hu=(0.0, 0.0), blur_sigma_voxels=(0.0, 0.0),
            texture_std_hu=(0.0, 0.0), organ_texture_std_hu=(0.0, 0.0), lesion_texture_std_hu=(0.0, 0.0),
            lesions_per_case=(1, 1))))
        lesion = info.lesions[0]
        if lesion.rim_mm == 0:
            continue  # too small for a rim
        found += 1
        components, _ = lesion_components(labels, image.spacing)
        i, j, k = lesion.center_ijk
        mask = components == components[k, j, i]
        depth = ndimage.distance_transform_edt(mask, sampling=image.spacing[::-1])
        rim, core = mask & (depth <= lesion.rim_mm - 0.5), mask & (depth > lesion.rim_mm + 0.5)
        assert image.array[k, j, i] == pytest.approx(lesion.organ_hu + lesion.contrast_hu, abs=1.0)
        assert lesion.contrast_hu < 0 < lesion.rim_contrast_hu
        assert np.median(image.array[rim]) > lesion.organ_hu + 10 > lesion.organ_hu - 10 > np.median(image.array[core])
        if found == 3:
            break
    assert found == 3


def test_a_lesion_at_the_organ_edge_bulges_out_of_its_organ():
    variation = replace(VARIATION_FULL, edge_probability=1.0, lesions_per_case=(1, 1))
    _, labels, info = make_phantom((17, 0), PhantomConfig(variation=variation))
    assert info.lesions[0].at_organ_edge
    lesions = labels.array == TUMOR_LABEL
    shell = ndimage.binary_dilation(lesions) & ~lesions
    assert np.any(labels.array[shell] != ORGAN_LABEL)  # not enclosed by organ


def test_clustered_lesions_lie_close_to_each_other():
    variation = replace(VARIATION_FULL, cluster_probability=1.0, lesions_per_case=(3, 3),
                        lesion_diameter_median_mm=12.0, lesion_diameter_log_sigma=0.0)
    image, labels, info = make_phantom((18, 0), PhantomConfig(variation=variation))
    assert len(info.lesions) >= 2
    components, count = ndimage.label(labels.array == TUMOR_LABEL, np.ones((3, 3, 3)))
    assert count == len(info.lesions)
    first = ndimage.distance_transform_edt(components != 1, sampling=image.spacing[::-1])
    gaps = [first[components == n].min() for n in range(2, count + 1)]
    assert min(gaps) <= 3 * 3.0 + 10.0  # organ rims (3 mm each) plus the cluster gap


def test_mr_variant_has_no_hu_and_is_percentile_normalised_by_sam2(tmp_path):
    from volsam.models.sam2_3dmed.frames import guess_modality

    image, labels, info = make_phantom((19, 0), replace(FULL, modality="mr"))
    ct_image, ct_labels, _ = make_phantom((19, 0), FULL)
    np.testing.assert_array_equal(labels.array, ct_labels.array)  # same anatomy, other look
    assert image.array.min() >= 0 and guess_modality(image.array) == "unknown"
    assert guess_modality(ct_image.array) == "ct"
    fat_and_organ = image.array[labels.array == ORGAN_LABEL].mean()
    assert fat_and_organ > 50  # tissue is well above the dark background
    write_phantom_dataset(tmp_path, cases=1, seed=0, config=replace(FULL, modality="mr"))
    assert json.loads((tmp_path / "dataset.json").read_text())["channel_names"] == {"0": "MR"}


def test_cli_variation_full_refuses_grid_options_it_would_ignore(tmp_path, capsys):
    from volsam.cli import main

    assert main(["phantom", str(tmp_path / "a"), "--cases", "1", "--variation", "full", "--spacing", "1,1,1"]) == 2
    assert "--spacing" in capsys.readouterr().err
    assert not (tmp_path / "a" / "dataset.json").exists()
    assert main(["phantom", str(tmp_path / "b"), "--cases", "2", "--seed", "5", "--variation", "full"]) == 0
    written = json.loads((tmp_path / "b" / "phantoms.json").read_text())
    assert written["config"]["variation"]["rim_probability"] == VARIATION_FULL.rim_probability
    first = written["cases"]["phantom_000"]
    assert {"rim_mm", "at_organ_edge", "texture_std_hu"} <= set(first["lesions"][0])
    image = read_image(tmp_path / "b" / "imagesTr" / "phantom_000_0000.nii.gz")
    np.testing.assert_array_equal(image.array, make_phantom((5, 0), FULL)[0].array)


@pytest.mark.parametrize("options, message", [
    ({"rim_probability": 1.5}, "rim_probability"),
    ({"lesion_contrast_hu": (45.0, 15.0)}, "lesion_contrast_hu"),
    ({"slices": (8, 20)}, "slices"),
])
def test_bad_variation_raises_one_line_value_error(options, message):
    with pytest.raises(ValueError, match=message) as error:
        Variation(**options)
    assert "\n" not in str(error.value)
