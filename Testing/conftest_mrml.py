"""What the MRML tests share: painting as Segment Editor does, and a segment's raw contents."""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from volsam.geometry import Volume
from volsam.mrml.nodes import vtk_from_matrix


def paint(segmentation, segment_id, volume: Volume, mask: np.ndarray) -> None:
    """Paint as Segment Editor does: merge a modifier labelmap into the segment through Slicer."""
    modifier = slicer.vtkOrientedImageData()
    modifier.SetExtent(0, volume.shape_ijk[0] - 1, 0, volume.shape_ijk[1] - 1, 0, volume.shape_ijk[2] - 1)
    modifier.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    modifier.SetImageToWorldMatrix(vtk_from_matrix(volume.ijk_to_ras))
    numpy_support.vtk_to_numpy(modifier.GetPointData().GetScalars())[:] = mask.astype(np.uint8).ravel()
    assert slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        modifier, segmentation, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MAX)


def raw_labelmap(segmentation, segment_id):
    """The segment's labelmap exactly: extent, geometry and every raw value."""
    image = segmentation.GetBinaryLabelmapInternalRepresentation(segment_id)
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return image.GetExtent(), str([matrix.GetElement(r, c) for r in range(4) for c in range(4)]), \
        slicer.util.arrayFromSegmentInternalBinaryLabelmap(segmentation, segment_id).copy()


def same_segment_contents(a, b) -> bool:
    """Equal voxel for voxel on the grid (the labelmap's extent may have grown in between)."""
    return a[1] == b[1] and _voxels(a) == _voxels(b)


def _voxels(raw):
    extent, _, values = raw
    k, j, i = np.nonzero(values)
    return sorted(zip(i + extent[0], j + extent[2], k + extent[4], values[k, j, i]))


