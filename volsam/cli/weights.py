"""``volsam weights inspect PATH``: what a checkpoint file is, before a model is built from it.

Prints the kind (sam-vit-b; sam-vit-l / sam-vit-h, which no volsam model accepts;
sam3d-adapter-official; sam3d-adapter; sam2.1-*; unknown; damaged), the tensor count, the
parameter count with buffers listed separately, and the trainable count under the method's
freezing rule. Exit status: 0 for a usable checkpoint, 1 for anything else (unknown, damaged,
refused, or failing the strict layout check).
"""

from __future__ import annotations

import json

from ..methods import method_names


def add_parser(subparsers):
    parser = subparsers.add_parser("weights", help="inspect checkpoint files",
                                   description="Work with model checkpoint files.")
    verbs = parser.add_subparsers(dest="weights_verb", metavar="SUBVERB", required=True)
    inspect = verbs.add_parser("inspect", help="print a checkpoint's kind, tensor, parameter and trainable counts",
                               description="Describe a checkpoint: kind, tensors, parameters (buffers separately) "
                                           "and trainable parameters under the method's freezing rule. Exits 1 "
                                           "for unknown, damaged or unusable files.")
    inspect.add_argument("path", help="checkpoint file (.pth, .pth.tar, .pt, .safetensors), or 'demo' for the "
                                      "packaged demo models (as --weights demo takes)")
    inspect.add_argument("--model", choices=method_names(),
                         help="with 'demo': only this method's demo model (default: every method's)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object (one per line for 'demo')")
    parser.set_defaults(func=run)
    return parser


def run(args) -> int:
    from dataclasses import asdict

    from ..checkpoint_info import describe_checkpoint

    if args.path == "demo":
        from ..methods import get_method

        paths = [get_method(name).demo_weights() for name in ([args.model] if args.model else method_names())]
    elif args.model:
        raise ValueError("--model applies to 'demo' only; a file says what it is")
    else:
        paths = [args.path]
    reports = [describe_checkpoint(path) for path in paths]
    for index, report in enumerate(reports):
        if getattr(args, "json", False):
            print(json.dumps(asdict(report)))
        else:
            print(("\n" if index else "") + "\n".join(report.lines()))
    return 0 if all(report.usable for report in reports) else 1
