"""The bad-input catalogue: every damaged file and wrong argument we know of, through the CLI.

Each case runs ``python -m volsam ...`` in a subprocess, in a folder of its own, and must end
with exit code 2 and exactly one stderr line "volsam VERB: error: ..." naming the problem (no
traceback), leaving its folder and the shared inputs byte for byte as they were. A few
documented warnings are listed too (exit 0, the warning on a line of its own). Inputs are
built once per module and are a few kB each; the subprocesses run four at a time.
"""

from __future__ import annotations

import hashlib
import json
import locale
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from volsam.geometry import Volume
from volsam.io import write_image, write_mask
from volsam.phantoms import PhantomConfig, write_phantom_dataset

REPO = Path(__file__).resolve().parents[1]
DEMO_ADAPTER = REPO / "volsam" / "demo_models" / "sam3d_adapter_demo.safetensors"
PARALLEL = 4


@dataclass(frozen=True)
class Case:
    """``argv`` may name ``{in}`` (the shared inputs) and ``{run}`` (this case's own folder)."""

    name: str
    argv: tuple[str, ...]
    expect: str  # a piece of the stderr line that says what was wrong
    code: int = 2
    seed_files: dict = field(default_factory=dict)  # files put into {run} first: name -> bytes
    writes: tuple[str, ...] = ()  # files a warning case writes into {run} (an error writes none)


def case(name, argv, expect, code=2, writes=(), **seed_files):
    return Case(name, tuple(argv.split()) if isinstance(argv, str) else tuple(argv), expect, code,
                {k.replace("__", "."): v for k, v in seed_files.items()}, tuple(writes))


# --- inputs -----------------------------------------------------------------------------------
def ct_volume(shape_kji=(12, 16, 16), dtype=np.int16) -> Volume:
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 200, size=shape_kji).astype(dtype)
    ijk_to_ras = np.diag([-0.75, -0.75, 2.0, 1.0])
    return Volume(array, ijk_to_ras)


def write_dicom_series(folder: Path, count=6, spacing=2.0, skip=()):
    """A small CT series; GDCM's writer sets the process locale to "C", which would make later
    tests in this process write text as ASCII, so the locale is restored."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_dicom_slices(folder, count, spacing, skip)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_dicom_slices(folder: Path, count: int, spacing: float, skip) -> None:
    import SimpleITK as sitk

    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.1.4242"
    for k in range(count):
        if k in skip:
            continue
        image = sitk.GetImageFromArray(np.full((1, 8, 8), k * 10, np.int16))
        image.SetSpacing((1.0, 1.0, spacing))
        for tag, value in (("0008|0060", "CT"), ("0020|000e", uid), ("0020|000d", uid + ".1"),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0020|0032", f"0\\0\\{k * spacing}"),
                           ("0020|0013", str(k + 1)), ("0028|0030", "1\\1"), ("0008|0018", f"{uid}.2.{k}"),
                           ("0008|0016", "1.2.840.10008.5.1.4.1.1.2")):
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(image)


class Hostile:
    """Unpickling this would run a shell command: the loader must refuse it unread."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def build_inputs(folder: Path) -> None:
    import SimpleITK as sitk

    from volsam.geometry import volume_to_sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    ct = ct_volume()
    image = volume_to_sitk(ct)
    for name, compressed in (("ct.nii.gz", True), ("ct.nii", False), ("ct.mha", False), ("ct.nrrd", False),
                             ("ct_zlib.mha", True), ("ct_gzip.nrrd", True), ("detached.mhd", False),
                             ("detached.nhdr", False)):
        sitk.WriteImage(image, str(folder / name), compressed)
    mask = np.zeros(ct.shape_kji, np.uint8)
    mask[4:8, 5:10, 5:10] = 1
    write_mask(mask, ct, folder / "mask.nii.gz")
    write_mask(mask * 2, ct, folder / "mask_label2.nii.gz")
    raw = lambda name: (folder / name).read_bytes()

    def put(name, data: bytes):
        (folder / name).write_bytes(data)

    nii, gz, mha, zmha, nrrd, gnrrd = (raw(n) for n in ("ct.nii", "ct.nii.gz", "ct.mha", "ct_zlib.mha", "ct.nrrd",
                                                        "ct_gzip.nrrd"))
    put("cut.nii.gz", gz[:len(gz) // 2])
    put("cut.nii", nii[:-300])
    put("cut.mha", mha[:-300])
    put("cut_zlib.mha", zmha[:-200])
    put("cut.nrrd", nrrd[:-300])
    put("cut_gzip.nrrd", gnrrd[:-200])
    put("empty.nii.gz", b"")
    put("garbage.nii.gz", b"this is not an image" * 10)
    put("garbage.nii", b"\0" * 400)
    put("notes.txt", b"not an image")
    corrupt = bytearray(gz)
    corrupt[len(corrupt) // 2:len(corrupt) // 2 + 40] = bytes(40)
    put("corrupt.nii.gz", bytes(corrupt))
    huge = bytearray(nii)
    struct.pack_into("<4h", huge, 40, 3, 1000, 1000, 1000)
    put("huge_claim.nii", bytes(huge))
    put("huge_claim.mha", mha.replace(b"DimSize = 16 16 12", b"DimSize = 1000 1000 1000"))
    zero_dims = bytearray(nii)
    struct.pack_into("<h", zero_dims, 40, 0)
    put("zero_dims.nii", bytes(zero_dims))
    bitpix = bytearray(nii)
    struct.pack_into("<h", bitpix, 72, 32)
    put("bitpix.nii", bytes(bitpix))
    negative = bytearray(nii)
    struct.pack_into("<f", negative, 80, -0.75)
    put("negative_spacing.nii", bytes(negative))
    put("negative_spacing.mha", mha.replace(b"ElementSpacing = 0.75 0.75 2", b"ElementSpacing = -0.75 0.75 2"))
    put("sheared.mha", mha.replace(b"TransformMatrix = 1 0 0 0 1 0 0 0 1",
                                   b"TransformMatrix = 1 0.3 0 0 1 0 0 0 1"))
    put("scaled.mha", mha.replace(b"TransformMatrix = 1 0 0 0 1 0 0 0 1",
                                  b"TransformMatrix = 2 0 0 0 1 0 0 0 1"))
    assert b"TransformMatrix = 1 0 0 0 1 0 0 0 1" in mha and b"ElementSpacing = 0.75 0.75 2" in mha
    for name in [*folder.glob("detached.raw*"), *folder.glob("detached.zraw")]:
        name.unlink()
    nan = np.full((8, 8, 8), np.nan, np.float32)
    write_image(Volume(nan, np.eye(4)), folder / "all_nan.nii.gz")
    write_image(Volume(nan, np.eye(4)), folder / "all_nan.mha")
    some_nan = np.full((8, 8, 8), -500.0, np.float32)
    some_nan[2, 3, 4] = np.nan
    write_image(Volume(some_nan, np.eye(4)), folder / "some_nan.nii.gz")
    sitk.WriteImage(sitk.Image([8, 8, 4, 2], sitk.sitkInt16), str(folder / "four_d.nii.gz"))
    sitk.WriteImage(sitk.Image([8, 8], sitk.sitkInt16), str(folder / "two_d.nii.gz"))
    sitk.WriteImage(sitk.Image([8, 8, 4], sitk.sitkVectorUInt8, 3), str(folder / "rgb.nii.gz"))
    write_image(Volume(np.full(ct.shape_kji, 0.5, np.float32), ct.ijk_to_ras), folder / "probability.nii.gz")
    write_image(Volume(np.arange(np.prod(ct.shape_kji), dtype=np.uint16).reshape(ct.shape_kji), ct.ijk_to_ras),
                folder / "many_values.nii.gz")
    write_image(Volume(ct.array[:, :, 1:].copy(), ct.ijk_to_ras), folder / "cropped.nii.gz")
    moved = ct.ijk_to_ras.copy()
    moved[0, 3] += 5.0
    write_mask(mask, Volume(mask, moved), folder / "moved_mask.nii.gz")
    write_image(Volume(np.clip(ct.array + 1000, 0, 255).astype(np.uint8), ct.ijk_to_ras), folder / "uint8.nii.gz")
    # air only, big enough that the demo model finds nothing at the click (a tiny one it fills)
    write_image(Volume(np.full((24, 32, 32), -1000, np.int16), np.diag([-1.5, -1.5, 2.5, 1.0])),
                folder / "air.nii.gz")
    write_dicom_series(folder / "dicom_gap", skip=(3,))
    write_dicom_series(folder / "dicom_ok")
    (folder / "no_dicom").mkdir()
    (folder / "no_dicom" / "readme.txt").write_text("no images here")
    # checkpoints
    demo = DEMO_ADAPTER.read_bytes()
    put("header_huge.safetensors", struct.pack("<Q", 2 ** 40) + demo[8:])
    put("header_big.safetensors", struct.pack("<Q", 50_000_000) + demo[8:])
    put("cut.safetensors", demo[: len(demo) // 3])
    put("text.pth", b"just some text, not a checkpoint\n")
    with open(folder / "hostile.pth", "wb") as handle:
        pickle.dump({"state_dict": Hostile(folder / "PWNED")}, handle, protocol=2)
    # a dataset for train / evaluate
    write_phantom_dataset(folder / "data", cases=2, seed=1,
                          config=PhantomConfig(size_ijk=(32, 32, 24), spacing_ijk=(4.0, 4.0, 5.0),
                                               lesion_diameter_median_mm=20.0, lesion_diameter_range_mm=(12, 30)))
    shutil.copytree(folder / "data", folder / "data_cyst")
    meta = json.loads((folder / "data_cyst" / "dataset.json").read_text())
    meta["labels"]["cyst"] = 3  # named in dataset.json, in no case
    (folder / "data_cyst" / "dataset.json").write_text(json.dumps(meta))
    (folder / "no_json").mkdir()
    (folder / "a_file").write_text("a file, not a folder")


# --- the catalogue ------------------------------------------------------------------------------
SEG = "segment --model sam3d-adapter --weights demo --space ijk --point 5,5,5"
SEG2 = "segment --model sam2-3dmed --weights demo --space ijk --point 5,5,5"
TRAIN = "train --model sam3d-adapter --config tiny --data {in}/data --label 2 --steps 1 --workers 0"
EVAL = "evaluate --model sam3d-adapter --weights demo --data {in}/data"
INFO_CASES = [
    case("info missing file", "info {in}/missing.nii.gz", "no such file"),
    case("info unknown type", "info {in}/notes.txt", "unknown image type '.txt'"),
    case("info empty file", "info {in}/empty.nii.gz", "empty.nii.gz"),
    case("info not gzip", "info {in}/garbage.nii.gz", "cannot read image"),
    case("info not nifti", "info {in}/garbage.nii", "not a NIfTI file"),
    case("info gzip cut short", "info {in}/cut.nii.gz", "compressed data stream ends early"),
    case("info gzip corrupt", "info {in}/corrupt.nii.gz", "corrupt"),
    case("info nifti data short", "info {in}/cut.nii", "the file holds"),
    case("info nifti huge claim", "info {in}/huge_claim.nii", "1000 x 1000 x 1000 int16 voxels (2,000,000,000 bytes"),
    case("info nifti zero dims", "info {in}/zero_dims.nii", "damaged NIfTI header"),
    case("info nifti bitpix", "info {in}/bitpix.nii", "bitpix"),
    case("info mha data short", "info {in}/cut.mha", "the file holds"),
    case("info mha huge claim", "info {in}/huge_claim.mha", "1000 x 1000 x 1000"),
    case("info mha zlib cut", "info {in}/cut_zlib.mha", "compressed data stream ends early"),
    case("info nrrd data short", "info {in}/cut.nrrd", "the file holds"),
    case("info nrrd gzip cut", "info {in}/cut_gzip.nrrd", "ends early"),
    case("info mhd data file missing", "info {in}/detached.mhd", "does not exist"),
    case("info nhdr data file missing", "info {in}/detached.nhdr", "does not exist"),
    case("info nifti negative spacing", "info {in}/negative_spacing.nii", "negative voxel spacing"),
    case("info mha negative spacing", "info {in}/negative_spacing.mha", "negative voxel spacing"),
    case("info sheared direction", "info {in}/sheared.mha", "not orthonormal"),
    case("info scaled direction", "info {in}/scaled.mha", "not orthonormal"),
    case("info all NaN nifti", "info {in}/all_nan.nii.gz", "every voxel is NaN"),
    case("info all NaN mha", "info {in}/all_nan.mha", "every voxel is NaN"),
    case("info 4D image", "info {in}/four_d.nii.gz", "4D image"),
    case("info 2D image", "info {in}/two_d.nii.gz", "2D image"),
    case("info colour image", "info {in}/rgb.nii.gz", "components per voxel"),
    case("info DICOM gap", "info {in}/dicom_gap", "missing or unevenly spaced slices"),
    case("info folder without DICOM", "info {in}/no_dicom", "no DICOM series"),
    case("info unknown option", "info {in}/ct.nii.gz --colour", "unrecognized arguments"),
    case("info no image", "info", "required: image"),
    case("unknown verb", "segmnet", "invalid choice"),
]
METRICS_CASES = [
    case("metrics CT as prediction", "metrics --pred {in}/ct.nii.gz --ref {in}/mask.nii.gz", "not a label image"),
    case("metrics CT as reference", "metrics --pred {in}/mask.nii.gz --ref {in}/ct.nii.gz", "not a label image"),
    case("metrics probability map", "metrics --pred {in}/probability.nii.gz --ref {in}/mask.nii.gz",
         "non-integer values"),
    case("metrics too many labels", "metrics --pred {in}/many_values.nii.gz --ref {in}/mask.nii.gz",
         "distinct values"),
    case("metrics label 0", "metrics --pred {in}/mask.nii.gz --ref {in}/mask.nii.gz --label 0", "--label 0"),
    case("metrics label absent from ref", "metrics --pred {in}/mask.nii.gz --ref {in}/mask.nii.gz --label 2",
         "no voxel has label 2"),
    case("metrics other shape", "metrics --pred {in}/cropped.nii.gz --ref {in}/mask.nii.gz", "voxel grid"),
    case("metrics moved grid", "metrics --pred {in}/moved_mask.nii.gz --ref {in}/mask.nii.gz", "voxel grid"),
    case("metrics negative tolerance", "metrics --pred {in}/mask.nii.gz --ref {in}/mask.nii.gz --tolerance=-1",
         "--tolerance"),
    case("metrics NaN tolerance", "metrics --pred {in}/mask.nii.gz --ref {in}/mask.nii.gz --tolerance nan",
         "--tolerance"),
    case("metrics missing pred", "metrics --pred {in}/missing.nii.gz --ref {in}/mask.nii.gz", "--pred"),
    case("metrics missing ref", "metrics --pred {in}/mask.nii.gz --ref {in}/missing.nii.gz", "--ref"),
    case("metrics truncated pred", "metrics --pred {in}/cut.nii.gz --ref {in}/mask.nii.gz", "ends early"),
    case("metrics label not a number", "metrics --pred {in}/mask.nii.gz --ref {in}/mask.nii.gz --label two",
         "invalid int value"),
]
SEGMENT_CASES = [
    case("segment out is the image", f"{SEG} --image {{in}}/ct.nii.gz --out {{in}}/ct.nii.gz", "is the input image"),
    case("segment out is the image by another path", f"{SEG} --image {{in}}/ct.nii.gz --out {{in}}/../in/ct.nii.gz",
         "is the input image"),
    case("segment out is a folder", f"{SEG} --image {{in}}/ct.nii.gz --out {{run}}/masks.nii", "is a folder",
         **{"masks.nii/keep.txt": b"mine"}),
    case("segment out unknown type", f"{SEG} --image {{in}}/ct.nii.gz --out {{run}}/mask.png", "unknown image type"),
    case("segment out folder missing", f"{SEG} --image {{in}}/ct.nii.gz --out {{run}}/nope/mask.nii.gz",
         "does not exist"),
    case("segment image missing", f"{SEG} --image {{in}}/missing.nii.gz --out {{run}}/m.nii.gz", "no such file"),
    case("segment image truncated", f"{SEG} --image {{in}}/cut.nii.gz --out {{run}}/m.nii.gz", "ends early"),
    case("segment image sheared", f"{SEG} --image {{in}}/sheared.mha --out {{run}}/m.nii.gz", "not orthonormal"),
    case("segment image huge claim", f"{SEG} --image {{in}}/huge_claim.nii --out {{run}}/m.nii.gz", "the file holds"),
    case("segment image 2D", f"{SEG} --image {{in}}/two_d.nii.gz --out {{run}}/m.nii.gz", "2D image"),
    case("segment DICOM gap", f"{SEG} --image {{in}}/dicom_gap --out {{run}}/m.nii.gz", "--allow-gaps"),
    case("segment no prompt", "segment --model sam3d-adapter --weights demo --image {in}/ct.nii.gz "
         "--out {run}/m.nii.gz", "give at least one --point"),
    case("segment only negative", "segment --model sam3d-adapter --weights demo --image {in}/ct.nii.gz "
         "--negative 1,2,3 --out {run}/m.nii.gz", "give at least one --point"),
    case("segment box for the adapter", f"{SEG} --box 1,1,5,8,8,5 --image {{in}}/ct.nii.gz --out {{run}}/m.nii.gz",
         "takes point prompts only"),
    case("segment weights missing", "segment --model sam3d-adapter --weights {in}/nope.safetensors --point 0,0,0 "
         "--image {in}/ct.nii.gz --out {run}/m.nii.gz", "not found"),
    case("segment weights header huge", "segment --model sam3d-adapter --weights {in}/header_huge.safetensors "
         "--space ijk --point 5,5,5 --image {in}/ct.nii.gz --out {run}/m.nii.gz", "header length field"),
    case("segment weights header beyond file", "segment --model sam3d-adapter --weights "
         "{in}/header_big.safetensors --space ijk --point 5,5,5 --image {in}/ct.nii.gz --out {run}/m.nii.gz",
         "header length field"),
    case("segment weights truncated", "segment --model sam3d-adapter --weights {in}/cut.safetensors --space ijk "
         "--point 5,5,5 --image {in}/ct.nii.gz --out {run}/m.nii.gz", "safetensors"),
    case("segment weights text", "segment --model sam3d-adapter --weights {in}/text.pth --space ijk --point 5,5,5 "
         "--image {in}/ct.nii.gz --out {run}/m.nii.gz", "text.pth"),
    case("segment weights hostile pickle", "segment --model sam3d-adapter --weights {in}/hostile.pth --space ijk "
         "--point 5,5,5 --image {in}/ct.nii.gz --out {run}/m.nii.gz", "refusing to load"),
    case("segment sam checkpoint missing", f"{SEG} --sam-checkpoint {{in}}/sam.pth --image {{in}}/ct.nii.gz "
         f"--out {{run}}/m.nii.gz", "--sam-checkpoint"),
    case("segment sam2 checkpoint missing", f"{SEG2} --sam2-checkpoint {{in}}/sam2.pt --image {{in}}/ct.nii.gz "
         f"--out {{run}}/m.nii.gz", "--sam2-checkpoint"),
    case("segment point outside", "segment --model sam3d-adapter --weights demo --space ijk --point 50,5,5 "
         "--image {in}/ct.nii.gz --out {run}/m.nii.gz", "outside the image"),
    case("segment point two numbers", f"{SEG} --point 1,2 --image {{in}}/ct.nii.gz --out {{run}}/m.nii.gz",
         "--point needs 3"),
    case("segment point NaN", f"{SEG} --point nan,1,2 --image {{in}}/ct.nii.gz --out {{run}}/m.nii.gz",
         "--point needs 3"),
    case("segment box five numbers", f"{SEG2} --box 1,2,3,4,5 --image {{in}}/ct.nii.gz --out {{run}}/m.nii.gz",
         "--box needs 6"),
    case("segment space twice", f"{SEG} --space ras --image {{in}}/ct.nii.gz --out {{run}}/m.nii.gz",
         "--space: given more than once"),
    case("segment image twice", f"{SEG} --image {{in}}/ct.nii.gz --image {{in}}/ct.mha --out {{run}}/m.nii.gz",
         "--image: given more than once"),
    case("segment out twice", f"{SEG} --image {{in}}/ct.nii.gz --out {{run}}/a.nii.gz --out {{run}}/b.nii.gz",
         "--out: given more than once"),
    case("segment unknown space", "segment --model sam3d-adapter --weights demo --space xyz --point 1,2,3 "
         "--image {in}/ct.nii.gz --out {run}/m.nii.gz", "invalid choice: 'xyz'"),
    case("segment unknown model", "segment --model sam4 --weights demo --point 1,2,3 --image {in}/ct.nii.gz "
         "--out {run}/m.nii.gz", "invalid choice: 'sam4'"),
    case("segment no model", "segment --weights demo --point 1,2,3 --image {in}/ct.nii.gz --out {run}/m.nii.gz",
         "required: --model"),
    case("segment unknown device", f"{SEG} --device gpu7 --image {{in}}/ct.nii.gz --out {{run}}/m.nii.gz", "gpu7"),
]
WEIGHTS_CASES = [
    case("weights without subverb", "weights", "required: SUBVERB"),
    case("weights model with a file", f"weights inspect {DEMO_ADAPTER} --model sam3d-adapter", "--model applies"),
]
PHANTOM_CASES = [
    case("phantom out is a file", "phantom {in}/a_file", "is a file"),
    case("phantom negative seed", "phantom {run}/data --seed -1", "--seed"),
    case("phantom zero cases", "phantom {run}/data --cases 0", "--cases"),
    case("phantom cases not a number", "phantom {run}/data --cases many", "invalid int value"),
    case("phantom huge size", "phantom {run}/data --size 4000,4000,4000", "expected at most"),
    case("phantom fractional size", "phantom {run}/data --size 32.5,32,32", "whole numbers"),
    case("phantom field of view too small", "phantom {run}/data --size 16,16,16", "field of view"),
    case("phantom zero spacing", "phantom {run}/data --spacing 0,1,1", "--spacing"),
    case("phantom bad flip", "phantom {run}/data --flip xyz", "--flip"),
    case("phantom folder of other files", "phantom {run}", "holds no phantom dataset", notes__txt=b"mine"),
]
TRAIN_CASES = [
    case("train data missing", "train --model sam3d-adapter --data {in}/nope --label 2 --out {run}/r", "--data"),
    case("train no dataset.json", "train --model sam3d-adapter --data {in}/no_json --label 2 --out {run}/r",
         "dataset.json"),
    case("train out is a file", "train --model sam3d-adapter --data {in}/data --label 2 --out {in}/a_file",
         "is a file"),
    case("train lr inf", f"{TRAIN} --lr inf --out {{run}}/r", "--lr"),
    case("train lr negative", f"{TRAIN} --lr=-1 --out {{run}}/r", "--lr"),
    case("train init missing", f"{TRAIN} --init {{in}}/nope.safetensors --out {{run}}/r", "--init"),
    case("train splits missing", f"{TRAIN} --splits {{in}}/nope.json --out {{run}}/r", "--splits"),
    case("train spacing zero", f"{TRAIN} --spacing 0 --out {{run}}/r", "--spacing"),
    case("train epochs and steps", f"{TRAIN} --epochs 2 --out {{run}}/r", "not allowed with argument"),
    case("train zero epochs", "train --model sam3d-adapter --config tiny --data {in}/data --label 2 --epochs 0 "
         "--out {run}/r", "--epochs"),
    case("train unknown label name", "train --model sam3d-adapter --config tiny --data {in}/data --label cyst "
         "--steps 1 --out {run}/r", "cyst"),
    case("train label value absent", "train --model sam3d-adapter --config tiny --data {in}/data --label 7 "
         "--steps 1 --out {run}/r", "7"),
    case("train label in no case", "train --model sam3d-adapter --config tiny --data {in}/data_cyst --label cyst "
         "--steps 1 --workers 0 --no-progress --out {run}/r", "does not occur"),
    case("train export for sam2", "train --model sam2-3dmed --data {in}/data --label 2 --export-official "
         "--out {run}/r", "--export-official"),
]
EVALUATE_CASES = [
    case("evaluate data missing", "evaluate --model sam3d-adapter --weights demo --data {in}/nope --out {run}/e",
         "dataset.json"),
    case("evaluate weights missing", "evaluate --model sam3d-adapter --weights {in}/nope.pth --data {in}/data "
         "--out {run}/e", "not found"),
    case("evaluate out is a file", f"{EVAL} --out {{in}}/a_file", "is a file"),
    case("evaluate zero cases", f"{EVAL} --max-cases 0 --out {{run}}/e", "--max-cases"),
    case("evaluate bad clicks", f"{EVAL} --clicks 3..1 --max-cases 1 --out {{run}}/e", "3..1"),
]
DEMO_CASES = [
    case("demo out is a file", "demo --out {in}/a_file", "is a file"),
    case("demo unknown model", "demo --model sam4 --out {run}/d", "invalid choice"),
    case("demo negative seed", "demo --seed -3 --out {run}/d", "--seed"),
]
ERRORS = (INFO_CASES + METRICS_CASES + SEGMENT_CASES + WEIGHTS_CASES + PHANTOM_CASES + TRAIN_CASES + EVALUATE_CASES
          + DEMO_CASES)
#: Documented warnings: the command succeeds and says, on one line, what it did about the input.
WARNINGS = [
    case("info NaN voxels in NIfTI", "info {in}/some_nan.nii.gz", "1 NaN/Inf voxels replaced", code=0),
    case("info DICOM gap resampled", "info {in}/dicom_gap --allow-gaps", "resampled onto a uniform 2 mm grid", code=0),
    case("segment a non-CT image", "segment --model sam3d-adapter --weights demo --space ijk --point 8,8,6 "
         "--image {in}/uint8.nii.gz --out {run}/m.nii.gz", "do not look like CT in Hounsfield units", code=0,
         writes=("m.nii.gz",)),
    # SAM2Volume: the adapter demo, whose decoder reads where the click is, leaves a 4 mm blob there.
    case("segment an empty result", "segment --model sam2-3dmed --weights demo --space ijk --point 15,15,12 "
         "--image {in}/air.nii.gz --out {run}/m.nii.gz", "the mask is empty (0 voxels)", code=0,
         writes=("m.nii.gz",)),
]
CASES = ERRORS + WARNINGS


def test_the_catalogue_is_large_and_distinct():
    assert len(ERRORS) >= 80
    assert len({c.name for c in CASES}) == len(CASES)
    assert len({c.argv for c in CASES}) == len(CASES)


# --- running ------------------------------------------------------------------------------------
def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


def run_case(item: Case, inputs: Path, runs: Path) -> tuple[Case, subprocess.CompletedProcess, dict, dict]:
    run = runs / item.name.replace(" ", "_")
    run.mkdir()
    for name, data in item.seed_files.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(data)
    before = snapshot(run)
    argv = [a.replace("{in}", str(inputs)).replace("{run}", str(run)) for a in item.argv]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "volsam", *argv], capture_output=True, encoding="utf-8", errors="replace", timeout=300, check=False,
                            cwd=run, env=env)
    return item, result, before, snapshot(run)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    inputs = tmp_path_factory.mktemp("catalogue") / "in"
    inputs.mkdir()
    build_inputs(inputs)
    runs = inputs.parent / "runs"
    runs.mkdir()
    inputs_before = snapshot(inputs)
    # slow (model or dataset) cases first, so the pool is not left waiting on them at the end
    ordered = sorted(CASES, key=lambda c: c.argv[0] not in ("train", "evaluate", "segment"))
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = {item.name: outcome for item, *outcome in pool.map(lambda c: run_case(c, inputs, runs), ordered)}
    return results, inputs_before, snapshot(inputs), inputs


@pytest.mark.parametrize("item", CASES, ids=[c.name for c in CASES])
def test_case(outcomes, item):
    results, *_ = outcomes
    result, before, after = results[item.name]
    lines = result.stderr.strip().splitlines()
    verb = item.argv[0] if item.argv and item.argv[0] != "segmnet" else ""
    assert result.returncode == item.code, (item.name, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    if item.code:
        assert len(lines) == 1 and lines[0].startswith(f"volsam {verb}".strip()) and ": error: " in lines[0], lines
        assert item.expect in lines[0], lines[0]
    else:  # a documented warning: one line of its own among the verb's report lines
        assert all(line.startswith(f"volsam {verb}: ") for line in lines), lines
        assert any(": warning: " in line and item.expect in line for line in lines), lines
    assert {k: v for k, v in after.items() if k not in item.writes} == before, \
        f"{item.name} changed its folder: {sorted(set(after) ^ set(before))}"
    assert all(name in after for name in item.writes)


def test_inputs_are_untouched_and_no_hostile_code_ran(outcomes):
    _, inputs_before, inputs_after, inputs = outcomes
    assert inputs_after == inputs_before  # --out equal to --image left the image byte-identical
    assert not (inputs / "PWNED").exists()


# --- the rest of issue 17 that is not "one bad input, one error" ------------------------------------
def test_help_and_version_import_nothing_heavy_and_errors_come_first():
    heavy = ("numpy", "scipy", "torch", "SimpleITK")
    for argv in (["--version"], ["--help"], *([verb, "--help"] for verb in
                                               ("info", "phantom", "metrics", "segment", "weights", "train",
                                                "evaluate", "demo")),
                 ["info", "missing.nii.gz"], ["train", "--model", "sam3d-adapter", "--data", "nowhere", "--label",
                                              "2", "--out", "run"]):
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "volsam", *argv], capture_output=True,
                                text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
        assert not imported & set(heavy), (argv, imported & set(heavy))
    assert "verbs not built yet" not in (REPO / "volsam" / "cli" / "__init__.py").read_text()


def test_sigterm_to_the_process_group_stops_training_cleanly(outcomes, tmp_path):
    *_, inputs = outcomes
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "volsam", "train", "--model", "sam3d-adapter", "--config",
                                "tiny", "--data", str(inputs / "data"), "--label", "2", "--steps", "500",
                                "--workers", "1", "--no-progress", "--out", str(tmp_path / "run")],
                               stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        for _ in range(600):  # the loop is running once log.csv exists (after the loader started)
            if (tmp_path / "run" / "log.csv").exists() or process.poll() is not None:
                break
            time.sleep(0.2)
        time.sleep(1.0)
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "volsam train: interrupted"


def test_weights_inspect_takes_demo_and_reports_a_damaged_header(outcomes, capsys):
    from volsam.cli import main

    *_, inputs = outcomes
    assert main(["weights", "inspect", "demo", "--json"]) == 0
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["kind"] for r in reports] == ["sam3d-adapter", "sam2-3dmed"] and all(r["usable"] for r in reports)
    assert main(["weights", "inspect", str(inputs / "header_huge.safetensors"), "--json"]) == 1  # its contract
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "damaged" and "header length field says 1,099,511,627,776 bytes" in report["summary"]
