"""Argument and path checks that run before any heavy import (no numpy, torch, SimpleITK).

Each verb calls these first, so a typo or a missing file is reported in well under a second,
and nothing (no model, no output file, no folder) is made before the inputs are known good.
Every check raises ValueError with one line saying what was wrong and what was expected.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..image_files import IMAGE_SUFFIXES, suffix

#: Below this intensity a voxel is fat or air in Hounsfield units; a body CT always has some.
CT_DARKEST_TISSUE_HU = -100.0


def check_input_image(path: str | os.PathLike, option: str) -> Path:
    """An image file of a known type, or a folder (a DICOM series), that exists and is readable."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{option} {path}: no such file or folder; expected an image "
                         f"({', '.join(IMAGE_SUFFIXES)}) or a DICOM series folder")
    if path.is_file() and suffix(path) not in (*IMAGE_SUFFIXES, ".dcm"):
        raise ValueError(f"{option} {path}: unknown image type {suffix(path)!r}; expected one of "
                         f"{', '.join(IMAGE_SUFFIXES)} or a DICOM series folder")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{option} {path}: not readable (permission denied)")
    return path


def check_input_file(path: str | os.PathLike, option: str, expected: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "no such file"
        raise ValueError(f"{option} {path}: {what}; expected {expected}")
    return path


def check_output_image(path: str | os.PathLike, option: str, inputs=()) -> Path:
    """An image file name to write: a known type, in an existing writable folder, not a folder
    itself, and never one of ``inputs`` (the user's image is not overwritten by a result)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path}: is a folder; expected the name of an image file to write "
                         f"(e.g. {path / 'mask.nii.gz'})")
    if suffix(path) not in IMAGE_SUFFIXES:
        raise ValueError(f"{option} {path}: unknown image type {suffix(path)!r}; expected one of "
                         f"{', '.join(IMAGE_SUFFIXES)}")
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(f"{option} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: folder {parent} is not writable")
    for source in inputs:
        if _same_file(path, Path(source)):
            raise ValueError(f"{option} {path}: is the input image {source}; expected another file name "
                             "(the input is never overwritten)")
    return path


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_positive_number(value, option: str, allow_zero: bool = False) -> None:
    """A finite number > 0 (or >= 0); None (the option left out) passes."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{option} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}")


def check_weights(method_name: str, weights: str | None, option: str = "--weights") -> None:
    """``weights`` ("demo" or a file) exists for the method, before any model code loads."""
    from ..methods import WeightsChoice, get_method

    if weights is None:
        return
    try:
        get_method(method_name).weights_path(WeightsChoice(weights=weights))
    except ValueError as error:
        raise ValueError(f"{option} {weights}: {error}" if option not in str(error) else str(error)) from None


def intensity_warning(volume, path) -> str | None:
    """A warning when an image does not look like CT in Hounsfield units (both methods' models
    were trained on CT: a 0..255 or MR image gives masks of the wrong size), else None."""
    import numpy as np

    flat = np.asarray(volume.array).reshape(-1)
    sample = flat[:: max(1, flat.size // 1_000_000)]
    if float(sample.min()) < CT_DARKEST_TISSUE_HU:
        return None
    return (f"{path}: intensities {float(flat.min()):g}..{float(flat.max()):g} ({flat.dtype}) do not look like CT "
            f"in Hounsfield units (no voxel below {CT_DARKEST_TISSUE_HU:g}: no fat or air); the models were "
            "trained on CT, so the mask may be wrong")
