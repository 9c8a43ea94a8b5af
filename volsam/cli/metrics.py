"""``volsam metrics --pred P --ref R``: Dice, IoU, NSD and HD95 of a mask against a reference.

Prints one JSON object {"dice", "iou", "nsd", "hd95"}; an infinite HD95 (exactly one mask
empty) is written as null, since JSON has no infinity. Both images must be label images (whole
values >= 0, at most 255 labels: a CT given as a mask is refused). Without ``--label`` every
nonzero voxel is foreground. ``--label L`` selects the reference's label L (which must occur);
the prediction's too, unless it holds a single label (a binary mask such as ``volsam
segment`` writes), which is then taken whole; a prediction without L scores 0. The two images must share one voxel grid in physical space (within 1e-4 mm);
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
    parser.add_argument("--label", type=int, help="the reference's label to score (default: all nonzero); a binary "
                                                  "prediction (one label, e.g. volsam segment's) is taken whole")
    parser.add_argument("--tolerance", type=float, metavar="MM",
                        help="NSD tolerance in mm (default: 5, volsam.metrics.DEFAULT_TOLERANCE_MM)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from .checks import check_input_image, check_positive_number

    check_positive_number(args.tolerance, "--tolerance", allow_zero=True)
    if args.label is not None and args.label <= 0:
        raise ValueError(f"--label {args.label}: labels are >= 1 (0 is the background); leave out --label to "
                         "compare all nonzero voxels")
    check_input_image(args.ref, "--ref")
    check_input_image(args.pred, "--pred")

    from ..geometry import reorient_like
    from ..io import read_image
    from ..metrics import DEFAULT_TOLERANCE_MM, compute_metrics, masks_for_label

    tolerance = DEFAULT_TOLERANCE_MM if args.tolerance is None else args.tolerance
    ref = read_image(args.ref)
    pred = read_image(args.pred)
    try:
        pred = reorient_like(pred, ref)
    except ValueError as error:
        raise ValueError(f"--pred {args.pred} and --ref {args.ref}: {error}") from None
    pred_mask, ref_mask = masks_for_label(pred.array, ref.array, args.label, f"--pred {args.pred}",
                                          f"--ref {args.ref}")
    result = compute_metrics(pred_mask, ref_mask, ref.spacing, tolerance_mm=tolerance)
    print(json.dumps({name: (value if math.isfinite(value) else None) for name, value in result.items()}))
    return 0
