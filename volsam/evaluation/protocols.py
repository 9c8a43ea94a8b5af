"""Evaluation protocols: where the clicks go and what a prediction is scored against.

* ``random`` (3DSAM-adapter's test protocol): K foreground voxels of the case's target label
  drawn uniformly with replacement from a generator seeded by (seed, case number); the
  prediction from the first k of them, given at once, is scored against the whole target, for
  every k asked for.
* ``iterative``: the first click goes to the centre of the largest missed region (so, of the
  largest lesion), each next one to the centre of the largest error region of the current
  prediction, positive in a miss and negative in a false positive; clicks accumulate in one
  interactive session; scored against the whole target after every click.
* ``center``: each lesion (connected component of the target) separately: the first click at its
  centre, later ones iterative as above, scored against that lesion alone; rows carry the
  lesion's volume-equivalent diameter for the by-size breakdown.

"Centre" is always the voxel farthest from the region's boundary (a distance transform in mm).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..clicks import (
    SimulatedClick,
    equivalent_diameter_mm,
    lesions_of,
    next_iterative_click,
    random_foreground_points,
    size_group,
)
from ..metrics import compute_metrics

PROTOCOLS = ("random", "iterative", "center")


@dataclass(frozen=True)
class ScoredPrediction:
    """One row of the per-case table."""

    case_id: str
    lesion: int  # 0: the whole target (random, iterative); n: lesion n (center)
    diameter_mm: float  # the scored reference's volume-equivalent diameter
    clicks: int
    dice: float
    iou: float
    nsd: float
    hd95: float
    click_kji: tuple[int, int, int]  # the last click
    click_positive: bool
    seconds: float  # model time for this prediction
    volume_ratio: float = float("nan")  # predicted voxels / reference voxels

    @property
    def size_group(self) -> str:
        return size_group(self.diameter_mm)


def parse_click_counts(text: str) -> tuple[int, ...]:
    """"5" -> 1..5, "1..5" -> 1..5, "1,3,5" -> (1, 3, 5)."""
    text = str(text).strip()
    try:
        if ".." in text:
            low, high = (int(v) for v in text.split(".."))
            counts = tuple(range(low, high + 1))
        elif "," in text:
            counts = tuple(sorted({int(v) for v in text.split(",")}))
        else:
            counts = tuple(range(1, int(text) + 1))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise ValueError(f"--clicks must be K, A..B or a comma-separated list of counts >= 1, got {text!r}")
    return counts


def _diameter(mask: np.ndarray, spacing_ijk) -> float:
    return equivalent_diameter_mm(np.count_nonzero(mask), spacing_ijk)


def evaluate_case(predictor, case_id: str, volume, truth: np.ndarray, protocol: str,
                  click_counts: tuple[int, ...], seed: int = 0, case_number: int = 0,
                  tolerance_mm: float = 5.0) -> Iterator[ScoredPrediction]:
    """Rows for one case. ``truth`` is the binary target on the volume's grid."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    truth = np.asarray(truth) > 0
    spacing = volume.spacing
    if not truth.any():
        return  # nothing to click on: the case is reported as skipped by the caller
    if protocol == "random":
        points = random_foreground_points(truth, max(click_counts), np.random.default_rng([seed, case_number]))
        diameter = _diameter(truth, spacing)
        for count in click_counts:
            clicks = [SimulatedClick(tuple(int(v) for v in p), True) for p in points[:count]]
            predictor.open(volume)
            started = time.perf_counter()
            prediction = predictor.add_clicks(clicks)
            seconds = time.perf_counter() - started
            yield _score(case_id, 0, diameter, count, prediction, truth, spacing, clicks[-1], seconds, tolerance_mm)
    elif protocol == "iterative":
        yield from _iterative(predictor, case_id, 0, volume, truth, click_counts, tolerance_mm)
    else:
        labels, lesions = lesions_of(truth, spacing)
        for lesion in lesions:
            reference = labels == lesion.number
            yield from _iterative(predictor, case_id, lesion.number, volume, reference, click_counts, tolerance_mm,
                                  diameter=lesion.diameter_mm)


def _iterative(predictor, case_id, lesion_number, volume, reference, click_counts, tolerance_mm,
               diameter: float | None = None) -> Iterator[ScoredPrediction]:
    spacing = volume.spacing
    diameter = _diameter(reference, spacing) if diameter is None else diameter
    predictor.open(volume)
    prediction = np.zeros(reference.shape, dtype=bool)
    last_click, seconds = None, 0.0
    for count in range(1, max(click_counts) + 1):
        click = next_iterative_click(prediction, reference, spacing)
        if click is not None:  # a perfect prediction needs no further click: it stays
            started = time.perf_counter()
            prediction = np.asarray(predictor.add_clicks([click])) > 0
            seconds = time.perf_counter() - started
            last_click = click
        if count in click_counts:
            yield _score(case_id, lesion_number, diameter, count, prediction, reference, spacing, last_click,
                         seconds, tolerance_mm)


def _score(case_id, lesion_number, diameter, count, prediction, reference, spacing, click, seconds,
           tolerance_mm) -> ScoredPrediction:
    prediction = np.asarray(prediction) > 0
    metrics = compute_metrics(prediction, reference, spacing, tolerance_mm)
    ratio = np.count_nonzero(prediction) / max(np.count_nonzero(reference), 1)
    return ScoredPrediction(case_id, lesion_number, round(float(diameter), 3), count, metrics["dice"], metrics["iou"],
                            metrics["nsd"], metrics["hd95"], tuple(int(v) for v in click.kji), bool(click.positive),
                            round(seconds, 4), round(float(ratio), 4))
