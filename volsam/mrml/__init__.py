"""The qt-free MRML layer shared by the SAMAdapt3D and SAM2Volume Slicer modules.

This package is the only part of :mod:`volsam` that imports ``slicer`` and ``vtk``; importing
:mod:`volsam` itself never does. It works the same inside the Slicer application and in plain
Python with ``slicer-core`` (which is how the test suite drives it, on real MRML nodes):

* :mod:`.nodes`: volume nodes -> engine :class:`~volsam.geometry.Volume` in world RAS (the node's
  own IJK-to-RAS matrix and any linear parent transform), engine volumes -> nodes, markups
  control points and ROIs -> engine prompts, slice views -> slice directions;
* :mod:`.segments`: one segment of a segmentation node read and written on the volume's voxel
  grid, in place and only inside a changed box;
* :mod:`.interaction`: a prompt session (any object with the session API of
  :mod:`volsam.sessions`) bound to a segment, with an undo stack of the segment's own
  contents, so undo gives back exactly what was there, user painting included.
"""

from .interaction import SegmentInteraction, SegmentStep, SessionUndoRules
from .nodes import (
    box_prompt_from_roi,
    control_point_ras,
    defined_control_points_ras,
    node_to_world_matrix,
    point_prompt_from_control_point,
    prompt_markups_node,
    slice_index_in_view,
    slice_normal_ras,
    slice_views_containing,
    standalone_scene,
    volume_from_node,
    volume_node_from_volume,
)
from .segments import SegmentGridError, SegmentOnGrid, ensure_segment

__all__ = [
    "SegmentGridError",
    "SegmentInteraction",
    "SegmentOnGrid",
    "SegmentStep",
    "SessionUndoRules",
    "box_prompt_from_roi",
    "control_point_ras",
    "defined_control_points_ras",
    "ensure_segment",
    "node_to_world_matrix",
    "point_prompt_from_control_point",
    "prompt_markups_node",
    "slice_index_in_view",
    "slice_normal_ras",
    "slice_views_containing",
    "standalone_scene",
    "volume_from_node",
    "volume_node_from_volume",
]
