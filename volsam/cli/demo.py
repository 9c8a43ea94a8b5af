"""``volsam demo``: a phantom, one click on its largest lesion, both demo models, masks, a figure."""

from __future__ import annotations

from pathlib import Path

from ..methods import method_names


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="segment a phantom's largest lesion with both demo models (masks, PNG, Dice)",
        description="Make a CT-like phantom, click the centre of its largest lesion, segment it with the packaged "
                    "SAMAdapt3D and SAM2Volume demo models, write the masks as NIfTI and a PNG of three orthogonal "
                    "slices through the click, and print each model's Dice against the true lesion.")
    parser.add_argument("--out", type=Path, default=Path("volsam-demo"), help="output folder (default: volsam-demo)")
    parser.add_argument("--seed", type=int, default=2025, help="phantom seed (default 2025, not used in training)")
    parser.add_argument("--model", action="append", choices=method_names(),
                        help="run only this model (repeatable; default: both)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..demo import DEMO_MODELS, run_demo

    run_demo(args.out, seed=args.seed, device=args.device, models=tuple(args.model or DEMO_MODELS))
    return 0
