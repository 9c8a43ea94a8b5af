"""Shared fixtures: small volumes with oblique, flipped and anisotropic geometry."""

from __future__ import annotations

import numpy as np
import pytest

from volsam.geometry import Volume

# Fixture modules of the two model packages, imported by pytest so their asserts are rewritten
# and their session-scoped fixtures are shared by every test file.
pytest_plugins = ["conftest_adapter", "conftest_sam2"]


def rotation(axis_angle_deg: tuple[float, float, float]) -> np.ndarray:
    """Rotation matrix from successive x, y, z rotations in degrees."""
    ax, ay, az = np.deg2rad(axis_angle_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_volume(shape_kji=(12, 14, 16), spacing=(0.8, 1.1, 2.5), angles=(20, -10, 35),
                flips=(1, -1, 1), origin=(-40.0, 25.0, 7.5), dtype=np.float32, seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    direction = rotation(angles) @ np.diag(np.asarray(flips, float))
    array = rng.normal(size=shape_kji).astype(dtype)
    return Volume.from_spacing(array, spacing, origin, direction)


@pytest.fixture
def oblique_volume() -> Volume:
    return make_volume()
