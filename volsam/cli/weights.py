"""``volsam weights inspect PATH``: what a checkpoint file is, before a model is built from it.

Prints the kind (sam-vit-b; sam-vit-l / sam-vit-h, which no volsam model accepts;
sam3d-adapter-official; sam3d-adapter; sam2.1-*; unknown; damaged), the tensor count, the
parameter count with buffers listed separately, and the trainable count under the method's
freezing rule. Exit status: 0 for a usable checkpoint, 1 for anything else (unknown, damaged,
refused, or failing the strict layout check).
"""

from __future__ import annotations

import json


def add_parser(subparsers):
    parser = subparsers.add_parser("weights", help="inspect checkpoint files",
                                   description="Work with model checkpoint files.")
    verbs = parser.add_subparsers(dest="weights_verb", metavar="SUBVERB", required=True)
    inspect = verbs.add_parser("inspect", help="print a checkpoint's kind, tensor, parameter and trainable counts",
                               description="Describe a checkpoint: kind, tensors, parameters (buffers separately) "
                                           "and trainable parameters under the method's freezing rule. Exits 1 "
                                           "for unknown, damaged or unusable files.")
    inspect.add_argument("path", help="checkpoint file (.pth, .pth.tar, .pt, .safetensors)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)
    return parser


def run(args) -> int:
    from dataclasses import asdict

    from ..checkpoint_info import describe_checkpoint

    report = describe_checkpoint(args.path)
    if getattr(args, "json", False):
        print(json.dumps(asdict(report)))
    else:
        print("\n".join(report.lines()))
    return 0 if report.usable else 1
