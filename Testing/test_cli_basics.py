"""The command line frame: help, version, info, number lists with minus signs, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import make_volume
from volsam import __version__
from volsam.cli import _join_negative_values, build_parser, main
from volsam.io import write_image


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "volsam", *args], capture_output=True, text=True, timeout=120)


def test_version_and_help_load_without_torch():
    probe = ("import sys; sys.modules['torch'] = None; sys.modules['sam2'] = None; "
             "from volsam.cli import build_parser; build_parser().format_help(); print('ok')")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr
    assert run_cli("--version").stdout.strip() == f"volsam {__version__}"


def test_negative_coordinates_parse_as_points():
    argv = ["segment", "--point", "-88.1,101.3,17.7", "--point=-1,-2,-3", "--negative", "-5,6,7",
            "--model", "sam3d-adapter", "--weights", "demo", "--image", "x.nii.gz", "--out", "y.nii.gz"]
    args = build_parser().parse_args(_join_negative_values(argv))
    assert args.point == [(-88.1, 101.3, 17.7), (-1.0, -2.0, -3.0)]
    assert args.negative == [(-5.0, 6.0, 7.0)]


def test_bad_number_list_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", "--point", "1,2", "--model", "sam3d-adapter", "--weights", "demo",
              "--image", "x", "--out", "y.nii.gz"])
    assert exit_info.value.code == 2
    assert "--point needs 3 comma-separated numbers" in capsys.readouterr().err


def test_info_prints_geometry(tmp_path):
    volume = make_volume((3, 4, 5), (0.5, 0.75, 2.0), (0, 0, 0), (-1, -1, 1), (1.0, 2.0, 3.0))
    write_image(volume, tmp_path / "image.nrrd")
    result = run_cli("info", str(tmp_path / "image.nrrd"), "--json")
    info = json.loads(result.stdout)
    assert info["size_ijk"] == [5, 4, 3]
    assert np.allclose(info["spacing_mm"], [0.5, 0.75, 2.0])
    assert info["orientation"] == "LPS"
    assert info["min"] == pytest.approx(float(volume.array.min()))
    human = run_cli("info", str(tmp_path / "image.nrrd")).stdout
    assert "orientation: LPS" in human and "0.5 x 0.75 x 2 mm" in human


def test_info_errors_are_one_line_exit_2(tmp_path):
    result = run_cli("info", str(tmp_path / "missing.nii.gz"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("volsam info: error: ") and "no such file" in result.stderr


def test_segment_point_outside_image_is_an_error(tmp_path):
    volume = make_volume((4, 4, 4), (1, 1, 1), (0, 0, 0), (1, 1, 1), (0.0, 0.0, 0.0))
    write_image(volume, tmp_path / "image.nii.gz")
    result = run_cli("segment", "--model", "sam3d-adapter", "--weights", "demo", "--device", "cpu",
                     "--image", str(tmp_path / "image.nii.gz"), "--point", "-50,0,0",
                     "--out", str(tmp_path / "mask.nii.gz"))
    assert result.returncode == 2
    assert "lies outside the image" in result.stderr
    assert not (tmp_path / "mask.nii.gz").exists()


def test_segment_cuda_without_cuda_is_an_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    write_image(make_volume((8, 8, 8), (1, 1, 1), (0, 0, 0), (1, 1, 1), (0, 0, 0)), tmp_path / "image.nii.gz")
    result = run_cli("segment", "--model", "sam3d-adapter", "--weights", "demo", "--device", "cuda",
                     "--image", str(tmp_path / "image.nii.gz"), "--point", "0,0,0",
                     "--out", str(tmp_path / "mask.nii.gz"))
    assert result.returncode == 2
    assert "CUDA is not available" in result.stderr
