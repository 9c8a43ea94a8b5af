"""What every session shares: a caller-owned target buffer with its multi-level history, and
undo, redo and reset, each of which restores the prompts together with the mask."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..geometry import Box, Volume
from .history import MaskHistory, UndoResult


def check_target_buffer(buffer, volume: Volume) -> None:
    """A target buffer is a uint8 array of the volume's (k, j, i) shape."""
    if not isinstance(buffer, np.ndarray) or buffer.dtype != np.uint8 or buffer.shape != volume.shape_kji:
        raise ValueError(f"the target buffer must be a uint8 array of the volume's (k, j, i) shape "
                         f"{volume.shape_kji}, got {getattr(buffer, 'dtype', type(buffer).__name__)} "
                         f"{getattr(buffer, 'shape', '')}")


class UndoableSession(ABC):
    """Base of the sessions. A subclass keeps its prompts in one immutable object,
    ``_prompts``, which every history step records, says what no prompts are
    (:meth:`_no_prompts`), and gives its history once a volume is open (:meth:`_require_history`,
    which :class:`~volsam.sessions.protocol.Session` implements)."""

    _history: MaskHistory | None = None
    _prompts: object = None

    @abstractmethod
    def _no_prompts(self):
        """The prompts of a session that has none."""

    @abstractmethod
    def _require_history(self) -> MaskHistory:
        """The history, or a clear error when no volume is open."""

    def undo(self) -> Box | None:
        """Undo the last step (a prompt, a propagation or a reset); returns the changed box, or None."""
        return self._restore(self._require_history().undo_with_state())

    def redo(self) -> Box | None:
        return self._restore(self._require_history().redo_with_state())

    def _restore(self, step: UndoResult | None) -> Box | None:
        if step is None:
            return None
        self._prompts = step.state
        return step.box

    @property
    def can_undo(self) -> bool:
        return self._history is not None and self._history.can_undo

    @property
    def can_redo(self) -> bool:
        return self._history is not None and self._history.can_redo

    def reset(self) -> Box | None:
        """Forget all prompts and clear the buffer (an undoable step); returns the box cleared."""
        history = self._require_history()
        history.begin("reset", self._prompts)
        box = Box.from_mask(history.buffer)
        if box is not None:
            history.commit(np.zeros(box.shape, np.uint8), box)
        self._prompts = self._no_prompts()
        return history.end(self._prompts)
