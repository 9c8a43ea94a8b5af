"""Reading images and writing masks, through SimpleITK, with what ITK does not check checked.

Supported inputs: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) and a
folder holding one DICOM series. Images must be 3D and scalar.

Damaged files are refused, never read as data (``volsam.image_files``): a file shorter than its
header says, a cut or corrupt gzip stream, negative spacings. So are:

- direction matrices that are not orthonormal (a sheared grid): ITK would silently replace
  them by the nearest rotation, putting voxels millimetres away from where the file says;
- DICOM series with missing or unevenly spaced slices (the error names the gap), unless
  ``allow_gaps`` resamples them onto a uniform grid at the series' most common slice spacing
  (linear interpolation between the neighbouring slices), with a warning.

Non-finite voxels: NaN and +-Inf are replaced by the smallest finite value of the image
(air in CT), with a warning, because every model here z-scores or windows its input and a
single NaN would spread through the whole prediction. An image of nothing but NaN is refused.

ITK's own warnings are not printed (they are many lines each); what matters in them is turned
into the errors and warnings above.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .image_files import IMAGE_SUFFIXES, ImageReadError, check_image_file, suffix

if TYPE_CHECKING:
    import numpy as np

    from .geometry import Volume

__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "read_image", "write_image", "write_mask"]

#: Direction columns may deviate this much from unit length and from orthogonality.
ORTHONORMAL_TOLERANCE = 1e-3
#: Slice spacings of a DICOM series may differ by this fraction of the typical spacing.
SLICE_SPACING_TOLERANCE = 0.1


def read_image(path: str | os.PathLike, allow_gaps: bool = False) -> Volume:
    """Read a 3D scalar image (file or DICOM series folder) into a :class:`Volume`."""
    import numpy as np
    import SimpleITK as sitk

    from .geometry import volume_from_sitk

    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"no such file or folder: {path}")
    nonfinite = None
    if path.is_dir():
        image = _read_dicom_series(path, allow_gaps)
    else:
        if suffix(path) not in IMAGE_SUFFIXES and suffix(path) != ".dcm":
            raise ImageReadError(f"{path}: unknown image type {suffix(path)!r}; expected one of "
                                 f"{', '.join(IMAGE_SUFFIXES)} or a DICOM series folder")
        check = check_image_file(path)
        _check_header(path)
        try:
            with _itk_quiet():
                image = sitk.ReadImage(str(path))
        except RuntimeError as error:
            raise ImageReadError(f"{path}: cannot read image ({_last_line(error)})") from None
        if check.nonfinite_indices:
            nonfinite = np.concatenate(check.nonfinite_indices)
            nonfinite = nonfinite[nonfinite < check.voxel_count] if check.voxel_count else nonfinite
    _check_3d_scalar(image, path)
    volume = volume_from_sitk(image)
    return volume.with_array(_finite(volume.array, path, nonfinite))


@contextlib.contextmanager
def _itk_quiet():
    import SimpleITK as sitk

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "unreadable"


def _check_header(path: Path) -> None:
    """Geometry from the header, before the voxels are read: a sheared grid is refused."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with _itk_quiet():
            reader.ReadImageInformation()
    except RuntimeError as error:
        raise ImageReadError(f"{path}: cannot read image ({_last_line(error)})") from None
    dimension = reader.GetDimension()
    _check_orthonormal(reader.GetDirection(), dimension, path)


def _check_orthonormal(direction, dimension: int, path: Path) -> None:
    import numpy as np

    matrix = np.array(direction, float).reshape(dimension, dimension)
    if not np.allclose(matrix.T @ matrix, np.eye(dimension), atol=ORTHONORMAL_TOLERANCE):
        columns = "; ".join(", ".join(f"{v:.4g}" for v in column) for column in matrix.T[:3])
        raise ImageReadError(f"{path}: the direction matrix is not orthonormal (a sheared or scaled grid; axis "
                             f"directions {columns}); expected perpendicular unit axes. Resample the image onto "
                             "a rectangular grid first (e.g. SimpleITK.Resample)")


def _read_dicom_series(folder: Path, allow_gaps: bool):
    import SimpleITK as sitk

    with _itk_quiet():
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise ImageReadError(f"{folder}: folder holds no DICOM series; expected a file "
                             f"({', '.join(IMAGE_SUFFIXES)}) or a folder of one DICOM series")
    if len(series_ids) > 1:
        raise ImageReadError(f"{folder}: folder holds {len(series_ids)} DICOM series; expected one "
                             "(move each series into a folder of its own)")
    reader = sitk.ImageSeriesReader()
    with _itk_quiet():
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_ids[0]))
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        with _itk_quiet():
            image = reader.Execute()
    except RuntimeError as error:
        raise ImageReadError(f"{folder}: cannot read DICOM series ({_last_line(error)})") from None
    _check_orthonormal(image.GetDirection(), image.GetDimension(), folder)
    return _uniform_slices(image, reader, folder, allow_gaps)


def _uniform_slices(image, reader, folder: Path, allow_gaps: bool):
    """The series checked for missing or unevenly spaced slices (or, ``allow_gaps``, resampled)."""
    import numpy as np
    import SimpleITK as sitk

    count = image.GetDepth()
    if count < 3:
        return image
    positions = []
    for index in range(count):
        if not reader.HasMetaDataKey(index, "0020|0032"):
            return image  # no positions to check (e.g. a multi-frame file)
        positions.append([float(v) for v in reader.GetMetaData(index, "0020|0032").split("\\")])
    normal = np.array(image.GetDirection(), float).reshape(3, 3)[:, 2]
    along = np.array(positions) @ normal
    steps = np.diff(along)
    typical = float(np.median(steps))
    uneven = np.flatnonzero(np.abs(steps - typical) > SLICE_SPACING_TOLERANCE * abs(typical))
    if typical == 0 or not uneven.size:
        return image
    first = int(uneven[0])
    gap = (f"between slices {first + 1} and {first + 2} of {count} (at {along[first]:.2f} and "
           f"{along[first + 1]:.2f} mm along the slice normal) the spacing is {steps[first]:.3g} mm, "
           f"elsewhere {typical:.3g} mm")
    if typical < 0 or np.any(steps <= 0):
        raise ImageReadError(f"{folder}: DICOM slices overlap or repeat: {gap}")
    if not allow_gaps:
        raise ImageReadError(f"{folder}: DICOM series has missing or unevenly spaced slices ({len(uneven)} "
                             f"uneven steps): {gap}; expected evenly spaced slices (pass --allow-gaps to "
                             f"resample onto a uniform {typical:.3g} mm grid)")
    warnings.warn(f"{folder}: DICOM series has missing or unevenly spaced slices ({gap}); resampled onto a "
                  f"uniform {typical:.3g} mm grid by linear interpolation between neighbouring slices",
                  stacklevel=4)
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    targets = np.arange(along[0], along[-1] + typical * 0.5, typical)
    upper = np.clip(np.searchsorted(along, targets, side="right"), 1, count - 1)
    weight = ((targets - along[upper - 1]) / (along[upper] - along[upper - 1]))[:, None, None]
    resampled = (1 - weight) * array[upper - 1] + weight * array[upper]
    if np.issubdtype(sitk.GetArrayViewFromImage(image).dtype, np.integer):
        resampled = np.rint(resampled).astype(sitk.GetArrayViewFromImage(image).dtype)
    result = sitk.GetImageFromArray(resampled)
    result.SetOrigin(image.GetOrigin())
    result.SetDirection(image.GetDirection())
    result.SetSpacing((*image.GetSpacing()[:2], typical))
    return result


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


def _finite(array: np.ndarray, path: Path, nonfinite_indices=None) -> np.ndarray:
    """``array`` with NaN/Inf replaced by its finite minimum; ``nonfinite_indices`` (flat, file
    order = (k, j, i) C order) names voxels the reader already turned into numbers."""
    import numpy as np

    if not np.issubdtype(array.dtype, np.floating):
        return array
    finite = np.isfinite(array)
    if nonfinite_indices is not None and len(nonfinite_indices):
        finite.reshape(-1)[nonfinite_indices] = False
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

    from .geometry import volume_to_sitk

    path = Path(path)
    if suffix(path) not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: unknown image type {suffix(path)!r}; expected one of {', '.join(IMAGE_SUFFIXES)}")
    if not path.parent.exists():
        raise ValueError(f"{path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; expected the name of an image file to write")
    image = volume_to_sitk(volume, array)
    # Write next to the target, then rename: an interrupted write never leaves half a file.
    handle, temporary = tempfile.mkstemp(prefix=".volsam-", suffix=suffix(path), dir=path.parent)
    os.close(handle)
    try:
        sitk.WriteImage(image, temporary, useCompression=True)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; a written image gets the usual mode
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def write_mask(mask: np.ndarray, reference: Volume, path: str | os.PathLike) -> None:
    """Write a binary or label mask as uint8 in exactly the reference image's geometry."""
    import numpy as np

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
