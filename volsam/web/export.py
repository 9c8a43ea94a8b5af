"""Saving the segmentation: Slicer's ``.seg.nrrd`` and a NIfTI labelmap on the image's grid.

The labelmap is written by the engine (:func:`volsam.io.write_mask`) on the engine volume of
the image node, so it has exactly the geometry of the image the user opened: segment n
(in the segmentation's order) is label n, a voxel in two segments takes the later one.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np

#: What the app can save, by the suffix the file gets.
SAVE_FORMATS = {"seg.nrrd": ".seg.nrrd", "nifti": ".nii.gz"}


def safe_stem(name: str) -> str:
    """A file name stem made from a node name (letters, digits, ``-`` and ``_`` only)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    return stem or "segmentation"


def labelmap_array(segmentation_node, volume) -> np.ndarray:
    """The segments as one uint8 (k, j, i) label array on ``volume``'s grid."""
    from ..mrml.segments import SegmentOnGrid

    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(index) for index in range(segmentation.GetNumberOfSegments())]
    if len(ids) > 255:
        raise ValueError(f"a uint8 labelmap holds at most 255 segments, the segmentation has {len(ids)}")
    labels = np.zeros(volume.shape_kji, np.uint8)
    for value, segment_id in enumerate(ids, start=1):
        labels[SegmentOnGrid(segmentation_node, segment_id, volume).read() > 0] = value
    return labels


def write_labelmap(segmentation_node, volume, path: str | os.PathLike) -> Path:
    """Write the segments as a labelmap (NIfTI, NRRD or MHA by the suffix) on ``volume``'s grid."""
    from ..io import write_mask

    path = Path(path)
    write_mask(labelmap_array(segmentation_node, volume), volume, path)
    return path


def write_seg_nrrd(segmentation_node, path: str | os.PathLike) -> Path:
    """Write the segmentation as Slicer's ``.seg.nrrd`` (names, colours and all segments), atomically."""
    import slicer

    path = Path(path)
    if not path.name.endswith(".seg.nrrd"):
        raise ValueError(f"{path}: a Slicer segmentation file must end in .seg.nrrd")
    handle, temporary = tempfile.mkstemp(prefix=".volsam-", suffix=".seg.nrrd", dir=path.parent)
    os.close(handle)
    try:
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(temporary)
        if not storage.WriteData(segmentation_node):
            raise ValueError(f"{path}: Slicer could not write the segmentation")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def save_segmentation(segmentation_node, volume, folder: str | os.PathLike, stem: str, fmt: str) -> Path:
    """Save in ``fmt`` (a key of :data:`SAVE_FORMATS`) as ``folder/stem<suffix>``."""
    if fmt not in SAVE_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(SAVE_FORMATS)}")
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"the save folder {folder} does not exist")
    path = folder / f"{safe_stem(stem)}{SAVE_FORMATS[fmt]}"
    if fmt == "seg.nrrd":
        return write_seg_nrrd(segmentation_node, path)
    return write_labelmap(segmentation_node, volume, path)
