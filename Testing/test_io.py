"""Reading images and writing masks: formats, geometry preservation, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_volume
from volsam.geometry import reorient_like
from volsam.io import ImageReadError, read_image, write_image, write_mask

angles = st.tuples(*[st.floats(-180, 180)] * 3)
flips = st.tuples(*[st.sampled_from((1, -1))] * 3)
spacings = st.tuples(*[st.floats(0.3, 5.0)] * 3)
fixture_ok = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@fixture_ok
@given(angles, flips, spacings, st.sampled_from([".nii.gz", ".nii", ".nrrd", ".mha"]))
def test_mask_written_and_read_back_keeps_geometry(tmp_path, angles_, flips_, spacing, suffix):
    volume = make_volume((5, 6, 7), spacing, angles_, flips_, (12.3, -45.6, 78.9))
    mask = (volume.array > 0).astype(np.uint8)
    path = tmp_path / f"mask{suffix}"
    write_mask(mask, volume, path)
    back = read_image(path)
    assert back.array.dtype == np.uint8
    assert back.same_geometry(volume, tolerance_mm=1e-4)
    assert np.array_equal(back.array, mask)


@pytest.fixture(scope="module")
def slicer_volumes_logic():
    from slicer import vtkMRMLColorLogic, vtkMRMLScene, vtkSlicerApplicationLogic, vtkSlicerVolumesLogic

    scene = vtkMRMLScene()
    application = vtkSlicerApplicationLogic()
    application.SetMRMLScene(scene)
    colors = vtkMRMLColorLogic()
    colors.SetMRMLScene(scene)
    application.SetModuleLogic("Colors", colors)
    logic = vtkSlicerVolumesLogic()
    logic.SetMRMLScene(scene)
    return logic


def _node_ijk_to_ras(node) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


@fixture_ok
@given(angles, flips, spacings)
def test_nifti_read_by_simpleitk_and_slicer_agree_in_ras(tmp_path, slicer_volumes_logic, angles_, flips_, spacing):
    import slicer.util

    from volsam.geometry import Volume

    volume = make_volume((4, 5, 6), spacing, angles_, flips_, (-30.0, 12.0, 55.0))
    path = tmp_path / "image.nii.gz"
    write_image(volume, path)
    ours = read_image(path)
    node = slicer_volumes_logic.AddArchetypeVolume(str(path), "image")
    theirs = Volume(slicer.util.arrayFromVolume(node).copy(), _node_ijk_to_ras(node))
    slicer_volumes_logic.GetMRMLScene().RemoveNode(node)
    # Slicer may index the voxels in another order (it flips k for left-handed files):
    # compare in physical space.
    aligned = reorient_like(theirs, ours, tolerance_mm=1e-4)
    assert np.array_equal(aligned.array, ours.array)
    centre = np.array(ours.shape_ijk, float) / 2
    ras = ours.ijk_to_ras_points(centre)
    assert np.allclose(theirs.ijk_to_ras_points(theirs.ras_to_ijk_points(ras)), ras, atol=1e-4)


def test_reads_dicom_series(tmp_path):
    volume = make_volume((3, 8, 9), (0.7, 0.7, 2.0), (0, 0, 0), (1, 1, 1), (5.0, 6.0, 7.0), dtype=np.int16)
    volume = volume.with_array((volume.array * 100).astype(np.int16))
    image = sitk.Cast(sitk.GetImageFromArray(volume.array), sitk.sitkInt16)
    image.SetSpacing((0.7, 0.7, 2.0))
    image.SetOrigin((-5.0, -6.0, 7.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        for tag, value in (("0008|0060", "CT"), ("0020|000d", "1.2.3"), ("0020|000e", "1.2.3.4"),
                           ("0020|0013", str(k + 1)), ("0028|1053", "1"), ("0028|1052", "0"),
                           ("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k))))),
                           ("0020|0037", "1\\0\\0\\0\\1\\0")):
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"slice{k:03d}.dcm"))
        writer.Execute(slice_image)
    back = read_image(tmp_path)
    assert back.shape_kji == (3, 8, 9)
    assert np.allclose(back.spacing, (0.7, 0.7, 2.0), atol=1e-4)
    assert np.allclose(back.origin_ras, (5.0, 6.0, 7.0), atol=1e-4)
    assert np.array_equal(back.array, volume.array)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nothing.nii.gz")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"this is not an image")
    with pytest.raises(ImageReadError, match="cannot read image"):
        read_image(broken)
    with pytest.raises(ImageReadError, match="unknown image type"):
        read_image(tmp_path.joinpath("a.txt")) if tmp_path.joinpath("a.txt").write_text("x") else None
    with pytest.raises(ImageReadError, match="no DICOM series"):
        read_image(tmp_path)


def test_4d_and_2d_images_are_refused(tmp_path):
    sitk.WriteImage(sitk.Image([4, 4, 4, 3], sitk.sitkFloat32), str(tmp_path / "four.nii.gz"))
    with pytest.raises(ImageReadError, match="4D image"):
        read_image(tmp_path / "four.nii.gz")
    sitk.WriteImage(sitk.Image([4, 4], sitk.sitkFloat32), str(tmp_path / "two.nii.gz"))
    with pytest.raises(ImageReadError, match="2D image"):
        read_image(tmp_path / "two.nii.gz")


def test_nan_and_inf_are_replaced_with_a_warning(tmp_path):
    volume = make_volume((3, 3, 3))
    array = volume.array.copy()
    array[0, 0, 0], array[1, 1, 1] = np.nan, np.inf
    # ITK's NIfTI reader already turns NaN into 0; NRRD keeps NaN and Inf as stored.
    write_image(volume, tmp_path / "nan.nrrd", array)
    with pytest.warns(UserWarning, match="2 NaN/Inf voxels"):
        back = read_image(tmp_path / "nan.nrrd")
    assert np.isfinite(back.array).all()
    assert back.array[0, 0, 0] == np.nanmin(np.where(np.isfinite(array), array, np.nan))


def test_write_mask_checks_and_leaves_nothing_half_written(tmp_path):
    volume = make_volume((3, 4, 5))
    with pytest.raises(ValueError, match="does not match"):
        write_mask(np.zeros((5, 4, 3), np.uint8), volume, tmp_path / "m.nii.gz")
    with pytest.raises(ValueError, match="boolean or integer"):
        write_mask(np.zeros((3, 4, 5), np.float32), volume, tmp_path / "m.nii.gz")
    with pytest.raises(ValueError, match="does not exist"):
        write_mask(np.zeros((3, 4, 5), np.uint8), volume, tmp_path / "no" / "m.nii.gz")
    assert list(tmp_path.iterdir()) == []
