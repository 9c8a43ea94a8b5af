"""Side-by-side tables: a model next to its baselines, per click count, lesion size and lesion kind.

Lesion kinds come from a phantom dataset's ``phantoms.json`` (:func:`volsam.phantoms.lesion_kinds`:
rim or none, hypo- or hyperdense, contrast band): each lesion of the centre protocol (a
connected component of the target) is matched to the phantom lesion whose recorded centre voxel
it holds. Other datasets carry no kinds; their tables stop at size.

"Oversized" counts predictions larger than twice their reference (a propagation that swept
into the organ, a region growing that leaked).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..clicks import SIZE_GROUPS
from .protocols import ScoredPrediction

KIND_AXES = ("rim", "density", "contrast")
OVERSIZED_RATIO = 2.0


def phantom_lesions(dataset_root: Path) -> dict | None:
    """{case id: [lesion info dicts]} from the dataset's phantoms.json, or None."""
    from ..phantoms import PHANTOMS_JSON

    path = Path(dataset_root) / PHANTOMS_JSON
    if not path.is_file():
        return None
    cases = json.loads(path.read_text())["cases"]
    return {case_id: case["lesions"] for case_id, case in cases.items()}


def lesion_kinds_of_case(lesions: list[dict], truth: np.ndarray, spacing_ijk) -> dict[int, dict[str, str]]:
    """{lesion number as the centre protocol numbers it: kind} for one case."""
    from ..clicks import lesions_of
    from ..phantoms import lesion_kinds

    labels, _ = lesions_of(truth, spacing_ijk)
    kinds = {}
    for lesion in lesions:
        i, j, k = lesion["center_ijk"]
        number = int(labels[k, j, i])
        if number:
            kinds[number] = lesion_kinds(lesion)
    return kinds


def _oversized(rows: Sequence[ScoredPrediction]) -> int:
    return sum(1 for r in rows if math.isfinite(r.volume_ratio) and r.volume_ratio > OVERSIZED_RATIO)


def comparison(rows_by_method: dict[str, Sequence[ScoredPrediction]], kinds: dict | None) -> dict:
    """Mean Dice per method: per click count, and for the first and last click count per size
    group and per kind; plus the count of oversized predictions."""
    methods = list(rows_by_method)
    counts = sorted({r.clicks for rows in rows_by_method.values() for r in rows})
    result = {"methods": methods, "by_clicks": {}, "by_size": {}, "by_kind": {}, "oversized": {}}
    for count in counts:
        chosen = {m: [r for r in rows if r.clicks == count] for m, rows in rows_by_method.items()}
        result["by_clicks"][count] = {m: _stats(rows) for m, rows in chosen.items()}
        result["oversized"][count] = {m: _oversized(rows) for m, rows in chosen.items()}
        if count not in (counts[0], counts[-1]):
            continue
        result["by_size"][count] = {
            name: {m: _stats([r for r in rows if r.size_group == name]) for m, rows in chosen.items()}
            for name, _, _ in SIZE_GROUPS}
        if kinds:
            by_kind = {}
            for axis in KIND_AXES:
                values = sorted({kind[axis] for kind in kinds.values()})
                for value in values:
                    by_kind[f"{axis}: {value}"] = {m: _stats([r for r in rows if kinds.get((r.case_id, r.lesion), {})
                                                             .get(axis) == value]) for m, rows in chosen.items()}
            result["by_kind"][count] = by_kind
    return result


def _stats(rows: Sequence[ScoredPrediction]) -> dict:
    return {"n": len(rows), "dice": float(np.mean([r.dice for r in rows])) if rows else float("nan")}


def comparison_markdown(table: dict) -> str:
    methods = table["methods"]
    header = "| " + " | ".join(methods) + " |"
    rule = "|" + "---:|" * len(methods)
    lines = ["", "## Side by side (mean Dice)", "", "| clicks | n | " + header[2:] + " oversized (> 2x) |",
             "|---:|---:|" + rule[1:] + "---|"]
    for count, stats in table["by_clicks"].items():
        n = next(iter(stats.values()))["n"]
        oversized = ", ".join(f"{m} {table['oversized'][count][m]}" for m in methods)
        lines.append(f"| {count} | {n} | " + " | ".join(_cell(stats[m]) for m in methods) + f" | {oversized} |")
    for section, title in (("by_size", "size"), ("by_kind", "kind")):
        for count, groups in table[section].items():
            lines += ["", f"By lesion {title}, {count} click(s):", "", f"| {title} | n | " + header[2:],
                      "|---|---:|" + rule[1:]]
            for name, stats in groups.items():
                n = next(iter(stats.values()))["n"]
                if n:
                    lines.append(f"| {name} | {n} | " + " | ".join(_cell(stats[m]) for m in methods) + " |")
    return "\n".join(lines) + "\n"


def _cell(stats: dict) -> str:
    return "-" if not stats["n"] else f"{stats['dice']:.3f}"
