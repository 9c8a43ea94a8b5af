"""Per-case CSV and the Markdown summary, laid out like the papers' tables.

Dice, NSD and IoU are given in percent (mean +- standard deviation over the rows), HD95 in mm.
An empty prediction has an infinite HD95; it is left out of the HD95 mean and counted in a
note, so one miss does not turn the whole column into "inf".
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..clicks import SIZE_GROUPS
from .protocols import ScoredPrediction

CSV_COLUMNS = ("case", "lesion", "diameter_mm", "size_group", "clicks", "dice", "iou", "nsd", "hd95",
               "click_k", "click_j", "click_i", "click_positive", "seconds", "volume_ratio")
METRICS = ("dice", "nsd", "iou", "hd95")


def write_rows_csv(rows: Sequence[ScoredPrediction], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow([row.case_id, row.lesion, f"{row.diameter_mm:.3f}", row.size_group, row.clicks,
                             f"{row.dice:.6f}", f"{row.iou:.6f}", f"{row.nsd:.6f}",
                             "inf" if math.isinf(row.hd95) else f"{row.hd95:.4f}",
                             *row.click_kji, int(row.click_positive), f"{row.seconds:.4f}", f"{row.volume_ratio:.4f}"])


@dataclass(frozen=True)
class Statistic:
    mean: float
    std: float
    count: int
    excluded: int = 0  # infinite values left out (HD95 of empty predictions)


def statistic(values: Iterable[float]) -> Statistic:
    values = np.asarray(list(values), dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Statistic(float("nan"), float("nan"), 0, int(values.size))
    return Statistic(float(finite.mean()), float(finite.std()), int(finite.size), int(values.size - finite.size))


@dataclass
class Summary:
    """Statistics per click count (and per size group), plus what was evaluated."""

    title: str
    details: dict = field(default_factory=dict)
    by_clicks: dict = field(default_factory=dict)  # clicks -> metric -> Statistic
    by_size: dict = field(default_factory=dict)  # clicks -> group -> metric -> Statistic
    skipped: list = field(default_factory=list)
    appendix: str = ""  # Markdown appended to summary.md (the side-by-side tables)

    def to_dict(self) -> dict:
        def plain(node):
            if isinstance(node, Statistic):
                return asdict(node)
            if isinstance(node, dict):
                return {str(k): plain(v) for k, v in node.items()}
            return node
        return {"title": self.title, "details": self.details, "by_clicks": plain(self.by_clicks),
                "by_size": plain(self.by_size), "skipped": self.skipped}


def summarise(rows: Sequence[ScoredPrediction], title: str, details: dict, by_size: bool,
              skipped: Sequence[str] = ()) -> Summary:
    summary = Summary(title, dict(details), skipped=list(skipped))
    for count in sorted({row.clicks for row in rows}):
        chosen = [row for row in rows if row.clicks == count]
        summary.by_clicks[count] = {m: statistic(getattr(r, m) for r in chosen) for m in METRICS}
        if by_size:
            groups = {}
            for name, _, _ in SIZE_GROUPS:
                members = [r for r in chosen if r.size_group == name]
                if members:
                    groups[name] = {m: statistic(getattr(r, m) for r in members) for m in METRICS}
            summary.by_size[count] = groups
    return summary


def _cell(stat: Statistic, metric: str) -> str:
    if stat.count == 0:
        return f"n/a ({stat.excluded} inf)" if stat.excluded else "n/a"
    if metric == "hd95":
        text = f"{stat.mean:.2f} ± {stat.std:.2f}"
        return text + (f" ({stat.excluded} inf)" if stat.excluded else "")
    return f"{100 * stat.mean:.2f} ± {100 * stat.std:.2f}"


def _rows_count(stats: dict) -> int:
    return stats["dice"].count + stats["dice"].excluded


def markdown(summary: Summary) -> str:
    lines = [f"# {summary.title}", ""]
    for key, value in summary.details.items():
        lines.append(f"- {key}: {value}")
    lines += ["", "Mean ± standard deviation; Dice, NSD (5 mm tolerance) and IoU in %, HD95 in mm.", "",
              "| clicks | n | Dice (%) | NSD (%) | IoU (%) | HD95 (mm) |", "|---:|---:|---:|---:|---:|---:|"]
    for count, stats in summary.by_clicks.items():
        lines.append(f"| {count} | {_rows_count(stats)} | " + " | ".join(_cell(stats[m], m) for m in METRICS) + " |")
    if summary.by_size:
        lines += ["", "## By lesion size (volume-equivalent diameter)", "",
                  "| clicks | size | n | Dice (%) | NSD (%) | IoU (%) | HD95 (mm) |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for count, groups in summary.by_size.items():
            for name, stats in groups.items():
                lines.append(f"| {count} | {name} | {_rows_count(stats)} | "
                             + " | ".join(_cell(stats[m], m) for m in METRICS) + " |")
    infinite = sum(stats["hd95"].excluded for stats in summary.by_clicks.values())
    if infinite:
        lines += ["", f"HD95 is infinite for {infinite} empty prediction(s); they are left out of its mean."]
    if summary.skipped:
        lines += ["", f"Skipped (no target voxels): {', '.join(summary.skipped)}."]
    return "\n".join(lines) + "\n" + summary.appendix


def write_summary(summary: Summary, out_dir: Path) -> None:
    (out_dir / "summary.md").write_text(markdown(summary))
    (out_dir / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2, allow_nan=True) + "\n")
