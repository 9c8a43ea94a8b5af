"""A cache of preprocessed volumes, so that epochs do not resample again.

Each case is stored as two ``.npy`` files (image float32, binary target uint8) and a JSON
record, under a name derived from the preprocessing, the target label and the source files'
size and modification time: change any of them and the entry is rebuilt. Arrays are opened
memory-mapped, so a data-loading worker reads only the voxels of its crop.
Writes go to a temporary name first and are renamed into place, so concurrent processes
(one per GPU) and interrupted runs never see half an entry.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..datasets import Case


@dataclass(frozen=True)
class CachedCase:
    """A preprocessed case: ``image`` and ``label`` are (k, j, i) arrays, memory-mapped (a
    sample reads only its crop), with the label's foreground voxels listed for crop centres."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    foreground: np.ndarray  # flat indices of the label's foreground voxels
    spacing_ijk: tuple[float, float, float]  # of the cached arrays
    source_spacing_ijk: tuple[float, float, float]
    ijk_to_ras: np.ndarray  # of the cached arrays
    foreground_voxels: int
    label_values: tuple[int, ...]  # every value of the source label map
    body_box: tuple[tuple[int, ...], tuple[int, ...]]  # [start, stop) of voxels above the minimum

    @property
    def has_foreground(self) -> bool:
        return self.foreground_voxels > 0

    @functools.cached_property
    def lesions(self) -> list[np.ndarray]:
        """The flat indices of each connected lesion's voxels (a subset of ``foreground``)."""
        from ..clicks import connected_regions

        regions, count = connected_regions(np.asarray(self.label))
        numbers = regions.reshape(-1)[self.foreground]
        return [self.foreground[numbers == n] for n in range(1, count + 1)]


def _source_stamp(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def cache_key(case: Case, preprocessing, label_value: int) -> str:
    text = "|".join([preprocessing.key(), str(label_value), _source_stamp(case.image), _source_stamp(case.label)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class VolumeCache:
    """Preprocessed volumes of one dataset for one preprocessing and target label."""

    def __init__(self, folder: str | os.PathLike, preprocessing, label_value: int):
        self.folder = Path(folder)
        self.preprocessing = preprocessing
        self.label_value = int(label_value)

    def _paths(self, case: Case) -> tuple[Path, Path, Path, Path]:
        stem = f"{case.case_id}.{cache_key(case, self.preprocessing, self.label_value)}"
        return (self.folder / f"{stem}.image.npy", self.folder / f"{stem}.label.npy",
                self.folder / f"{stem}.foreground.npy", self.folder / f"{stem}.json")

    def contains(self, case: Case) -> bool:
        return all(path.is_file() for path in self._paths(case))

    def build(self, case: Case) -> None:
        """Read, check and preprocess one case into the cache (whether or not it is there)."""
        from ..io import read_image

        image, label = read_image(case.image), read_image(case.label)
        if not image.same_geometry(label, tolerance_mm=1e-3):
            raise ValueError(f"case {case.case_id}: image and label have different geometry (image "
                             f"{image.shape_ijk} at {np.round(image.spacing, 4).tolist()} mm, label "
                             f"{label.shape_ijk} at {np.round(label.spacing, 4).tolist()} mm)")
        processed = self.preprocessing.image(image)
        target = self.preprocessing.label(label, self.label_value)
        if target.shape != processed.array.shape:
            raise ValueError(f"case {case.case_id}: preprocessed label {target.shape} and image "
                             f"{processed.array.shape} differ")
        record = {
            "case_id": case.case_id,
            "spacing_ijk": [float(s) for s in processed.spacing],
            "source_spacing_ijk": [float(s) for s in image.spacing],
            "ijk_to_ras": processed.ijk_to_ras.tolist(),
            "foreground_voxels": int(np.count_nonzero(target)),
            "label_values": sorted(int(v) for v in np.unique(label.array)),
            "body_box": [list(map(int, corner)) for corner in body_box(processed.array)],
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        image_path, label_path, foreground_path, record_path = self._paths(case)
        _atomic_save(image_path, lambda f: np.save(f, np.ascontiguousarray(processed.array, dtype=np.float32)))
        _atomic_save(label_path, lambda f: np.save(f, np.ascontiguousarray(target, dtype=np.uint8)))
        _atomic_save(foreground_path, lambda f: np.save(f, np.flatnonzero(target.ravel()).astype(np.int64)))
        # The record goes last: its presence marks a complete entry.
        _atomic_save(record_path, lambda f: f.write(json.dumps(record).encode()))

    def load(self, case: Case) -> CachedCase:
        image_path, label_path, foreground_path, record_path = self._paths(case)
        if not record_path.is_file():
            self.build(case)
        record = json.loads(record_path.read_text())
        return CachedCase(
            case_id=record["case_id"],
            image=np.load(image_path, mmap_mode="r"),
            label=np.load(label_path, mmap_mode="r"),
            foreground=np.load(foreground_path, mmap_mode="r"),
            spacing_ijk=tuple(record["spacing_ijk"]),
            source_spacing_ijk=tuple(record["source_spacing_ijk"]),
            ijk_to_ras=np.array(record["ijk_to_ras"]),
            foreground_voxels=int(record["foreground_voxels"]),
            label_values=tuple(record["label_values"]),
            body_box=(tuple(record["body_box"][0]), tuple(record["body_box"][1])),
        )

    def prepare(self, cases, progress: bool = True, desc: str = "caching") -> list[CachedCase]:
        """Build the missing entries (with a progress bar) and open every case."""
        from tqdm import tqdm

        missing = [case for case in cases if not self.contains(case)]
        for case in tqdm(missing, desc=desc, unit="case", disable=not progress or not missing, leave=False):
            self.build(case)
        return [self.load(case) for case in cases]


class CachedCases(Sequence):
    """Cases of a cache opened on first use, in each process separately (a data-loading worker
    opens its own memory maps instead of receiving copies of the arrays)."""

    def __init__(self, cache: VolumeCache, cases):
        self.cache = cache
        self.cases = list(cases)
        self._opened: dict[int, CachedCase] = {}

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> CachedCase:
        index = int(index)
        if index not in self._opened:
            self._opened[index] = self.cache.load(self.cases[index])
        return self._opened[index]

    def __getstate__(self):
        return {**self.__dict__, "_opened": {}}


def body_box(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box [start, stop) of the voxels above the image's minimum (for the adapter, the
    clip's lower bound): the official crop to the body, margin 0. The whole image if it is
    constant."""
    inside = np.asarray(image) > np.min(image)
    if not inside.any():
        return np.zeros(3, np.int64), np.array(image.shape, np.int64)
    where = [np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    return np.array([w[0] for w in where]), np.array([w[-1] + 1 for w in where])


def _atomic_save(path: Path, write) -> None:
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def check_label_occurs(cached: list[CachedCase], label_value: int, label_name: str) -> None:
    """ValueError when the target label occurs in none of the cases."""
    if any(case.has_foreground for case in cached):
        return
    found = sorted({v for case in cached for v in case.label_values})
    raise ValueError(f"label {label_value} ({label_name}) does not occur in any of the {len(cached)} training "
                     f"case(s); the label maps hold the values {', '.join(map(str, found))}")
