"""``volsam evaluate``: Dice / NSD / IoU / HD95 of a model on a labelled dataset, per click count."""

from __future__ import annotations

import sys
from pathlib import Path

from ..methods import method_names


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score a model on a labelled dataset (per-case CSV and Markdown summary)",
        description="Simulate clicks on every case of a split, segment with the model and score Dice, NSD (5 mm), "
                    "IoU and HD95 on the original grid. Writes cases.csv, summary.md and summary.json to --out.")
    parser.add_argument("--model", required=True, choices=method_names())
    parser.add_argument("--weights", help="'demo', a volsam checkpoint, or (sam3d-adapter) a released .pth.tar")
    parser.add_argument("--data", required=True, type=Path, help="dataset folder (nnU-Net v2 / MSD layout)")
    parser.add_argument("--label", help="target label value or name (default: the label the weights were trained on)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test", "all"),
                        help="cases to evaluate (default: test; all = every labelled training case)")
    parser.add_argument("--splits", type=Path, help="splits file (default: splits_final.json or splits.json in --data)")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--clicks", default="1", help="click counts: K (1..K), A..B, or a list 1,3,5 (default 1)")
    parser.add_argument("--protocol", default="random", choices=("random", "iterative", "center"),
                        help="random: N random foreground clicks with a fixed seed (3DSAM-adapter's test); iterative: "
                             "each click at the centre of the largest error region; center: each lesion on its own, "
                             "first click at its centre, scored against that lesion (by-size breakdown)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random protocol (default 0)")
    parser.add_argument("--max-cases", type=int, help="evaluate at most this many cases")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--sam-checkpoint", type=Path, help="SAM ViT-B checkpoint, for adapter checkpoints saved "
                                                            "without SAM's frozen tensors")
    parser.add_argument("--sam2-checkpoint", type=Path, help="official SAM2.1 checkpoint (frozen image encoder)")
    parser.add_argument("--preset", help="sam3d-adapter intensity preset (default: the checkpoint's, else ct)")
    parser.add_argument("--adapter-mode", choices=("paper", "interactive"),
                        help="sam3d-adapter session mode (default: paper for the random and center protocols, "
                             "interactive for iterative)")
    parser.add_argument("--axis", default="axial", choices=("axial", "coronal", "sagittal"),
                        help="sam2-3dmed slice direction (default: axial)")
    parser.add_argument("--baseline", dest="baselines", action="append", default=[], choices=("region-growing",),
                        help="also score this classical method from the same clicks and report it next to the model "
                             "(summary.md's side-by-side tables, per size and, on phantoms, per lesion kind); "
                             "repeatable")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=run)


def check_arguments(args) -> None:
    """Paths and numbers checked before the model and the data load."""
    from .checks import check_input_file, check_weights

    if not (args.data / "dataset.json").is_file():
        raise ValueError(f"--data {args.data}: no dataset.json there; expected a dataset folder in the nnU-Net v2 / "
                         "MSD layout (dataset.json, imagesTr, labelsTr)")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file; expected a folder for the results")
    check_weights(args.model, args.weights)
    for option, path in (("--sam-checkpoint", args.sam_checkpoint), ("--sam2-checkpoint", args.sam2_checkpoint),
                         ("--splits", args.splits)):
        if path is not None:
            check_input_file(path, option, "an existing file")
    if args.max_cases is not None and args.max_cases < 1:
        raise ValueError(f"--max-cases must be a whole number >= 1, got {args.max_cases}")
    if args.fold < 0:
        raise ValueError(f"--fold must be a whole number >= 0, got {args.fold}")


def run(args) -> int:
    check_arguments(args)
    from ..evaluation import (
        EvaluationConfig,
        PredictorOptions,
        evaluate,
        parse_click_counts,
    )

    counts = parse_click_counts(args.clicks)
    config = EvaluationConfig(
        predictor=PredictorOptions(model=args.model, weights=args.weights, sam_checkpoint=args.sam_checkpoint,
                                   sam2_checkpoint=args.sam2_checkpoint, device=args.device, preset=args.preset,
                                   adapter_mode=args.adapter_mode, axis=args.axis),
        data=args.data, out=args.out, label=args.label, split=args.split, fold=args.fold, split_file=args.splits,
        click_counts=counts, protocol=args.protocol, seed=args.seed, max_cases=args.max_cases,
        progress=args.progress, baselines=tuple(args.baselines))
    result = evaluate(config)
    for count, stats in result.summary.by_clicks.items():
        dice = stats["dice"]
        print(f"{count} click(s): Dice {dice.mean:.4f} ± {dice.std:.4f} over {dice.count + dice.excluded} "
              f"{'lesions' if args.protocol == 'center' else 'cases'}", file=sys.stderr)
    if result.comparison:
        for count, stats in result.comparison["by_clicks"].items():
            print(f"{count} click(s), side by side: " + ", ".join(f"{m} {s['dice']:.4f}" for m, s in stats.items()),
                  file=sys.stderr)
    print(f"wrote {result.out / 'cases.csv'} and {result.out / 'summary.md'}", file=sys.stderr)
    return 0
