"""What is in a checkpoint file: its kind, tensor and parameter counts, the trainable part.

:func:`describe_checkpoint` loads the file once (safely, :func:`~volsam.weights.loading.load_checkpoint`)
and asks each method of the registry (:mod:`volsam.methods`) for its detectors in turn; the
first that recognises the content returns the report. A detector is a function
``detect(loaded: LoadedCheckpoint) -> CheckpointReport | None``; methods import theirs only when
a file is described, so the CLI's ``--help`` stays torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path

from .weights.kinds import classify, describe_kind
from .weights.loading import CheckpointError, LoadedCheckpoint, load_checkpoint
from .weights.report import CheckpointReport


def describe_loaded(loaded: LoadedCheckpoint) -> CheckpointReport:
    from .methods import METHODS

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
