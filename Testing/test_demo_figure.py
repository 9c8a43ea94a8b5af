"""The demo figure shows each plane as radiologists do, whatever the voxel order on disk."""

from __future__ import annotations

import numpy as np
import pytest

from volsam.demo import display_planes
from volsam.geometry import Volume

EXPECTED_EDGES = {"axial": {"left": "R", "right": "L", "top": "A", "bottom": "P"},
                  "coronal": {"left": "R", "right": "L", "top": "S", "bottom": "I"},
                  "sagittal": {"left": "A", "right": "P", "top": "S", "bottom": "I"}}


@pytest.mark.parametrize("directions", [(1, 1, 1), (-1, -1, 1), (-1, 1, -1)], ids=["RAS", "LPS", "LAI"])
def test_planes_are_radiological_and_keep_the_click(directions):
    shape_kji = (9, 11, 13)
    ijk_to_ras = np.diag([*directions, 1.0]).astype(float) @ np.diag([0.8, 0.9, 2.0, 1.0])
    array = np.arange(np.prod(shape_kji), dtype=np.float32).reshape(shape_kji)  # every voxel unique
    volume = Volume(array, ijk_to_ras)
    click = (3, 4, 10)
    for plane in display_planes(volume, click):
        assert plane.edges == EXPECTED_EDGES[plane.name]
        shown = plane.show(array)
        row, column = plane.click
        assert shown[int(row), int(column)] == array[click]
        # one step down the screen goes the way the bottom edge names
        below = shown[int(row) + 1, int(column)] if row + 1 < shown.shape[0] else None
        if below is not None:
            kji = np.argwhere(array == below)[0]
            step_ras = ijk_to_ras[:3, :3] @ (kji[::-1] - np.array(click[::-1]))
            axis = {"P": 1, "I": 2}[plane.edges["bottom"]]
            assert step_ras[axis] < 0
