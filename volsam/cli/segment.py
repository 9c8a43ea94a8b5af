"""``volsam segment``: clicks (and optionally a box) on an image -> a mask file.

Coordinates are RAS mm by default (as Slicer shows them), or LPS mm, or voxel indices
(``--space``). Negative coordinates parse as values: ``--point -88.1,101.3,17.7``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..methods import get_method, method_names
from . import SetOnce, number_list
from .checks import (
    check_input_file,
    check_input_image,
    check_output_image,
    check_weights,
    intensity_warning,
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment", help="segment from clicks with SAMAdapt3D or SAM2Volume",
        description="Segment a lesion from point clicks (and, for sam2-3dmed, a box) and write the mask "
                    "in the image's geometry.")
    parser.add_argument("--model", action=SetOnce, required=True, choices=method_names())
    parser.add_argument("--weights", action=SetOnce, required=True,
                        help="'demo', a checkpoint of this project, or a released 3DSAM-adapter .pth.tar")
    parser.add_argument("--image", action=SetOnce, required=True, help="input image (NIfTI, NRRD, MHA, DICOM folder)")
    parser.add_argument("--point", action="append", default=[], type=number_list(3, "--point"),
                        metavar="X,Y,Z", help="positive click (repeatable)")
    parser.add_argument("--negative", action="append", default=[], type=number_list(3, "--negative"),
                        metavar="X,Y,Z", help="negative (background) click (repeatable)")
    parser.add_argument("--box", type=number_list(6, "--box"), metavar="X1,Y1,Z1,X2,Y2,Z2",
                        help="box prompt on one slice, two opposite corners (sam2-3dmed)")
    parser.add_argument("--space", action=SetOnce, choices=("ras", "lps", "ijk"), default="ras",
                        help="coordinate space of --point/--negative/--box (default: ras)")
    parser.add_argument("--allow-gaps", action="store_true",
                        help="read a DICOM series with missing slices by resampling it onto a uniform grid")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="print each step on stderr (default: when stderr is a terminal)")
    parser.add_argument("--out", action=SetOnce, required=True, help="output mask file (.nii.gz, .nrrd, ...)")
    adapter = parser.add_argument_group("sam3d-adapter")
    adapter.add_argument("--sam-checkpoint", help="SAM ViT-B checkpoint (sam_vit_b_01ec64.pth) for the frozen encoder")
    adapter.add_argument("--preset", help="intensity preset: kits, lits, pancreas, colon or ct (default)")
    adapter.add_argument("--mode", choices=("interactive", "paper"), default="interactive",
                         help="interactive: crops follow the clicks and grow with the mask (default); "
                              "paper: one crop around the clicks' centre, as the paper evaluates")
    adapter.add_argument("--precision", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                        help="auto: bf16/fp16 autocast on GPU, float32 on CPU")
    sam2 = parser.add_argument_group("sam2-3dmed")
    sam2.add_argument("--sam2-checkpoint", help="official SAM2.1 checkpoint for the frozen parts")
    sam2.add_argument("--config", choices=("tiny", "small", "base_plus", "large"), help="SAM2.1 size")
    sam2.add_argument("--axis", choices=("axial", "coronal", "sagittal"), default="axial",
                      help="slice direction to propagate through (default: axial)")
    parser.set_defaults(func=run)


def check_arguments(args) -> Path:
    """Everything that can be checked before the image is read and the model is built; returns
    the output path."""
    method = get_method(args.model)
    image = check_input_image(args.image, "--image")
    out = check_output_image(args.out, "--out", inputs=[image])
    if not args.point and args.box is None:
        raise ValueError("give at least one --point (or a --box for a method that takes boxes)")
    if args.box is not None and "box" not in method.capabilities:
        raise ValueError(f"--model {method.name} takes point prompts only; --box is for "
                         f"{', '.join(m for m in method_names() if 'box' in get_method(m).capabilities)}")
    if not args.point and args.negative:
        raise ValueError("negative clicks need at least one positive --point")
    check_weights(args.model, args.weights)
    for option, value in (("--sam-checkpoint", args.sam_checkpoint), ("--sam2-checkpoint", args.sam2_checkpoint)):
        if value is not None:
            check_input_file(value, option, "a checkpoint file")
    return out


def _say(message: str) -> None:
    print(f"volsam segment: {message}", file=sys.stderr, flush=True)


def run(args) -> int:
    out = check_arguments(args)
    import numpy as np

    from ..devices import resolve_device
    from ..io import read_image, write_mask
    from ..methods import SessionSettings, WeightsChoice

    method = get_method(args.model)
    # Progress goes to a terminal (or with --progress); piped stderr keeps only warnings, errors
    # and the final line.
    progress = _say if (args.progress if args.progress is not None else sys.stderr.isatty()) else (lambda _: None)
    device = resolve_device(args.device)
    progress(f"reading {args.image}")
    volume = read_image(args.image, allow_gaps=args.allow_gaps)
    warning = intensity_warning(volume, args.image)
    if warning:
        _say(f"warning: {warning}")
    progress(f"loading the {method.title} model on {device}")
    loaded = method.load_model(WeightsChoice(weights=args.weights, sam_checkpoint=args.sam_checkpoint,
                                             sam2_checkpoint=args.sam2_checkpoint, variant=args.config), device)
    session = method.open_session(loaded, SessionSettings(
        preset=args.preset, mode=args.mode, precision=args.precision, slice_direction=args.axis))
    session.open_volume(volume)
    progress("segmenting")
    # Prompts are given as typed (--space); the session converts each to voxels once.
    if args.box is not None:
        session.add_box(args.box[:3], args.box[3:], space=args.space)
    if args.point:
        session.add_points(args.point, args.negative, space=args.space)
    session.run()
    mask = session.result
    write_mask(mask, volume, out)
    voxels = int(np.count_nonzero(mask))
    if voxels == 0:
        _say("warning: the mask is empty (0 voxels): the model found no object at the prompts; check that "
                  "the points lie on the lesion in --space " + args.space + " coordinates (ras as Slicer shows them, "
                  "lps as ITK and DICOM do) and that the image is CT in Hounsfield units")
    _say(f"wrote {out} ({voxels} voxels, label value 1)")
    return 0
