"""``volsam segment``: clicks (and optionally a box) on an image -> a mask file.

Coordinates are RAS mm by default (as Slicer shows them), or LPS mm, or voxel indices
(``--space``). Negative coordinates parse as values: ``--point -88.1,101.3,17.7``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..methods import method_names
from . import number_list


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment", help="segment from clicks with SAMAdapt3D or SAM2Volume",
        description="Segment a lesion from point clicks (and, for sam2-3dmed, a box) and write the mask "
                    "in the image's geometry.")
    parser.add_argument("--model", required=True, choices=method_names())
    parser.add_argument("--weights", required=True,
                        help="'demo', a checkpoint of this project, or a released 3DSAM-adapter .pth.tar")
    parser.add_argument("--image", required=True, help="input image (NIfTI, NRRD, MHA, DICOM folder)")
    parser.add_argument("--point", action="append", default=[], type=number_list(3, "--point"),
                        metavar="X,Y,Z", help="positive click (repeatable)")
    parser.add_argument("--negative", action="append", default=[], type=number_list(3, "--negative"),
                        metavar="X,Y,Z", help="negative (background) click (repeatable)")
    parser.add_argument("--box", type=number_list(6, "--box"), metavar="X1,Y1,Z1,X2,Y2,Z2",
                        help="box prompt on one slice, two opposite corners (sam2-3dmed)")
    parser.add_argument("--space", choices=("ras", "lps", "ijk"), default="ras",
                        help="coordinate space of --point/--negative/--box (default: ras)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--out", required=True, help="output mask file (.nii.gz, .nrrd, ...)")
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


def run(args) -> int:
    import numpy as np

    from ..devices import resolve_device
    from ..io import IMAGE_SUFFIXES, read_image, write_mask
    from ..methods import SessionSettings, WeightsChoice, get_method

    method = get_method(args.model)
    out = Path(args.out)
    if not out.name.lower().endswith(IMAGE_SUFFIXES):
        raise ValueError(f"--out {out}: unknown image type; expected one of {', '.join(IMAGE_SUFFIXES)}")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: folder {out.parent} does not exist")
    if not args.point and args.box is None:
        raise ValueError("give at least one --point (or a --box for a method that takes boxes)")
    if args.box is not None and "box" not in method.capabilities:
        raise ValueError(f"--model {method.name} takes point prompts only; --box is for "
                         f"{', '.join(m for m in method_names() if 'box' in get_method(m).capabilities)}")
    if not args.point and args.negative:
        raise ValueError("negative clicks need at least one positive --point")
    device = resolve_device(args.device)
    volume = read_image(args.image)
    loaded = method.load_model(WeightsChoice(weights=args.weights, sam_checkpoint=args.sam_checkpoint,
                                             sam2_checkpoint=args.sam2_checkpoint, variant=args.config), device)
    session = method.open_session(loaded, SessionSettings(
        preset=args.preset, mode=args.mode, precision=args.precision, slice_direction=args.axis))
    session.open_volume(volume)
    # Prompts are given as typed (--space); the session converts each to voxels once.
    if args.box is not None:
        session.add_box(args.box[:3], args.box[3:], space=args.space)
    if args.point:
        session.add_points(args.point, args.negative, space=args.space)
    session.run()
    mask = session.result
    write_mask(mask, volume, out)
    print(f"wrote {out} ({int(np.count_nonzero(mask))} voxels)", file=sys.stderr)
    return 0
