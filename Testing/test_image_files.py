"""What image reading does with inputs that are not simply whole: the documented rules."""

from __future__ import annotations

import gzip
import os
import stat
import warnings

import numpy as np
import pytest
from test_bad_inputs import write_dicom_series

from volsam.geometry import Volume
from volsam.image_files import check_image_file
from volsam.io import ImageReadError, read_image, write_image


def test_a_dicom_gap_is_named_or_resampled_linearly(tmp_path):
    write_dicom_series(tmp_path / "gap", count=6, spacing=2.0, skip=(3,))
    with pytest.raises(ImageReadError, match=r"slices 3 and 4 of 5 .* spacing is 4 mm, elsewhere 2 mm"):
        read_image(tmp_path / "gap")
    with pytest.warns(UserWarning, match="resampled onto a uniform 2 mm grid"):
        volume = read_image(tmp_path / "gap", allow_gaps=True)
    assert volume.shape_kji == (6, 8, 8)
    assert np.allclose(volume.spacing, (1.0, 1.0, 2.0))
    assert volume.array[:, 0, 0].tolist() == [0, 10, 20, 30, 40, 50]  # slice 3 interpolated between 2 and 4


def test_nan_hidden_by_the_nifti_reader_is_found_and_replaced_by_the_minimum(tmp_path):
    array = np.linspace(-1000, 500, 8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
    array[2, 3, 4] = np.nan
    array[5, 0, 1] = np.inf
    write_image(Volume(array, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.warns(UserWarning, match="2 NaN/Inf voxels replaced by the image minimum -1000"):
        volume = read_image(tmp_path / "nan.nii.gz")
    expected = np.where(np.isfinite(array), array, -1000.0)
    assert np.array_equal(volume.array, expected)


def test_a_whole_file_passes_and_an_uncompressed_copy_too(tmp_path):
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    write_image(Volume(array, np.eye(4)), tmp_path / "a.nii.gz")
    (tmp_path / "a.nii").write_bytes(gzip.decompress((tmp_path / "a.nii.gz").read_bytes()))
    for name in ("a.nii.gz", "a.nii"):
        assert check_image_file(tmp_path / name).nonfinite_indices == []
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert np.array_equal(read_image(tmp_path / name).array, array)


def test_written_images_get_the_mode_the_umask_gives(tmp_path):
    previous = os.umask(0o022)
    try:
        write_image(Volume(np.zeros((2, 2, 2), np.int16), np.eye(4)), tmp_path / "a.nii.gz")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.nii.gz").stat().st_mode) == 0o644
