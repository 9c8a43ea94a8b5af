"""``volsam demo``: one phantom, one click, both demo models, masks, a figure and Dice.

The phantom (``volsam.phantoms``, a seed no demo model was trained on) is written with its
tumour labels; its largest lesion is clicked at its centre; each packaged demo model segments
it through the method registry and the same session as ``volsam segment --weights demo``; the masks are written as
NIfTI, a PNG shows three orthogonal slices through the click (image, each model's mask
outline, the true lesion's outline, the click), and Dice against the clicked lesion (the
connected component of the truth holding the click) is printed.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .geometry import Volume
from .methods import method_names

#: Held out from the demo models' training data (seed 1, see volsam/demo_models/README.md).
DEFAULT_SEED = 2025
DEMO_MODELS = method_names()
#: Display window (soft tissue) for the figure.
WINDOW_HU = (-160.0, 240.0)
#: Outline colours: one per method, in registry order, then the truth's.
METHOD_COLOURS = ("#ff7f0e", "#1f77b4", "#9467bd", "#8c564b")
TRUTH_COLOUR = "#2ca02c"


@dataclass(frozen=True)
class DemoResult:
    image_path: Path
    truth_path: Path
    mask_paths: dict
    figure_path: Path
    click_kji: tuple[int, int, int]
    lesion_diameter_mm: float
    dice: dict  # model -> Dice against the clicked lesion
    seconds: dict  # model -> segmentation time


def largest_lesion_click(info) -> tuple[tuple[int, int, int], float]:
    """The centre voxel (k, j, i) of the phantom's largest lesion and its diameter in mm."""
    lesion = max(info.lesions, key=lambda item: item.diameter_mm)
    return tuple(int(v) for v in lesion.center_ijk[::-1]), float(lesion.diameter_mm)


def run_model(name: str, volume: Volume, click_kji, device) -> np.ndarray:
    """A demo model's mask for one positive click, through the registry and its session."""
    from .methods import WeightsChoice, get_method

    method = get_method(name)
    session = method.open_session(method.load_model(WeightsChoice(weights="demo"), device))
    session.open_volume(volume)
    session.add_point(np.array(click_kji[::-1], dtype=float), space="ijk")
    session.run()
    return session.result > 0


def colour_of(model: str) -> str:
    names = method_names()
    return METHOD_COLOURS[names.index(model) % len(METHOD_COLOURS)] if model in names else "red"


def run_demo(out: str | Path, seed: int = DEFAULT_SEED, device: str = "auto", models=DEMO_MODELS,
             progress=None) -> DemoResult:
    """Run the demo into ``out``; ``progress`` receives one line per step (default: stderr)."""
    from .clicks import component_at
    from .devices import resolve_device
    from .io import write_image, write_mask
    from .metrics import dice
    from .phantoms import TUMOR_LABEL, make_phantom

    progress = progress or print_progress
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch_device = resolve_device(device)
    image, labels, info = make_phantom(seed)
    truth = labels.array == TUMOR_LABEL
    click, diameter = largest_lesion_click(info)
    lesion = component_at(truth, click)
    image_path, truth_path = out / "phantom.nii.gz", out / "phantom_labels.nii.gz"
    write_image(image, image_path)
    write_mask(labels.array, labels, truth_path)
    progress(f"phantom (seed {seed}): {image.shape_ijk} voxels at {np.round(image.spacing, 2).tolist()} mm; "
             f"clicked the largest lesion ({diameter:.1f} mm) at voxel (i, j, k) {list(click[::-1])}")
    masks, paths, dices, seconds = {}, {}, {}, {}
    for model in models:
        started = time.perf_counter()
        mask = run_model(model, image, click, torch_device)
        seconds[model] = time.perf_counter() - started
        masks[model] = mask
        paths[model] = out / f"{model.replace('-', '_')}_mask.nii.gz"
        write_mask(mask.astype(np.uint8), image, paths[model])
        dices[model] = dice(mask, lesion)
        progress(f"{model}: Dice {dices[model]:.3f} against the clicked lesion ({int(mask.sum())} voxels, "
                 f"{seconds[model]:.1f} s) -> {paths[model]}")
    figure_path = out / "demo.png"
    save_figure(image, masks, lesion, click, figure_path,
                title=f"volsam demo: phantom seed {seed}, one click on a {diameter:.0f} mm lesion")
    progress(f"figure: {figure_path}")
    return DemoResult(image_path, truth_path, paths, figure_path, click, diameter, dices, seconds)


#: Where each view puts the patient, as radiologists (and Slicer) show it: (RAS direction that
#: points to the screen's right, RAS direction that points down the screen).
VIEW_SCREEN_AXES = {"axial": ((-1, 0, 0), (0, -1, 0)),      # patient's right on the left, anterior up
                    "coronal": ((-1, 0, 0), (0, 0, -1)),    # right on the left, superior up
                    "sagittal": ((0, -1, 0), (0, 0, -1))}   # anterior on the left, superior up
_LETTERS = (("R", "L"), ("A", "P"), ("S", "I"))


@dataclass(frozen=True)
class DisplayPlane:
    """One slice through the click as shown: the 2D image (rows top to bottom), its pixel
    aspect, the click's (row, column), and the patient direction at each edge."""

    name: str
    image_index: tuple
    flip_rows: bool
    flip_columns: bool
    transpose: bool
    aspect: float
    click: tuple[float, float]
    edges: dict  # {"left", "right", "top", "bottom"} -> "R", "L", "A", "P", "S" or "I"

    def show(self, array: np.ndarray) -> np.ndarray:
        """The (k, j, i) volume ``array``'s slice, oriented for the screen."""
        plane = array[self.image_index]
        plane = plane.T if self.transpose else plane
        return plane[::-1 if self.flip_rows else 1, ::-1 if self.flip_columns else 1]


def _letter(vector) -> str:
    axis = int(np.argmax(np.abs(vector)))
    return _LETTERS[axis][0 if vector[axis] > 0 else 1]


def display_planes(volume: Volume, click_kji) -> list[DisplayPlane]:
    """The axial, coronal and sagittal slices through the click, each oriented as
    :data:`VIEW_SCREEN_AXES` says (whatever the voxel order on disk), with edge labels."""
    k, j, i = click_kji
    axes_ras = volume.ijk_to_ras[:3, :3] / np.asarray(volume.spacing)[None, :]  # unit i, j, k directions
    spacing = volume.spacing
    planes = []
    for name, index, (row_axis, column_axis), click in (
            ("axial", (k, slice(None), slice(None)), (1, 0), (j, i)),
            ("coronal", (slice(None), j, slice(None)), (2, 0), (k, i)),
            ("sagittal", (slice(None), slice(None), i), (2, 1), (k, j))):
        right, down = (np.array(v, float) for v in VIEW_SCREEN_AXES[name])
        rows, columns = axes_ras[:, row_axis], axes_ras[:, column_axis]
        transpose = abs(rows @ right) > abs(columns @ right)  # the row axis runs across the screen
        if transpose:
            rows, columns, row_axis, column_axis = columns, rows, column_axis, row_axis
            click = click[::-1]
        flip_rows, flip_columns = bool(rows @ down < 0), bool(columns @ right < 0)
        sizes = volume.shape_ijk
        row, column = click
        row = sizes[row_axis] - 1 - row if flip_rows else row
        column = sizes[column_axis] - 1 - column if flip_columns else column
        shown_down = -rows if flip_rows else rows
        shown_right = -columns if flip_columns else columns
        edges = {"right": _letter(shown_right), "left": _letter(-shown_right), "bottom": _letter(shown_down),
                 "top": _letter(-shown_down)}
        planes.append(DisplayPlane(name, index, flip_rows, flip_columns, transpose,
                                   spacing[row_axis] / spacing[column_axis], (row, column), edges))
    return planes


def save_figure(volume: Volume, masks: dict, lesion: np.ndarray, click_kji, path: Path, title: str = "") -> None:
    """Three orthogonal slices through the click (radiological orientation, edges labelled with
    the patient directions): grey image, mask outlines, the click."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    figure, axes = plt.subplots(1, 3, figsize=(13, 4.8))
    image = np.asarray(volume.array, dtype=np.float32)
    for axis, plane in zip(axes, display_planes(volume, click_kji)):
        axis.imshow(plane.show(image), cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1], aspect=plane.aspect,
                    origin="upper", interpolation="nearest")
        for model, mask in masks.items():
            shown = plane.show(mask)
            if shown.any():
                axis.contour(shown.astype(float), levels=[0.5], colors=colour_of(model), linewidths=1.5)
        truth = plane.show(lesion)
        if truth.any():
            axis.contour(truth.astype(float), levels=[0.5], colors=TRUTH_COLOUR, linewidths=1.0,
                         linestyles="dashed")
        axis.plot(plane.click[1], plane.click[0], marker="+", color="yellow", markersize=14, markeredgewidth=2)
        for edge, (x, y, align) in {"left": (0.02, 0.5, "left"), "right": (0.98, 0.5, "right"),
                                    "top": (0.5, 0.97, "center"), "bottom": (0.5, 0.03, "center")}.items():
            axis.text(x, y, plane.edges[edge], transform=axis.transAxes, color="white", fontsize=11,
                      fontweight="bold", ha=align, va="center")
        axis.set_title(plane.name)
        axis.set_axis_off()
    handles = [Line2D([], [], color=colour_of(m), label=m) for m in masks]
    handles += [Line2D([], [], color=TRUTH_COLOUR, linestyle="dashed", label="true lesion"),
                Line2D([], [], color="yellow", marker="+", linestyle="none", label="click")]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.07, 1, 0.95))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def print_progress(message: str) -> None:
    print(message, file=sys.stderr)
