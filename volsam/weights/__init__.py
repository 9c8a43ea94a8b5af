"""Checkpoint files: safe loading (:mod:`.loading`), kind detection (:mod:`.kinds`), the report
that ``volsam weights inspect`` prints (:mod:`.report`; :mod:`volsam.checkpoint_info` fills it) and
the download catalog (:mod:`.download`).

Importing this package does not import torch; loading a file does.
"""

from .kinds import classify, describe_kind
from .loading import CheckpointError, LoadedCheckpoint, load_checkpoint
from .report import CheckpointReport

__all__ = ["CheckpointError", "CheckpointReport", "LoadedCheckpoint", "classify", "describe_kind", "load_checkpoint"]
