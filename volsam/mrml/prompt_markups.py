"""The prompt markups as one undo state: read from their markups nodes, and put back.

A step of the controller's history records the prompts' markups before and after it, so undo and
redo put the points and the box back as they were. Points are kept by role, as positions in the
node's coordinates; a box (a markups ROI, which holds one centre point, not two corners) is kept
as a whole: its object-to-node matrix (centre and orientation) and its size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import vtk

from .nodes import matrix_from_vtk, vtk_from_matrix

POINT_ROLES = ("positive", "negative")


@dataclass(frozen=True)
class PromptMarkups:
    """Control point positions per point role (node coordinates), and the box as
    (object-to-node matrix, size), or None."""

    points: tuple[tuple[str, tuple[tuple[float, float, float], ...]], ...] = ()
    box: tuple[tuple[float, ...], tuple[float, float, float]] | None = None

    def positions(self, role: str) -> tuple:
        return dict(self.points).get(role, ())


def roi_geometry(roi_node):
    """A ROI as a whole: (object-to-node matrix, size), or None when it holds no placed box."""
    if roi_node.GetNumberOfControlPoints() == 0 or \
            roi_node.GetNthControlPointPositionStatus(0) != roi_node.PositionDefined:
        return None
    matrix = tuple(float(v) for v in np.round(matrix_from_vtk(roi_node.GetObjectToNodeMatrix()).ravel(), 9))
    return matrix, tuple(float(v) for v in roi_node.GetSize())


def set_roi_geometry(roi_node, geometry) -> None:
    """Give the ROI ``geometry`` (from :func:`roi_geometry`), or empty it for None."""
    roi_node.RemoveAllControlPoints()
    if geometry is None:
        return
    matrix, size = geometry
    matrix = np.array(matrix).reshape(4, 4)
    roi_node.AddControlPoint(vtk.vtkVector3d(*matrix[:3, 3]))
    roi_node.SetSize(*size)
    roi_node.SetAndObserveObjectToNodeMatrix(vtk_from_matrix(matrix))


def read_prompt_markups(nodes: dict) -> PromptMarkups:
    """The markups of ``nodes`` (role -> markups node): placed points only (not a preview that
    follows the mouse), and the box."""
    points = []
    for role in POINT_ROLES:
        node = nodes.get(role)
        if node is None:
            continue
        positions = []
        for index in range(node.GetNumberOfControlPoints()):
            if node.GetNthControlPointPositionStatus(index) == node.PositionDefined:
                position = [0.0, 0.0, 0.0]
                node.GetNthControlPointPosition(index, position)
                positions.append(tuple(position))
        points.append((role, tuple(positions)))
    box = nodes.get("box")
    return PromptMarkups(tuple(points), None if box is None else roi_geometry(box))


def write_prompt_markups(nodes: dict, markups: PromptMarkups) -> None:
    """Make ``nodes`` show ``markups``; a node that shows them already is left untouched."""
    for role, node in nodes.items():
        if role == "box":
            if roi_geometry(node) != markups.box:
                set_roi_geometry(node, markups.box)
            continue
        wanted = markups.positions(role)
        if node.GetNumberOfControlPoints() == len(wanted) and all(
                np.allclose(node.GetNthControlPointPositionVector(index), position)
                for index, position in enumerate(wanted)):
            continue
        node.RemoveAllControlPoints()
        for position in wanted:
            node.AddControlPoint(vtk.vtkVector3d(*position))
