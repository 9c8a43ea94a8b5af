"""What is in a checkpoint file: its kind, tensor and parameter counts, the trainable part.

:func:`describe_checkpoint` loads the file once (safely, :func:`~volsam.weights.loading.load_checkpoint`)
and asks each method of the registry (:mod:`volsam.methods`) for its detectors in turn; the
first that recognises the content returns the report. A detector is a function
``detect(loaded: LoadedCheckpoint) -> CheckpointReport | None``; methods import theirs only when
a file is described, so the CLI's ``--help`` stays torch-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .kinds import classify, describe_kind
from .loading import CheckpointError, LoadedCheckpoint, load_checkpoint

@dataclass
class CheckpointReport:
    """A checkpoint described.

    ``usable`` is False for a damaged file, for a recognised kind that no volsam model accepts
    (SAM ViT-L/H) and for a known layout that fails strict checking (``problems`` says why).
    Counts are in tensor elements; ``buffers`` lists the names of non-parameter tensors, which
    ``parameter_count`` leaves out. ``trainable_count`` follows the method's freezing rule
    (``trainable_rule`` names it).
    """

    path: str
    kind: str
    usable: bool
    summary: str
    tensor_count: int = 0
    parameter_count: int = 0
    buffer_count: int = 0
    buffers: list[str] = field(default_factory=list)
    trainable_count: int | None = None
    trainable_rule: str = ""
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable report, one fact per line."""
        out = [f"file: {self.path}", f"kind: {self.kind}", f"usable: {'yes' if self.usable else 'no'}",
               f"summary: {self.summary}"]
        if self.tensor_count:
            out += [f"tensors: {self.tensor_count:,}", f"parameters: {self.parameter_count:,}",
                    f"buffers: {self.buffer_count:,} elements in {len(self.buffers)} tensors"]
            out += [f"  buffer {name}" for name in _compact(self.buffers)]
        if self.trainable_count is not None:
            out.append(f"trainable: {self.trainable_count:,} ({self.trainable_rule})")
        out += [f"note: {note}" for note in self.notes]
        out += [f"problem: {problem}" for problem in self.problems]
        return out


def _compact(names: list[str], limit: int = 12) -> list[str]:
    return names if len(names) <= limit else names[:limit] + [f"... and {len(names) - limit} more"]


def describe_loaded(loaded: LoadedCheckpoint) -> CheckpointReport:
    from ..methods import METHODS

    kind = classify(loaded.content, loaded.metadata, loaded.sidecar)
    detectors = [detector for method in METHODS.values() for detector in method.checkpoint_detectors()]
    for detector in detectors:
        try:
            report = detector(loaded)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError, RuntimeError) as error:
            # A file that trips a detector is reported, not raised: inspect must describe bad files.
            return CheckpointReport(str(loaded.path), kind, False, f"{describe_kind(kind)} that could not be read",
                                    problems=[f"{detector.__module__}.{detector.__name__}: {error}"])
        if report is not None:
            return report
    summary = f"{describe_kind(kind)}, not handled by any volsam model" if kind != "unknown" else (
        "not a checkpoint layout volsam knows (SAM ViT-B, 3DSAM-adapter release, volsam 3DSAM-adapter, SAM 2.1)")
    return CheckpointReport(str(loaded.path), kind, False, summary)


def describe_checkpoint(path: str | os.PathLike) -> CheckpointReport:
    """Describe a checkpoint file; damaged or unsafe files give kind "damaged" (never raise
    for a bad file, only report)."""
    if not Path(path).is_file():
        return CheckpointReport(str(path), "missing", False, f"no such checkpoint file: {path}")
    try:
        loaded = load_checkpoint(Path(path))
    except CheckpointError as error:
        return CheckpointReport(str(path), "damaged", False, str(error))
    return describe_loaded(loaded)
