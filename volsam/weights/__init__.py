"""Checkpoint files: safe loading (:mod:`.loading`), kind detection and reports (:mod:`.inspect`).

Importing this package does not import torch; loading a file does.
"""

from .inspect import CheckpointReport, describe_checkpoint
from .kinds import classify, describe_kind
from .loading import CheckpointError, LoadedCheckpoint, load_checkpoint

__all__ = ["CheckpointError", "CheckpointReport", "LoadedCheckpoint", "classify", "describe_checkpoint",
           "describe_kind", "load_checkpoint"]
