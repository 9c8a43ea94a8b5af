"""Render the extension's screenshot: three slice views and a 3D view of a phantom and a mask.

    python Resources/make_screenshot.py                         # the phantom's ground-truth lesion
    python Resources/make_screenshot.py --mask result.nii.gz --label "demo model, 1 click"

The phantom is volsam's synthetic CT (an oblique, anisotropic grid, as scanners write them).
``--mask`` takes a mask file on the phantom's grid (e.g. ``volsam segment ... --out``) and shows
it instead of the ground truth; ``--image`` takes the phantom image file that mask was made on.
Slice views are axial, coronal and sagittal planes in RAS through the lesion, resampled from the
voxel grid; the 3D view is a VTK surface rendering made offscreen (no display needed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from volsam.geometry import Volume, reorient_like  # noqa: E402
from volsam.io import read_image  # noqa: E402
from volsam.phantoms import ORGAN_LABEL, TUMOR_LABEL, PhantomConfig, make_phantom  # noqa: E402

OUTPUT = ROOT / "Resources" / "Screenshots" / "VolumetricSAM-phantom.png"
PHANTOM = PhantomConfig(size_ijk=(128, 112, 56), spacing_ijk=(1.5, 1.5, 3.0), rotation_deg_ras=(0.0, 6.0, 12.0),
                        lesions_per_case=(1, 1), lesion_diameter_median_mm=32.0)
VIEW_PIXELS = 400
WINDOW = (40.0, 400.0)  # CT soft-tissue level and width
SEGMENT_COLOR = np.array([241, 128, 52])
VIEWS = {  # name: (plane normal axis in RAS, in-plane axes (right, up) in RAS, Slicer's view colour)
    "Axial": (2, (0, 1), (193, 85, 85)),
    "Sagittal": (0, (1, 2), (223, 209, 124)),
    "Coronal": (1, (0, 2), (113, 166, 102)),
}


def slice_view(image: Volume, mask: np.ndarray, centre_ras: np.ndarray, name: str) -> Image.Image:
    """Resample one RAS-aligned plane through ``centre_ras`` and draw the mask's outline."""
    normal_axis, (right_axis, up_axis), colour = VIEWS[name]
    low, high = image.bounds_ras()
    extent = max(high[right_axis] - low[right_axis], high[up_axis] - low[up_axis])
    offsets = np.linspace(-extent / 2, extent / 2, VIEW_PIXELS)
    up, right = np.meshgrid(offsets[::-1], offsets, indexing="ij")
    ras = np.zeros((VIEW_PIXELS, VIEW_PIXELS, 3))
    ras[..., normal_axis] = centre_ras[normal_axis]
    # As Slicer shows them: the patient's right on the screen's left, anterior on the left.
    ras[..., right_axis] = (low[right_axis] + high[right_axis]) / 2 - right
    ras[..., up_axis] = (low[up_axis] + high[up_axis]) / 2 + up
    kji = image.ras_to_ijk_points(ras.reshape(-1, 3))[:, ::-1].T
    values = ndimage.map_coordinates(image.array.astype(np.float32), kji, order=1, cval=-1024).reshape(ras.shape[:2])
    inside = ndimage.map_coordinates(mask.astype(np.float32), kji, order=1, cval=0).reshape(ras.shape[:2]) >= 0.5
    level, width = WINDOW
    grey = np.clip((values - (level - width / 2)) / width, 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgb[inside] = 0.55 * rgb[inside] + 0.45 * SEGMENT_COLOR
    outline = inside & ~ndimage.binary_erosion(inside, iterations=2)
    rgb[outline] = SEGMENT_COLOR
    view = Image.fromarray(rgb.astype(np.uint8))
    draw = ImageDraw.Draw(view)
    draw.rectangle([0, 0, VIEW_PIXELS - 1, 22], fill=colour)
    draw.text((6, 5), name, fill=(0, 0, 0))
    return view


def surface_view(image: Volume, labels: np.ndarray, mask: np.ndarray) -> Image.Image:
    """Offscreen VTK rendering: the body translucent, organs faint, the segment solid."""
    import vtk
    from vtk.util import numpy_support

    def surface(binary: np.ndarray):
        data = vtk.vtkImageData()
        data.SetDimensions(*binary.shape[::-1])
        padded = np.ascontiguousarray(ndimage.gaussian_filter(binary.astype(np.float32), 0.8))
        data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(padded.ravel(), deep=True))
        contour = vtk.vtkFlyingEdges3D()
        contour.SetInputData(data)
        contour.SetValue(0, 0.5)
        transform = vtk.vtkTransform()
        transform.SetMatrix(image.ijk_to_ras.ravel().tolist())
        to_ras = vtk.vtkTransformPolyDataFilter()
        to_ras.SetTransform(transform)
        to_ras.SetInputConnection(contour.GetOutputPort())
        normals = vtk.vtkPolyDataNormals()
        normals.SetInputConnection(to_ras.GetOutputPort())
        normals.AutoOrientNormalsOn()
        mapper = vtk.vtkPolyDataMapper()
        mapper.SetInputConnection(normals.GetOutputPort())
        mapper.ScalarVisibilityOff()
        actor = vtk.vtkActor()
        actor.SetMapper(mapper)
        return actor

    renderer = vtk.vtkRenderer()
    renderer.GradientBackgroundOn()
    renderer.SetBackground(0.45, 0.47, 0.62)
    renderer.SetBackground2(0.05, 0.05, 0.12)
    for binary, colour, opacity in ((image.array > -400, (0.9, 0.8, 0.72), 0.12),
                                    (labels == ORGAN_LABEL, (0.75, 0.45, 0.45), 0.25),
                                    (mask, tuple(SEGMENT_COLOR / 255), 1.0)):
        actor = surface(binary)
        actor.GetProperty().SetColor(*colour)
        actor.GetProperty().SetOpacity(opacity)
        renderer.AddActor(actor)
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(VIEW_PIXELS, VIEW_PIXELS)
    window.AddRenderer(renderer)
    camera = renderer.GetActiveCamera()
    centre = image.ijk_to_ras_points(np.array(image.shape_ijk, float) / 2)
    camera.SetFocalPoint(*centre)
    camera.SetPosition(*(centre + np.array([-260.0, 420.0, 200.0])))  # from the patient's front left, above
    camera.SetViewUp(0, 0, 1)
    renderer.ResetCamera()
    camera.Zoom(1.3)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.Update()
    shot = grab.GetOutput()
    width, height, _ = shot.GetDimensions()
    pixels = numpy_support.vtk_to_numpy(shot.GetPointData().GetScalars()).reshape(height, width, -1)[::-1, :, :3]
    view = Image.fromarray(np.ascontiguousarray(pixels))
    draw = ImageDraw.Draw(view)
    draw.rectangle([0, 0, VIEW_PIXELS - 1, 22], fill=(116, 131, 233))
    draw.text((6, 5), "3D", fill=(0, 0, 0))
    return view


def compose(views: list[Image.Image], caption: str) -> Image.Image:
    """Slicer's four-up layout: 3D top left, axial top right, coronal and sagittal below."""
    gap, band = 4, 30
    sheet = Image.new("RGB", (2 * VIEW_PIXELS + gap, 2 * VIEW_PIXELS + gap + band), (30, 30, 30))
    for position, view in enumerate(views):
        row, column = divmod(position, 2)
        sheet.paste(view, (column * (VIEW_PIXELS + gap), band + row * (VIEW_PIXELS + gap)))
    ImageDraw.Draw(sheet).text((8, 9), caption, fill=(235, 235, 235))
    return sheet


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mask", type=Path, help="mask file on the phantom's grid (default: ground truth)")
    parser.add_argument("--image", type=Path, help="the phantom image the mask was made on (default: generated)")
    parser.add_argument("--labels", type=Path, help="that image's label map, for the organs in the 3D view")
    parser.add_argument("--label", default=None, help="what the mask is, for the caption")
    parser.add_argument("--seed", type=int, default=4, help="phantom seed (default: 4)")
    parser.add_argument("--out", type=Path, default=OUTPUT, help=f"output PNG (default: {OUTPUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)

    image, labels, info = make_phantom(args.seed, PHANTOM)
    if args.image is not None:
        image = read_image(args.image)
        labels = (reorient_like(read_image(args.labels), image) if args.labels is not None
                  else image.with_array(np.zeros(image.shape_kji, np.uint8)))
    mask = labels.array == TUMOR_LABEL
    caption = "VolumetricSAM - synthetic CT phantom, lesion (ground truth)"
    if args.mask is not None:
        mask_volume = reorient_like(read_image(args.mask), image)
        mask = mask_volume.array > 0
        caption = f"VolumetricSAM - synthetic CT phantom, {args.label or 'segmentation from ' + args.mask.name}"
    # Slices through the middle of what is shown (the generated phantom's first lesion by default).
    centre = (image.ijk_to_ras_points(np.argwhere(mask)[:, ::-1].mean(axis=0)) if mask.any()
              else np.array(info.lesions[0].center_ras))
    views = [surface_view(image, labels.array, mask)]
    views += [slice_view(image, mask, centre, name) for name in ("Axial", "Coronal", "Sagittal")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    compose(views, caption).save(args.out, optimize=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
