"""What the training loop needs from a model: the shared interface of both training tasks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class OptimizerGroup:
    """Parameters stepped by one optimizer, at ``learning_rate`` times the schedule's factor."""

    name: str
    parameters: list
    learning_rate: float
    weight_decay: float = 0.0


@dataclass(frozen=True)
class ValidationResult:
    loss: float  # mean validation loss; the lowest gives the best checkpoint
    dice: float  # mean hard Dice of the validation predictions


class TrainingTask(ABC):
    """One model's training: samples, the forward pass that gives the loss, optimizers,
    validation and checkpoints. The loop (:mod:`.loop`) owns everything else."""

    #: the model as saved (not wrapped)
    model = None
    #: the module whose forward returns the loss (wrapped by DistributedDataParallel)
    training_module = None
    #: optimizer steps share one learning-rate schedule per task: "epoch_linear" or "step_cosine"
    schedule = "epoch_linear"
    #: what one validation sample is called in the progress bar
    validation_unit = "case"
    validation_cases: list  # set by each task: the cases validated on
    _validation: list[dict] | None = None

    @abstractmethod
    def optimizer_groups(self) -> list[OptimizerGroup]:
        """One AdamW optimizer per group."""

    @abstractmethod
    def clip_groups(self) -> list[list]:
        """Parameter lists whose gradient norm is clipped to 1.0 separately."""

    @abstractmethod
    def training_sample(self, case_index: int, rng: np.random.Generator) -> dict:
        """A training sample of case ``case_index`` (numpy arrays; runs in loader workers)."""

    @property
    @abstractmethod
    def training_items(self) -> int:
        """How many items one epoch draws a sample from (one per training case)."""

    @abstractmethod
    def loss(self, module, sample: dict, device) -> tuple:
        """(total loss tensor, {name: float}) for one sample, through ``module``'s forward."""

    @abstractmethod
    def validation_sample(self, index: int, case) -> dict:
        """The fixed validation sample of validation case number ``index``."""

    @abstractmethod
    def validation_scores(self, sample: dict, device) -> tuple[float, float]:
        """(loss, hard Dice) of one validation sample; called without gradients, in eval mode."""

    def validation_samples(self) -> list[dict]:
        """The validation samples, drawn once (the same every epoch)."""
        if self._validation is None:
            self._validation = [self.validation_sample(index, case) for index, case in enumerate(self.validation_cases)]
        return self._validation

    def validate(self, device, progress: bool) -> ValidationResult:
        """Validation on the fixed validation samples, without gradients."""
        import torch
        from tqdm import tqdm

        losses, dices = [], []
        self.model.eval()
        with torch.no_grad():
            for sample in tqdm(self.validation_samples(), desc="validation", unit=self.validation_unit, leave=False,
                               disable=not progress):
                loss, dice = self.validation_scores(sample, device)
                losses.append(loss)
                dices.append(dice)
        self.model.train()
        return ValidationResult(float(np.mean(losses)), float(np.mean(dices)))

    @abstractmethod
    def save(self, path: Path, provenance: dict) -> Path:
        """Write the model in this project's checkpoint format."""

    @abstractmethod
    def load_weights(self, path: Path) -> None:
        """Load the model's weights from a checkpoint written by :meth:`save` (for resume)."""

    def enable_activation_checkpointing(self) -> None:
        """Recompute activations in backward for the memory-heavy blocks."""

    def after_training(self, out: Path) -> None:
        """Anything a task writes once training is over (e.g. an export)."""


def checkpoint_forward(modules) -> None:
    """Make each module recompute its activations in backward (activation checkpointing).

    The wrapper replaces the instance's ``forward`` (not the module), so state-dict keys stay
    those of the model's own files.
    """
    from torch.utils.checkpoint import checkpoint

    for module in modules:
        original = module.forward

        def forward(*args, _original=original, **kwargs):
            return checkpoint(_original, *args, use_reentrant=False, **kwargs)

        module.forward = forward
