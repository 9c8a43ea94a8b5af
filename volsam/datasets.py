"""Labelled datasets in the nnU-Net v2 / Medical Segmentation Decathlon layout, and their splits.

A dataset folder holds ``dataset.json``, ``imagesTr/`` and ``labelsTr/`` (plus, optionally,
``imagesTs/``, ``labelsTs/`` and a splits file). Two flavours of ``dataset.json`` are read:

* nnU-Net v2: ``labels`` maps names to values (``{"background": 0, "tumor": 2}``),
  ``channel_names`` names the modality, ``file_ending`` gives the extension, and images are
  ``imagesTr/{case}_0000{file_ending}`` beside ``labelsTr/{case}{file_ending}``.
* MSD: ``labels`` maps values to names (``{"0": "background", "1": "cancer"}``), ``modality``
  names the modality, and ``training`` lists ``{"image": "./imagesTr/x.nii.gz", "label": ...}``.
  MSD's ``imagesTs`` has no labels and is never used.

Only the first channel of an image is used (the models see one grey value per voxel).

Splits: a file ``splits_final.json`` or ``splits.json`` in the dataset folder (or one given
explicitly) holds either nnU-Net's list of folds ``[{"train": [...], "val": [...]}, ...]`` or a
single such object; a fold may also list ``"test"`` cases. Without a file, the split is made
here, reproducibly: case ids sorted, shuffled with a fixed seed, 20 % test and 10 % validation
(labelled ``labelsTs`` cases, when present, are the test set instead).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATASET_JSON = "dataset.json"
SPLIT_FILE_NAMES = ("splits_final.json", "splits.json")
SPLITS = ("train", "val", "test", "all")
#: Fractions of the automatic split (when the dataset has no splits file).
AUTO_TEST_FRACTION = 0.2
AUTO_VAL_FRACTION = 0.1
AUTO_SPLIT_SEED = 0

_LAYOUT = ("a dataset in the nnU-Net v2 / Medical Segmentation Decathlon layout "
           "(dataset.json, imagesTr/, labelsTr/)")


@dataclass(frozen=True)
class Case:
    """One labelled case: the image's first channel and its label map."""

    case_id: str
    image: Path
    label: Path


@dataclass(frozen=True)
class Dataset:
    """A parsed dataset folder."""

    root: Path
    name: str
    labels: dict[str, int]  # label name -> value (background included)
    modality: str  # name of channel 0, e.g. "CT", "MRI", "T2"
    training: tuple[Case, ...]  # imagesTr / labelsTr
    labelled_test: tuple[Case, ...]  # imagesTs / labelsTs pairs, when labels exist
    split_file: Path | None
    folds: tuple[dict[str, tuple[str, ...]], ...] | None

    @property
    def is_ct(self) -> bool:
        return self.modality.strip().upper() == "CT"

    def label_value(self, label: str | int) -> int:
        """The label value meant by a name ("tumor") or a number ("2", 2)."""
        text = str(label).strip()
        if text.lstrip("-").isdigit():
            value = int(text)
        elif text in self.labels:
            value = self.labels[text]
        else:
            raise ValueError(f"label {label!r} is not in {self.root / DATASET_JSON} (labels: "
                             f"{_describe_labels(self.labels)})")
        if value == 0:
            raise ValueError("label 0 is the background; pick a foreground label, e.g. "
                             f"{_describe_labels(self.labels)}")
        if value not in self.labels.values():
            raise ValueError(f"label value {value} is not declared in {self.root / DATASET_JSON} "
                             f"(labels: {_describe_labels(self.labels)})")
        return value

    def label_name(self, value: int) -> str:
        return next((name for name, v in self.labels.items() if v == value), str(value))

    def cases(self, split: str, fold: int = 0) -> tuple[Case, ...]:
        """The cases of ``split`` ("train", "val", "test" or "all" labelled training cases)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if split == "all":
            return self.training
        by_id = {case.case_id: case for case in self.training}
        if self.folds is not None:
            if not 0 <= fold < len(self.folds):
                raise ValueError(f"fold {fold} does not exist in {self.split_file} "
                                 f"(it holds {len(self.folds)} fold(s))")
            chosen = self.folds[fold]
            if split in chosen:
                unknown = [c for c in chosen[split] if c not in by_id and c not in self._test_ids]
                if unknown:
                    raise ValueError(f"{self.split_file}: fold {fold} {split} names cases that are not "
                                     f"in imagesTr/labelsTr: {', '.join(unknown[:5])}"
                                     f"{' ...' if len(unknown) > 5 else ''}")
                test_by_id = {case.case_id: case for case in self.labelled_test}
                return tuple(by_id.get(c) or test_by_id[c] for c in chosen[split])
            if split == "test" and self.labelled_test:
                return self.labelled_test
            raise ValueError(f"{self.split_file}: fold {fold} has no {split!r} list and the dataset has "
                             "no labelsTs/; evaluate with --split val or --split all")
        train, val, test = automatic_split([case.case_id for case in self.training],
                                           has_labelled_test=bool(self.labelled_test))
        if split == "test" and self.labelled_test:
            return self.labelled_test
        return tuple(by_id[c] for c in {"train": train, "val": val, "test": test}[split])

    @property
    def _test_ids(self) -> set[str]:
        return {case.case_id for case in self.labelled_test}


def _describe_labels(labels: dict[str, int]) -> str:
    return ", ".join(f"{name}={value}" for name, value in labels.items())


def automatic_split(case_ids: list[str], has_labelled_test: bool = False
                    ) -> tuple[list[str], list[str], list[str]]:
    """Reproducible train / val / test lists from sorted case ids (see the module docstring).

    Small datasets keep at least one training case; validation gets a case from 2 cases on,
    the test set from 3 on (unless labelled test cases exist elsewhere).
    """
    ids = sorted(case_ids)
    order = np.random.default_rng(AUTO_SPLIT_SEED).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    n = len(ids)
    n_test = 0 if has_labelled_test or n < 3 else max(1, round(AUTO_TEST_FRACTION * n))
    n_val = 0 if n < 2 else max(1, round(AUTO_VAL_FRACTION * n))
    test, val, train = shuffled[:n_test], shuffled[n_test:n_test + n_val], shuffled[n_test + n_val:]
    return sorted(train), sorted(val), sorted(test)


def load_dataset(root: str | os.PathLike, split_file: str | os.PathLike | None = None) -> Dataset:
    """Parse a dataset folder; every problem is a ValueError naming the file at fault."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: no such folder; expected {_LAYOUT}")
    json_path = root / DATASET_JSON
    if not json_path.is_file():
        raise ValueError(f"{root}: has no {DATASET_JSON}; expected {_LAYOUT}")
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{json_path}: not valid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{json_path}: expected a JSON object, got {type(meta).__name__}")  # noqa: TRY004
    labels = _parse_labels(meta, json_path)
    modality = _parse_modality(meta)
    file_ending = str(meta.get("file_ending", ".nii.gz"))
    training = _training_cases(root, meta, file_ending, json_path)
    labelled_test = _labelled_test_cases(root, file_ending)
    split_path = Path(split_file) if split_file is not None else next(
        (root / name for name in SPLIT_FILE_NAMES if (root / name).is_file()), None)
    folds = _parse_splits(split_path) if split_path is not None else None
    return Dataset(root=root, name=str(meta.get("name", root.name)), labels=labels, modality=modality,
                   training=training, labelled_test=labelled_test, split_file=split_path, folds=folds)


def _parse_labels(meta: dict, json_path: Path) -> dict[str, int]:
    raw = meta.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{json_path}: needs a 'labels' object, e.g. {{\"background\": 0, \"tumor\": 1}}")
    labels: dict[str, int] = {}
    msd_style = all(str(k).strip().lstrip("-").isdigit() for k in raw) and all(isinstance(v, str) for v in raw.values())
    for key, value in raw.items():
        name, number = (value, key) if msd_style else (key, value)
        if isinstance(number, list):  # nnU-Net region-based labels: a region is not one value
            raise ValueError(f"{json_path}: label {name!r} is a region {number}; only plain label values "  # noqa: TRY004
                             "are supported")
        try:
            labels[str(name)] = int(number)
        except (TypeError, ValueError):
            raise ValueError(f"{json_path}: label {name!r} has value {number!r}; expected a whole number") from None
    return labels


def _parse_modality(meta: dict) -> str:
    channels = meta.get("channel_names") or meta.get("modality") or {}
    if isinstance(channels, dict) and channels:
        first = channels.get("0", next(iter(channels.values())))
        return str(first)
    return "unknown"


def _training_cases(root: Path, meta: dict, file_ending: str, json_path: Path) -> tuple[Case, ...]:
    listed = meta.get("training")
    cases = []
    if isinstance(listed, list) and listed and isinstance(listed[0], dict) and "image" in listed[0]:
        for entry in listed:  # MSD: explicit pairs (paths relative to the dataset folder)
            image, label = root / str(entry["image"]), root / str(entry.get("label", ""))
            if not label.is_file():
                raise ValueError(f"{json_path}: training label {entry.get('label')!r} does not exist")
            if not image.is_file():
                # MSD lists 4D images without the channel suffix; nnU-Net conversions add _0000.
                stem = image.name[:-len(file_ending)] if image.name.endswith(file_ending) else image.stem
                alternative = image.with_name(f"{stem}_0000{file_ending}")
                if not alternative.is_file():
                    raise ValueError(f"{json_path}: training image {entry['image']!r} does not exist")
                image = alternative
            cases.append(Case(_case_id(label, file_ending), image, label))
    else:
        labels_dir, images_dir = root / "labelsTr", root / "imagesTr"
        if not labels_dir.is_dir() or not images_dir.is_dir():
            raise ValueError(f"{root}: needs imagesTr/ and labelsTr/ folders; expected {_LAYOUT}")
        for label in sorted(labels_dir.iterdir()):
            if label.name.startswith(".") or not label.name.endswith(file_ending):
                continue
            case_id = _case_id(label, file_ending)
            image = images_dir / f"{case_id}_0000{file_ending}"
            if not image.is_file():
                raise ValueError(f"{label}: has no image {image.relative_to(root)} (nnU-Net names images "
                                 f"<case>_0000{file_ending})")
            cases.append(Case(case_id, image, label))
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{json_path}: case ids are not unique")
    return tuple(cases)


def _labelled_test_cases(root: Path, file_ending: str) -> tuple[Case, ...]:
    labels_dir, images_dir = root / "labelsTs", root / "imagesTs"
    if not labels_dir.is_dir() or not images_dir.is_dir():
        return ()
    cases = []
    for label in sorted(labels_dir.iterdir()):
        if not label.name.endswith(file_ending) or label.name.startswith("."):
            continue
        case_id = _case_id(label, file_ending)
        for image in (images_dir / f"{case_id}_0000{file_ending}", images_dir / label.name):
            if image.is_file():
                cases.append(Case(case_id, image, label))
                break
    return tuple(cases)


def _case_id(label: Path, file_ending: str) -> str:
    name = label.name
    return name[:-len(file_ending)] if name.endswith(file_ending) else name.split(".")[0]


def _parse_splits(path: Path) -> tuple[dict[str, tuple[str, ...]], ...]:
    if not path.is_file():
        raise ValueError(f"splits file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    folds = data if isinstance(data, list) else [data]
    parsed = []
    for index, fold in enumerate(folds):
        if not isinstance(fold, dict) or "train" not in fold:
            raise ValueError(f"{path}: fold {index} must be an object with a 'train' list (and 'val', "
                             "optionally 'test'), as nnU-Net's splits_final.json")
        parsed.append({key: tuple(str(c) for c in fold[key]) for key in ("train", "val", "test") if key in fold})
    return tuple(parsed)


# --- checks before training ----------------------------------------------------------------
@dataclass(frozen=True)
class ImageHeader:
    """Geometry of an image file, read without its voxels."""

    size_ijk: tuple[int, ...]
    spacing_ijk: tuple[float, ...]
    origin_lps: tuple[float, ...]
    direction: tuple[float, ...]

    def describe(self) -> str:
        return (f"size {list(self.size_ijk)}, spacing {[round(s, 4) for s in self.spacing_ijk]} mm, "
                f"origin {[round(o, 3) for o in self.origin_lps]}")


def read_header(path: Path) -> ImageHeader:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise ValueError(f"{path}: cannot read the image header") from None
    return ImageHeader(tuple(reader.GetSize()), tuple(reader.GetSpacing()), tuple(reader.GetOrigin()),
                       tuple(reader.GetDirection()))


def check_same_geometry(case: Case, tolerance_mm: float = 1e-3) -> None:
    """Raise ValueError when a case's image and label are not on the same voxel grid."""
    image, label = read_header(case.image), read_header(case.label)
    if len(image.size_ijk) != 3 and not (len(image.size_ijk) == 4 and image.size_ijk[3] >= 1):
        raise ValueError(f"{case.image}: expected a 3D image, got size {list(image.size_ijk)}")
    same = (image.size_ijk[:3] == label.size_ijk[:3]
            and np.allclose(image.spacing_ijk[:3], label.spacing_ijk[:3], atol=tolerance_mm)
            and np.allclose(image.origin_lps[:3], label.origin_lps[:3], atol=tolerance_mm)
            and np.allclose(np.reshape(image.direction, (len(image.size_ijk),) * 2)[:3, :3],
                            np.reshape(label.direction, (len(label.size_ijk),) * 2)[:3, :3], atol=1e-4))
    if not same:
        raise ValueError(f"case {case.case_id}: image and label have different geometry (image "
                         f"{image.describe()}; label {label.describe()}); resample the label onto the image")


def check_cases(cases, what: str = "training") -> None:
    """Non-empty, and every image/label pair on one grid (headers only, so it is quick)."""
    if not cases:
        raise ValueError(f"the {what} set is empty; the dataset (or the split) holds no {what} cases")
    for case in cases:
        check_same_geometry(case)
