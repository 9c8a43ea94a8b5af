"""Reading images and writing masks, through SimpleITK.

Supported inputs: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) and a
folder holding one DICOM series. Images must be 3D and scalar.

Non-finite voxels: NaN and +-Inf are replaced by the smallest finite value of the image
(air in CT), with a warning, because every model here z-scores or windows its input and a
single NaN would spread through the whole prediction.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .geometry import Volume, volume_from_sitk, volume_to_sitk

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


class ImageReadError(ValueError):
    """The file is missing, unreadable or not a 3D scalar image."""


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def read_image(path: str | os.PathLike) -> Volume:
    """Read a 3D scalar image (file or DICOM series folder) into a :class:`Volume`."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"no such file or folder: {path}")
    if path.is_dir():
        image = _read_dicom_series(path)
    else:
        if _suffix(path) not in IMAGE_SUFFIXES and _suffix(path) != ".dcm":
            raise ImageReadError(f"{path}: unknown image type {_suffix(path)!r}; expected one of "
                                 f"{', '.join(IMAGE_SUFFIXES)} or a DICOM series folder")
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as error:
            first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
            raise ImageReadError(f"{path}: cannot read image ({first_line})") from None
    _check_3d_scalar(image, path)
    volume = volume_from_sitk(image)
    return volume.with_array(_finite(volume.array, path))


def _read_dicom_series(folder: Path):
    import SimpleITK as sitk

    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise ImageReadError(f"{folder}: folder holds no DICOM series; expected a file "
                             f"({', '.join(IMAGE_SUFFIXES)}) or a folder of one DICOM series")
    if len(series_ids) > 1:
        raise ImageReadError(f"{folder}: folder holds {len(series_ids)} DICOM series; expected one "
                             "(move each series into a folder of its own)")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_ids[0]))
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise ImageReadError(f"{folder}: cannot read DICOM series ({str(error).strip()[:200]})") from None


def _check_3d_scalar(image, path: Path) -> None:
    dimension, size = image.GetDimension(), image.GetSize()
    if dimension == 4:
        raise ImageReadError(f"{path}: is a 4D image of size {size}; expected a 3D volume "
                             "(extract one time point or channel first)")
    if dimension != 3:
        raise ImageReadError(f"{path}: is a {dimension}D image of size {size}; expected a 3D volume")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per "
                             "voxel (colour or vector image); expected a scalar 3D volume")


def _finite(array: np.ndarray, path: Path) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.floating):
        return array
    finite = np.isfinite(array)
    if finite.all():
        return array
    if not finite.any():
        raise ImageReadError(f"{path}: every voxel is NaN or infinite; expected finite intensities")
    fill = array[finite].min()
    warnings.warn(f"{path}: {int((~finite).sum())} NaN/Inf voxels replaced by the image minimum {fill:g}",
                  stacklevel=3)
    return np.where(finite, array, fill).astype(array.dtype)


def write_image(volume: Volume, path: str | os.PathLike, array: np.ndarray | None = None) -> None:
    """Write ``array`` (default: the volume's own) on the volume's grid, atomically: the file
    appears complete or not at all."""
    import SimpleITK as sitk

    path = Path(path)
    if _suffix(path) not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: unknown image type {_suffix(path)!r}; expected one of {', '.join(IMAGE_SUFFIXES)}")
    if not path.parent.exists():
        raise ValueError(f"{path}: folder {path.parent} does not exist")
    image = volume_to_sitk(volume, array)
    # Write next to the target, then rename: an interrupted write never leaves half a file.
    handle, temporary = tempfile.mkstemp(prefix=".volsam-", suffix=_suffix(path), dir=path.parent)
    os.close(handle)
    try:
        sitk.WriteImage(image, temporary, useCompression=True)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_mask(mask: np.ndarray, reference: Volume, path: str | os.PathLike) -> None:
    """Write a binary or label mask as uint8 in exactly the reference image's geometry."""
    mask = np.asarray(mask)
    if mask.shape != reference.shape_kji:
        raise ValueError(f"mask shape {mask.shape} does not match the reference image's "
                         f"(k, j, i) shape {reference.shape_kji}")
    if mask.dtype == bool or np.issubdtype(mask.dtype, np.integer):
        if mask.size and (mask.min() < 0 or mask.max() > 255):
            raise ValueError(f"mask values must lie in 0..255 for uint8, got {mask.min()}..{mask.max()}")
    else:
        raise ValueError(f"mask must be boolean or integer, got dtype {mask.dtype}")
    write_image(reference, path, mask.astype(np.uint8))
