"""``volsam metrics --pred P --ref R``: Dice, IoU, NSD and HD95 of a mask against a reference.

Prints one JSON object {"dice", "iou", "nsd", "hd95"}; an infinite HD95 (exactly one mask
empty) is written as null, since JSON has no infinity. With ``--label L`` both images are
binarised as (voxel == L) and L must occur in both; without it, every nonzero voxel is
foreground. The two images must share one voxel grid in physical space (within 1e-4 mm);
the same grid stored in another index order (flipped or permuted axes) is accepted.
"""

from __future__ import annotations

import json
import math


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "metrics", help="Dice, IoU, NSD and HD95 of a mask against a reference",
        description="Compare a predicted mask with a reference mask and print one JSON object "
                    "{dice, iou, nsd, hd95}; hd95 is null when exactly one mask is empty.")
    parser.add_argument("--pred", required=True, help="predicted mask (NIfTI, NRRD, MHA, ...)")
    parser.add_argument("--ref", required=True, help="reference mask on the same grid")
    parser.add_argument("--label", type=int, help="compare voxels equal to this label (default: all nonzero)")
    parser.add_argument("--tolerance", type=float, metavar="MM",
                        help="NSD tolerance in mm (default: 5, volsam.metrics.DEFAULT_TOLERANCE_MM)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..geometry import reorient_like
    from ..io import read_image
    from ..metrics import compute_metrics

    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        raise ValueError(f"--tolerance must be a finite number of mm >= 0, got {args.tolerance:g}")
    ref = read_image(args.ref)
    pred = read_image(args.pred)
    try:
        pred = reorient_like(pred, ref)
    except ValueError as error:
        raise ValueError(f"--pred {args.pred} and --ref {args.ref}: {error}") from None
    if args.label is None:
        pred_mask, ref_mask = pred.array != 0, ref.array != 0
    else:
        pred_mask, ref_mask = pred.array == args.label, ref.array == args.label
        for name, path, mask in (("--ref", args.ref, ref_mask), ("--pred", args.pred, pred_mask)):
            if not mask.any():
                raise ValueError(f"{name} {path}: no voxel has label {args.label}; expected the label to occur "
                                 "in both images (leave out --label to compare all nonzero voxels)")
    result = compute_metrics(pred_mask, ref_mask, ref.spacing, tolerance_mm=args.tolerance)
    print(json.dumps({name: (value if math.isfinite(value) else None) for name, value in result.items()}))
    return 0
