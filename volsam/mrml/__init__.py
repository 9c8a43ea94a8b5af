"""The qt-free MRML layer shared by the SAMAdapt3D and SAM2Volume Slicer modules.

This package is the only part of :mod:`volsam` that imports ``slicer`` and ``vtk``; importing
:mod:`volsam` itself never does. It works the same inside the Slicer application and in plain
Python with ``slicer-core`` (which is how the test suite drives it, on real MRML nodes):

* :mod:`.nodes`: volume nodes -> engine :class:`~volsam.geometry.Volume` in world RAS (the node's
  own IJK-to-RAS matrix and any linear parent transform), engine volumes -> nodes, markups
  control points and ROIs -> engine prompts, slice views -> slice directions;
* :mod:`.segments`: one segment of a segmentation node read and written on the volume's voxel
  grid, in place and only inside a changed box;
* :mod:`.interaction`: a session (the protocol of :mod:`volsam.sessions.protocol`) bound to a
  segment, with the one undo machinery (:mod:`volsam.sessions.history`) over the segment's own
  contents, so undo gives back exactly what was there, user painting included;
* :mod:`.controller`: the interaction controller that the Slicer modules and the browser app
  drive: prompts placed in markups nodes, one job at a time on the model thread
  (:mod:`.worker`: a daemon thread, and waiting for it that releases the GIL), one history (the
  prompts' markups in it: :mod:`.prompt_markups`), the changes a scene can undergo meanwhile;
* :mod:`.choices`: the model, device and slice-direction choices the front ends offer, turned
  into registry calls;
* :mod:`.shortcuts`: the keyboard shortcuts, chosen among keys Slicer's views leave free.

The controller is imported from :mod:`volsam.mrml.controller` (it is not re-exported here, so
that importing the node helpers stays light).
"""

from .interaction import SegmentInteraction, SegmentStep
from .nodes import (
    box_prompt_from_roi,
    control_point_ras,
    defined_control_points_ras,
    node_to_world_matrix,
    nodes_by_class,
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
    "box_prompt_from_roi",
    "control_point_ras",
    "defined_control_points_ras",
    "ensure_segment",
    "node_to_world_matrix",
    "nodes_by_class",
    "point_prompt_from_control_point",
    "prompt_markups_node",
    "slice_index_in_view",
    "slice_normal_ras",
    "slice_views_containing",
    "standalone_scene",
    "volume_from_node",
    "volume_node_from_volume",
]
