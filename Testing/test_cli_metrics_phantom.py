"""``volsam phantom`` and ``volsam metrics``: outputs, and one-line errors that write nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from volsam.cli import main
from volsam.geometry import Volume
from volsam.io import read_image, write_image, write_mask
from volsam.metrics import compute_metrics
from volsam.phantoms import TUMOR_LABEL, PhantomConfig, make_phantom

CONFIG = PhantomConfig(size_ijk=(48, 48, 32), spacing_ijk=(2.5, 2.5, 4.0))


@pytest.fixture(scope="module")
def masks(tmp_path_factory):
    """A phantom's labels as the reference and a perturbed copy as the prediction."""
    folder = tmp_path_factory.mktemp("masks")
    _, labels, _ = make_phantom(11, CONFIG)
    predicted = labels.array.copy()
    lesion = predicted == TUMOR_LABEL
    predicted[lesion] = 1
    predicted[np.roll(ndimage.binary_erosion(lesion), 2, axis=2)] = TUMOR_LABEL  # smaller and moved 2 voxels
    write_mask(labels.array, labels, folder / "ref.nii.gz")
    write_mask(predicted, labels, folder / "pred.nii.gz")
    write_mask(np.zeros_like(predicted), labels, folder / "empty.nii.gz")
    return folder, labels


def run_main(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_metrics_prints_compute_metrics_as_one_json_object(masks, capsys):
    folder, labels = masks
    for label_options, binarise in (([], lambda a: a != 0), (["--label", "2"], lambda a: a == 2)):
        code, out, err = run_main(capsys, "metrics", "--pred", str(folder / "pred.nii.gz"),
                                  "--ref", str(folder / "ref.nii.gz"), "--tolerance", "2", *label_options)
        assert code == 0 and err == ""
        pred = read_image(folder / "pred.nii.gz").array
        expected = compute_metrics(binarise(pred), binarise(labels.array), labels.spacing, tolerance_mm=2.0)
        assert out.count("\n") == 1
        assert json.loads(out) == pytest.approx(expected, abs=1e-12)


def test_infinite_hd95_is_written_as_null(masks, capsys):
    folder, _ = masks
    code, out, _ = run_main(capsys, "metrics", "--pred", str(folder / "empty.nii.gz"),
                            "--ref", str(folder / "ref.nii.gz"))
    assert code == 0
    assert json.loads(out) == {"dice": 0.0, "iou": 0.0, "nsd": 0.0, "hd95": None}


def test_same_grid_in_another_index_order_is_accepted(masks, tmp_path, capsys):
    folder, labels = masks
    flipped = Volume(np.ascontiguousarray(labels.array[:, :, ::-1]),
                     labels.ijk_to_ras @ np.array([[-1, 0, 0, labels.shape_ijk[0] - 1], [0, 1, 0, 0],
                                                   [0, 0, 1, 0], [0, 0, 0, 1]], float))
    write_image(flipped, tmp_path / "flipped.nii.gz")
    code, out, _ = run_main(capsys, "metrics", "--pred", str(tmp_path / "flipped.nii.gz"),
                            "--ref", str(folder / "ref.nii.gz"))
    assert code == 0
    assert json.loads(out) == {"dice": 1.0, "iou": 1.0, "nsd": 1.0, "hd95": 0.0}


def shifted_copy(labels, folder, name, offset_mm):
    moved = labels.ijk_to_ras.copy()
    moved[:3, 3] += offset_mm
    write_image(Volume(labels.array, moved), folder / name)
    return folder / name


def ct_image(labels, folder):
    image, _, _ = make_phantom(11, CONFIG)
    write_image(image, folder / "ct.nii.gz")
    return folder / "ct.nii.gz"


def test_label_scores_a_binary_prediction_whole_and_an_empty_one_as_zero(masks, tmp_path, capsys):
    """volsam segment writes value 1; --label 2 names the reference's tumour, as the README does."""
    folder, labels = masks
    tumour = labels.array == TUMOR_LABEL
    write_mask(tumour.astype(np.uint8), labels, tmp_path / "binary.nii.gz")
    ref = str(folder / "ref.nii.gz")
    code, out, _ = run_main(capsys, "metrics", "--pred", str(tmp_path / "binary.nii.gz"), "--ref", ref, "--label", "2")
    assert code == 0 and json.loads(out)["dice"] == pytest.approx(1.0)
    code, out, _ = run_main(capsys, "metrics", "--pred", str(folder / "empty.nii.gz"), "--ref", ref, "--label", "2")
    assert code == 0 and json.loads(out)["dice"] == 0.0
    # a multi-label prediction is compared label for label: its organ (1) is not the tumour (2)
    code, out, _ = run_main(capsys, "metrics", "--pred", ref, "--ref", ref, "--label", "2")
    assert code == 0 and json.loads(out)["dice"] == pytest.approx(1.0)


def error_cases(folder, labels):
    ref = str(folder / "ref.nii.gz")
    (folder / "bad.nii.gz").write_text("not an image")
    cropped = Volume(np.ascontiguousarray(labels.array[:, :, 1:]), labels.ijk_to_ras)
    write_image(cropped, folder / "cropped.nii.gz")
    return {
        "missing file": (["--pred", str(folder / "missing.nii.gz"), "--ref", ref], "missing.nii.gz"),
        "unreadable file": (["--pred", str(folder / "bad.nii.gz"), "--ref", ref], "bad.nii.gz"),
        "moved grid": (["--pred", str(shifted_copy(labels, folder, "moved.nii.gz", [0.0, 0.0, 0.01])), "--ref", ref],
                       "voxel grid"),
        "other shape": (["--pred", str(folder / "cropped.nii.gz"), "--ref", ref], "voxel grid"),
        "label not in ref": (["--pred", ref, "--ref", str(folder / "empty.nii.gz"), "--label", "2"], "--ref"),
        "background label": (["--pred", ref, "--ref", ref, "--label", "0"], "--label 0"),
        "CT as prediction": (["--pred", str(ct_image(labels, folder)), "--ref", ref], "not a label image"),
        "no such label": (["--pred", ref, "--ref", ref, "--label", "7"], "label 7"),
        "negative tolerance": (["--pred", ref, "--ref", ref, "--tolerance=-1"], "--tolerance"),
    }


def test_each_error_exits_2_with_one_stderr_line_and_writes_nothing(masks, tmp_path, capsys):
    folder, labels = masks
    cases = error_cases(tmp_path, labels)
    for target in ("ref.nii.gz", "empty.nii.gz"):
        (tmp_path / target).write_bytes((folder / target).read_bytes())
    files_before = sorted(p.name for p in tmp_path.iterdir())
    for name, (argv, mentioned) in cases.items():
        code, out, err = run_main(capsys, "metrics", *argv)
        assert code == 2, name
        assert out == "", name
        assert err.count("\n") == 1 and err.startswith("volsam metrics: error: "), (name, err)
        assert mentioned in err, (name, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before


def test_tiny_float_differences_within_tolerance_are_the_same_grid(masks, tmp_path, capsys):
    folder, labels = masks
    nudged = shifted_copy(labels, tmp_path, "nudged.nii.gz", [0.0, 0.0, 2e-5])
    code, out, _ = run_main(capsys, "metrics", "--pred", str(nudged), "--ref", str(folder / "ref.nii.gz"))
    assert code == 0 and json.loads(out)["dice"] == 1.0


def test_metrics_as_a_subprocess(masks):
    folder, _ = masks
    ok = subprocess.run([sys.executable, "-m", "volsam", "metrics", "--pred", str(folder / "pred.nii.gz"),
                         "--ref", str(folder / "ref.nii.gz")], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and set(json.loads(ok.stdout)) == {"dice", "iou", "nsd", "hd95"}
    failed = subprocess.run([sys.executable, "-m", "volsam", "metrics", "--pred", str(folder / "nope.nii.gz"),
                             "--ref", str(folder / "ref.nii.gz")], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.count("\n") == 1 and failed.stderr.startswith("volsam metrics: error: ")


def test_phantom_writes_the_requested_grid(tmp_path, capsys):
    out_dir = tmp_path / "phantoms"
    code, out, err = run_main(capsys, "phantom", str(out_dir), "--cases", "2", "--seed", "4", "--size", "48,40,24",
                              "--spacing", "3,3,4.5", "--oblique", "--flip")
    assert code == 0 and err == "" and "2 phantoms" in out
    phantoms = json.loads((out_dir / "phantoms.json").read_text())
    assert phantoms["config"]["flip_ijk"] == [True, False, False]
    for case_id in ("phantom_000", "phantom_001"):
        image = read_image(out_dir / "imagesTr" / f"{case_id}_0000.nii.gz")
        assert image.shape_ijk == (48, 40, 24)
        np.testing.assert_allclose(image.spacing, (3.0, 3.0, 4.5), atol=1e-5)
        assert np.linalg.det(image.direction_ras) < 0
        np.testing.assert_allclose(image.ijk_to_ras, phantoms["cases"][case_id]["ijk_to_ras"], atol=1e-4)
    assert json.loads((out_dir / "dataset.json").read_text())["numTraining"] == 2


def test_phantom_flip_axes_and_bad_options(tmp_path, capsys):
    code, _, _ = run_main(capsys, "phantom", str(tmp_path / "ik"), "--cases", "1", "--size", "40,40,24",
                          "--spacing", "3.5,3.5,5", "--flip", "ik")
    assert code == 0
    assert json.loads((tmp_path / "ik" / "phantoms.json").read_text())["config"]["flip_ijk"] == [True, False, True]
    for argv, mentioned in ((["--flip", "x"], "--flip"), (["--size", "40.5,40,24"], "--size"),
                            (["--spacing", "0,1,1"], "--spacing"), (["--cases", "0"], "cases")):
        code, out, err = run_main(capsys, "phantom", str(tmp_path / "bad"), *argv)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and err.startswith("volsam phantom: error: ") and mentioned in err, err
    assert not (tmp_path / "bad").exists()
