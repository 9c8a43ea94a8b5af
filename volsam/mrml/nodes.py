"""Slicer nodes <-> engine objects: volumes, transforms, markups and slice views.

All positions handed to the engine are world RAS: a node's own coordinates carried through
its parent transform. A markups point placed on a transformed volume is therefore compared
with that volume as the user sees it. Non-linear transforms are refused with a message that
says how to fix it (harden the transform), because an engine volume is one affine grid.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk

from ..geometry import Volume, nearest_index
from ..prompts import BoxPrompt, PointPrompt, point_prompt

# Logic objects that a standalone scene needs; kept alive for the life of the process.
_STANDALONE_LOGICS: list = []


def standalone_scene() -> slicer.vtkMRMLScene:
    """A new MRML scene usable outside the Slicer application (plain Python with slicer-core).

    Creating the segmentations logic registers the segmentation converter rules (without
    them a segment cannot even hold an empty labelmap), and registering the colour logic on an
    application logic gives new volume nodes their default colour tables.
    """
    scene = slicer.vtkMRMLScene()
    application_logic = slicer.vtkSlicerApplicationLogic()
    application_logic.SetMRMLScene(scene)
    color_logic = slicer.vtkMRMLColorLogic()
    color_logic.SetMRMLScene(scene)
    application_logic.SetModuleLogic("Colors", color_logic)
    segmentations_logic = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations_logic.SetMRMLApplicationLogic(application_logic)
    segmentations_logic.SetMRMLScene(scene)
    _STANDALONE_LOGICS.extend([application_logic, color_logic, segmentations_logic])
    return scene


# --- matrices ---------------------------------------------------------------------------------
def matrix_from_vtk(vtk_matrix) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def vtk_from_matrix(matrix) -> vtk.vtkMatrix4x4:
    result = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            result.SetElement(row, column, float(matrix[row][column]))
    return result


def _node_label(node) -> str:
    return f"'{node.GetName()}'" if node is not None and node.GetName() else "the node"


def node_to_world_matrix(node) -> np.ndarray:
    """4x4 matrix from ``node``'s own coordinates to world RAS (identity if untransformed)."""
    transform_node = node.GetParentTransformNode()
    if transform_node is None:
        return np.eye(4)
    if not transform_node.IsTransformToWorldLinear():
        raise ValueError(f"{_node_label(node)} is under the non-linear transform {_node_label(transform_node)}; "
                         "harden the transform (Data module, right-click) before segmenting")
    to_world = vtk.vtkMatrix4x4()
    transform_node.GetMatrixTransformToWorld(to_world)
    return matrix_from_vtk(to_world)


# --- volumes ----------------------------------------------------------------------------------
def volume_from_node(volume_node) -> Volume:
    """The engine volume of a scalar volume node, on its voxel grid in world RAS.

    The voxels are copied: the engine reads them on a worker thread, and a view on the node's
    VTK memory would dangle if the node's image were replaced meanwhile.
    """
    if volume_node is None:
        raise ValueError("no volume selected")
    image = volume_node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise ValueError(f"volume {_node_label(volume_node)} has no image data")
    if image.GetNumberOfScalarComponents() != 1:
        raise ValueError(f"volume {_node_label(volume_node)} has {image.GetNumberOfScalarComponents()} "
                         "components per voxel; a scalar (grey-value) volume is needed")
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    world = node_to_world_matrix(volume_node) @ matrix_from_vtk(ijk_to_ras)
    return Volume(np.array(slicer.util.arrayFromVolume(volume_node), copy=True), world)


def volume_node_from_volume(scene, volume: Volume, name: str, labelmap: bool = False):
    """Add a scalar (or labelmap) volume node holding ``volume`` with its geometry."""
    class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(class_name, name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array))
    node.SetIJKToRASMatrix(vtk_from_matrix(volume.ijk_to_ras))
    node.CreateDefaultDisplayNodes()
    return node


# --- markups ----------------------------------------------------------------------------------
def control_point_ras(markups_node, index: int) -> np.ndarray:
    """World RAS position of one control point (parent transforms applied)."""
    position = np.zeros(3)
    markups_node.GetNthControlPointPositionWorld(index, position)
    return position


def defined_control_points_ras(markups_node) -> np.ndarray:
    """(N, 3) world RAS positions of the placed points; points still following the mouse
    (preview), not placed yet (undefined) or skipped (missing) are left out."""
    if markups_node is None:
        return np.zeros((0, 3))
    defined = markups_node.PositionDefined
    points = [control_point_ras(markups_node, index) for index in range(markups_node.GetNumberOfControlPoints())
              if markups_node.GetNthControlPointPositionStatus(index) == defined]
    return np.array(points).reshape(-1, 3)


def point_prompt_from_control_point(volume: Volume, markups_node, index: int, positive: bool) -> PointPrompt:
    """The engine prompt of one placed control point; a point outside the image is a ValueError."""
    return point_prompt(volume, control_point_ras(markups_node, index), "ras", positive)


def roi_corners_ras(roi_node) -> np.ndarray:
    """(8, 3) world RAS corners of a markups ROI (which may itself be rotated)."""
    half = np.array(roi_node.GetSize(), float) / 2.0
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half
    object_to_node = matrix_from_vtk(roi_node.GetObjectToNodeMatrix())
    to_world = node_to_world_matrix(roi_node) @ object_to_node
    return corners @ to_world[:3, :3].T + to_world[:3, 3]


def box_prompt_from_roi(volume: Volume, roi_node, slice_axis: int) -> BoxPrompt:
    """A box on one slice across index axis ``slice_axis`` (0 = i, 1 = j, 2 = k) from a ROI.

    The in-plane extent is the ROI's extent on the volume's grid (clipped to the image); the
    slice is the one through the ROI's centre, whatever the ROI's thickness, because a box
    drawn in a slice view is a 2D prompt on the slice the user looked at.
    """
    corners_ijk = volume.ras_to_ijk_points(roi_corners_ras(roi_node))
    low = np.maximum(corners_ijk.min(axis=0), 0.0)
    high = np.minimum(corners_ijk.max(axis=0), np.array(volume.shape_ijk, float) - 1.0)
    if np.any(high < low):
        raise ValueError(f"ROI {_node_label(roi_node)} does not overlap the image")
    centre = corners_ijk.mean(axis=0)
    slice_index = int(nearest_index(centre[slice_axis]))
    if not 0 <= slice_index < volume.shape_ijk[slice_axis]:
        raise ValueError(f"the centre of ROI {_node_label(roi_node)} lies outside the image")
    low[slice_axis] = high[slice_axis] = slice_index
    return BoxPrompt(tuple(low.tolist()), tuple(high.tolist()))


# --- slice views ------------------------------------------------------------------------------
def slice_normal_ras(slice_node) -> np.ndarray:
    """Unit normal (RAS) of a slice view's plane."""
    slice_to_ras = matrix_from_vtk(slice_node.GetSliceToRAS())
    normal = slice_to_ras[:3, 2]
    return normal / np.linalg.norm(normal)


def slice_views_containing(point_ras, slice_nodes, tolerance_mm: float) -> list:
    """The slice nodes whose plane passes within ``tolerance_mm`` of ``point_ras``.

    A point placed in a slice view lies on that view's plane, which tells in which view the
    user worked; a point at the crosshair may lie on several planes.
    """
    point = np.asarray(point_ras, float)
    found = []
    for slice_node in slice_nodes:
        slice_to_ras = matrix_from_vtk(slice_node.GetSliceToRAS())
        distance = abs(float(np.dot(point - slice_to_ras[:3, 3], slice_normal_ras(slice_node))))
        if distance <= tolerance_mm:
            found.append(slice_node)
    return found


def slice_index_in_view(volume: Volume, slice_node, axis: int) -> int:
    """The index, across voxel axis ``axis``, of the slice a view shows (its plane's centre)."""
    slice_to_ras = matrix_from_vtk(slice_node.GetSliceToRAS())
    index = int(nearest_index(volume.ras_to_ijk_points(slice_to_ras[:3, 3])[axis]))
    if not 0 <= index < volume.shape_ijk[axis]:
        raise ValueError(f"the {slice_node.GetLayoutName() or 'slice'} view shows a plane outside the image")
    return index


# --- prompt markups ---------------------------------------------------------------------------
PROMPT_ROLE_ATTRIBUTE = "VolumetricSAM.PromptRole"
PROMPT_COLORS = {"positive": (0.2, 0.85, 0.3), "negative": (0.95, 0.25, 0.2), "box": (1.0, 0.85, 0.1)}


def prompt_markups_node(scene, owner: str, role: str):
    """The markups node holding ``owner``'s prompts of ``role`` ("positive", "negative" or
    "box"), created on first use. Found again by attribute, so it is saved with the scene and
    picked up after a scene is loaded."""
    if role not in PROMPT_COLORS:
        raise ValueError(f"unknown prompt role {role!r}; expected one of {', '.join(PROMPT_COLORS)}")
    tag = f"{owner}.{role}"
    for node in nodes_by_class(scene, "vtkMRMLMarkupsNode"):
        if node.GetAttribute(PROMPT_ROLE_ATTRIBUTE) == tag:
            return node
    class_name = "vtkMRMLMarkupsROINode" if role == "box" else "vtkMRMLMarkupsFiducialNode"
    node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(f"{owner} {role} prompts"))
    node.SetAttribute(PROMPT_ROLE_ATTRIBUTE, tag)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None:
        display.SetSelectedColor(*PROMPT_COLORS[role])
        display.SetColor(*PROMPT_COLORS[role])
        if role != "box":
            display.SetPointLabelsVisibility(False)
    return node


def nodes_by_class(scene, class_name: str) -> list:
    """The scene's nodes of ``class_name`` (subclasses included).

    ``GetNodesByClass`` returns a new collection that its caller owns, which VTK's Python
    wrapping cannot know: without ``UnRegister`` the collection, and every node in it (removed
    markups nodes included), would never be freed. ``slicer.util.getNodesByClass`` does the same.
    """
    nodes = scene.GetNodesByClass(class_name)
    nodes.UnRegister(None)
    return [nodes.GetItemAsObject(index) for index in range(nodes.GetNumberOfItems())]
