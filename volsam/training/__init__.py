"""Fine-tuning and training both models on labelled datasets (``volsam train``).

:func:`train` runs one :class:`TrainingConfig`; :mod:`.loop` documents the run folder,
:mod:`.adapter_task` and :mod:`.sam2_task` each model's recipe, :mod:`.samples` the crops and
clips, :mod:`.cache` the preprocessed-volume cache, :mod:`.export` the official 3DSAM-adapter
layout.
"""

from .config import MODELS, TrainingConfig
from .loop import TrainingResult, train

__all__ = ["MODELS", "TrainingConfig", "TrainingResult", "train"]
