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


def _planes(volume: Volume, click_kji):
    """(name, 2D index into the (k, j, i) array, aspect, click (row, column)) of the three
    orthogonal slices through the click; rows run along the slower array axis."""
    k, j, i = click_kji
    si, sj, sk = volume.spacing
    return [("axial", (k, slice(None), slice(None)), sj / si, (j, i)),
            ("coronal", (slice(None), j, slice(None)), sk / si, (k, i)),
            ("sagittal", (slice(None), slice(None), i), sk / sj, (k, j))]


def save_figure(volume: Volume, masks: dict, lesion: np.ndarray, click_kji, path: Path, title: str = "") -> None:
    """Three orthogonal slices through the click: grey image, mask outlines, the click."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    planes = _planes(volume, click_kji)
    figure, axes = plt.subplots(1, 3, figsize=(13, 4.8))
    image = np.asarray(volume.array, dtype=np.float32)
    for axis, (name, index, aspect, (row, column)) in zip(axes, planes):
        axis.imshow(image[index], cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1], aspect=aspect,
                    origin="lower" if name != "axial" else "upper", interpolation="nearest")
        for model, mask in masks.items():
            if mask[index].any():
                axis.contour(mask[index].astype(float), levels=[0.5], colors=colour_of(model),
                             linewidths=1.5)
        if lesion[index].any():
            axis.contour(lesion[index].astype(float), levels=[0.5], colors=TRUTH_COLOUR, linewidths=1.0,
                         linestyles="dashed")
        axis.plot(column, row, marker="+", color="yellow", markersize=14, markeredgewidth=2)
        axis.set_title(name)
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
