"""Evaluation of either model on a labelled dataset (``volsam evaluate``).

:func:`evaluate` runs one :class:`EvaluationConfig`: for every case of the split, clicks by the
chosen protocol (:mod:`.protocols`), predictions through the model's session
(:mod:`.predictors`), Dice / IoU / NSD at 5 mm / HD95 on the case's original grid
(:func:`volsam.metrics.compute_metrics`), then ``cases.csv`` and ``summary.md`` /
``summary.json`` (:mod:`.report`). ``baselines`` (:mod:`.baselines`, e.g. region growing) run
through the same protocol on the same cases; :mod:`.comparison` puts them next to the model, per
click count, lesion size and, on phantoms, lesion kind (``comparison.json`` and summary.md).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..clicks import SIZE_GROUPS
from .predictors import PredictorOptions, load_predictor
from .protocols import (
    PROTOCOLS,
    ScoredPrediction,
    evaluate_case,
    parse_click_counts,
)
from .report import Summary, markdown, summarise, write_rows_csv, write_summary

__all__ = ["PROTOCOLS", "SIZE_GROUPS", "EvaluationConfig", "EvaluationResult", "PredictorOptions",
           "ScoredPrediction", "Summary", "evaluate", "evaluate_with", "markdown", "parse_click_counts"]


@dataclass(frozen=True)
class EvaluationConfig:
    predictor: PredictorOptions
    data: Path
    out: Path
    label: str | None = None  # default: the label the checkpoint was trained on
    split: str = "test"
    fold: int = 0
    split_file: Path | None = None
    click_counts: tuple[int, ...] = (1,)
    protocol: str = "random"
    seed: int = 0
    tolerance_mm: float = 5.0
    max_cases: int | None = None
    progress: bool = True
    baselines: tuple[str, ...] = ()  # scored from the same protocol next to the model (.baselines)


@dataclass(frozen=True)
class EvaluationResult:
    rows: list
    summary: Summary
    out: Path
    skipped: list = field(default_factory=list)
    baseline_rows: dict = field(default_factory=dict)  # baseline name -> rows
    comparison: dict | None = None  # the side-by-side table (.comparison)


def _checked(config: EvaluationConfig):
    """Dataset, cases and label value, every problem a ValueError before any model runs."""
    from ..datasets import check_cases, load_dataset
    from .predictors import checkpoint_provenance

    if config.protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {config.protocol!r}")
    dataset = load_dataset(config.data, config.split_file)
    label = config.label
    if label is None:
        label = checkpoint_provenance(config.predictor).get("label")
        if label is None:
            raise ValueError("give --label (the target label value or name); the weights do not record one")
    value = dataset.label_value(label)
    cases = list(dataset.cases(config.split, config.fold))
    if config.max_cases is not None:
        cases = cases[:config.max_cases]
    check_cases(cases, f"{config.split} split")
    return dataset, cases, value


def evaluate(config: EvaluationConfig) -> EvaluationResult:
    """Evaluate ``config.predictor`` on the dataset; writes the CSV and summaries to ``config.out``."""
    dataset, cases, value = _checked(config)
    predictor = load_predictor(config.predictor, config.protocol)
    return evaluate_with(predictor, config, dataset, cases, value)


def evaluate_with(predictor, config: EvaluationConfig, dataset=None, cases=None, value=None) -> EvaluationResult:
    """Evaluate with a ready predictor (anything with ``open(volume)`` and ``add_clicks(clicks)``)."""
    import numpy as np
    from tqdm import tqdm

    from ..io import read_image
    from .baselines import load_baseline
    from .comparison import comparison, comparison_markdown, lesion_kinds_of_case, phantom_lesions

    if dataset is None:
        dataset, cases, value = _checked(config)
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; expected a folder")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[ScoredPrediction] = []
    skipped = []
    baselines = {name: load_baseline(name) for name in config.baselines}
    baseline_rows = {name: [] for name in baselines}
    phantoms = phantom_lesions(dataset.root) if config.protocol == "center" else None
    kinds = {}
    for number, case in enumerate(tqdm(cases, desc=f"evaluating ({config.protocol})", unit="case",
                                       disable=not config.progress, file=sys.stderr)):
        image, label = read_image(case.image), read_image(case.label)
        if not image.same_geometry(label, tolerance_mm=1e-3):
            raise ValueError(f"case {case.case_id}: image and label have different geometry")
        truth = np.asarray(label.array) == value
        if not truth.any():
            skipped.append(case.case_id)
            continue
        for method, into in ((predictor, rows), *((b, baseline_rows[n]) for n, b in baselines.items())):
            into.extend(evaluate_case(method, case.case_id, image, truth, config.protocol, config.click_counts,
                                      seed=config.seed, case_number=number, tolerance_mm=config.tolerance_mm))
        if phantoms is not None and case.case_id in phantoms:
            kinds.update({(case.case_id, n): kind for n, kind in
                          lesion_kinds_of_case(phantoms[case.case_id], truth, image.spacing).items()})
    write_rows_csv(rows, out / "cases.csv")
    for name, chosen in baseline_rows.items():
        write_rows_csv(chosen, out / f"cases_{name}.csv")
    name = config.predictor.model
    details = {
        "model": name + "".join(f", {what} {value}" for what, value in (
            ("weights", config.predictor.weights), ("SAM2.1 checkpoint", config.predictor.sam2_checkpoint)) if value),
        "data": f"{dataset.root} ({dataset.name}), split {config.split}" + (
            f", fold {config.fold}" if dataset.folds is not None else ""),
        "target": f"label {value} ({dataset.label_name(value)})",
        "protocol": _describe_protocol(config),
        "cases": f"{len(cases) - len(skipped)} evaluated" + (f", {len(skipped)} without target" if skipped else ""),
    }
    if config.protocol == "center":
        details["lesions"] = str(len({(r.case_id, r.lesion) for r in rows}))
    summary = summarise(rows, f"Evaluation of {name}", details, by_size=config.protocol == "center",
                        skipped=skipped)
    table = None
    if baselines or kinds:
        table = comparison({name: rows, **baseline_rows}, kinds)
        summary.appendix = comparison_markdown(table)
        (out / "comparison.json").write_text(json.dumps(table, indent=2, allow_nan=True) + "\n")
    write_summary(summary, out)
    return EvaluationResult(rows, summary, out, skipped, baseline_rows, table)


def _describe_protocol(config: EvaluationConfig) -> str:
    counts = ", ".join(map(str, config.click_counts))
    if config.protocol == "random":
        return f"random foreground clicks, seed {config.seed} (3DSAM-adapter test); clicks {counts}"
    if config.protocol == "iterative":
        return f"iterative clicks at the centre of the largest error region; clicks {counts}"
    return (f"per lesion: first click at the lesion's centre, then iterative; scored against that lesion alone; "
            f"clicks {counts}")
