"""Writing a model result into a segment: in place inside the changed box, against Slicer's import.

A click changes a box of the segment; :class:`volsam.mrml.segments.SegmentOnGrid` writes only that
box, in place, into the segment's internal labelmap. Printed: the median time of that write for a
64x64x32 box in a 120x256x256 volume, and of one ``SetBinaryLabelmapToSegment`` import of the
whole mask as Slicer's own functions would do it (the slow path the layer avoids), with their
ratio. Needs slicer-core. Run: ``python bench/segment_write.py``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import slicer  # noqa: E402
import vtk  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

from volsam.geometry import Box, Volume  # noqa: E402
from volsam.mrml import SegmentOnGrid, ensure_segment, standalone_scene  # noqa: E402
from volsam.mrml.nodes import vtk_from_matrix  # noqa: E402


def median_seconds(action, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    scene = standalone_scene()
    volume = Volume(np.zeros((120, 256, 256), np.int16), np.diag([0.8, 0.8, 2.0, 1.0]))
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segment_id = ensure_segment(segmentation)
    segment = SegmentOnGrid(segmentation, segment_id, volume)
    segment.write(np.ones(volume.shape_kji, np.uint8), Box.full(volume.shape_kji))  # the labelmap covers all
    box = Box((30, 60, 60), (62, 124, 124))
    values = np.zeros(box.shape, np.uint8)
    values[4:-4, 8:-8, 8:-8] = 1
    in_place = median_seconds(lambda: segment.write(values, box))

    whole = slicer.vtkOrientedImageData()
    whole.SetExtent(0, 255, 0, 255, 0, 119)
    whole.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    whole.SetImageToWorldMatrix(vtk_from_matrix(volume.ijk_to_ras))
    numpy_support.vtk_to_numpy(whole.GetPointData().GetScalars())[:] = 1
    imported = median_seconds(lambda: slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        whole, segmentation, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE), repeats=3)
    print(f"in-place write of a {box.shape} box into a {volume.shape_kji} segment: {in_place * 1000:.2f} ms (median)")
    print(f"import of the whole mask through SetBinaryLabelmapToSegment: {imported * 1000:.1f} ms (median)")
    print(f"ratio: {imported / in_place:.0f}x")


if __name__ == "__main__":
    main()
