"""Paint and erase with trame-slicer's brush, recorded in the controller's one history.

trame-slicer's paint and erase effects draw the brush in the views and, at the end of a stroke,
write it into the segment themselves (and onto its own undo stack when one is set). Here the
stroke's voxels are computed exactly as trame-slicer does (its modifier paints the glyph into a
modifier labelmap on the segmentation's reference grid, which is the image's grid), and handed
to :meth:`InteractionController.record_edit`, which writes them as one step of the same undo
history as the model's steps. Nothing else of the effects changes.
"""

from __future__ import annotations

import functools

import numpy as np

from ..geometry import Box

#: The attribute of trame-slicer's segmentation editor holding ``record(brush, box, erase)``
#: (the effects are made by the editor without arguments; this is how they find the app).
RECORD_ATTRIBUTE = "volsam_record_stroke"


def stroke_on_grid(labelmap, stroke_extent, volume) -> tuple[np.ndarray, Box] | None:
    """The stroke's voxels as a uint8 (k, j, i) brush within its box on ``volume``'s grid, or
    None when it misses the image. ``labelmap``: trame-slicer's modifier labelmap (a
    vtkOrientedImageData); ``stroke_extent``: the painted extent in its IJK."""
    import vtk
    from vtk.util import numpy_support

    from ..mrml.nodes import matrix_from_vtk

    to_world = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(to_world)
    if not np.allclose(matrix_from_vtk(to_world), volume.ijk_to_ras, atol=1e-4):
        raise ValueError("the segmentation's grid differs from the image's; paint is only offered on the image's grid")
    full = np.array(labelmap.GetExtent()).reshape(3, 2)
    stroke = np.array(stroke_extent).reshape(3, 2)
    low = np.maximum(np.maximum(stroke[:, 0], full[:, 0]), 0)
    high = np.minimum(np.minimum(stroke[:, 1], full[:, 1]), np.array(volume.shape_ijk) - 1)
    if np.any(high < low):
        return None
    dims = labelmap.GetDimensions()
    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    region = tuple(slice(a - f, b + 1 - f) for a, b, f in zip(low[::-1], high[::-1], full[::-1, 0]))
    brush = (values[region] > 0).astype(np.uint8)
    return brush, Box(tuple(int(v) for v in low[::-1]), tuple(int(v) + 1 for v in high[::-1]))


def _record(effect, polydata, points, erase: bool) -> None:
    modifier = effect.modifier
    labelmap = modifier.create_modifier_labelmap()
    extent = modifier.paint_glyph_in_labelmap(polydata, points, labelmap)
    getattr(effect.editor, RECORD_ATTRIBUTE)(labelmap, extent, erase)


@functools.cache
def recorded_effects() -> dict:
    """{"paint": effect type, "erase": effect type}: trame-slicer's paint and erase effects with
    the stroke recorded through the editor's :data:`RECORD_ATTRIBUTE` instead of written by the
    effect (made once, on first use: trame-slicer is imported lazily)."""
    from trame_slicer.segmentation import SegmentationEffectErase, SegmentationEffectPaint

    class RecordedPaint(SegmentationEffectPaint):
        def paint_glyph_at_world_coordinates(self, polydata, paint_coordinates_world):
            _record(self, polydata, paint_coordinates_world, erase=False)

    class RecordedErase(SegmentationEffectErase):
        def paint_glyph_at_world_coordinates(self, polydata, paint_coordinates_world):
            _record(self, polydata, paint_coordinates_world, erase=True)

    return {"paint": RecordedPaint, "erase": RecordedErase}
