"""The one session protocol: what the CLI, the Slicer modules, the browser app and a remote
client call, method for method, whichever model is behind it.

A session is one object per open volume (as nnInteractive's): it is opened on a
:class:`~volsam.geometry.Volume`, writes its result into a caller-owned uint8 (k, j, i)
buffer, only inside the box that changed, and returns that box from every call that changes
it. Prompts are given in world RAS millimetres (as Slicer shows them), or in LPS mm or voxel
indices with ``space="lps"|"ijk"``; the session converts each click to voxel coordinates once,
through :func:`volsam.prompts.point_prompt`.

Every prompt, every :meth:`Session.run` and every :meth:`Session.reset` is one undo step,
whether or not a voxel changed, so a caller's own undo stack (the MRML layer's) maps onto the
session's one to one. Undo and redo restore the prompts together with the mask.

A method that cannot take a kind of prompt raises :class:`UnsupportedPrompt` with a sentence
saying what it takes instead; :attr:`Session.capabilities` says in advance.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..geometry import Box, Volume
from .base import UndoableSession
from .history import MaskHistory

#: ``progress(done, total)`` after each unit of work (a slice of a propagation).
ProgressCallback = Callable[[int, int], None]

#: What a session may accept: point clicks, a box on one slice, a mask drawn on one slice, and
#: whether :meth:`Session.run` does volume work (a propagation) after the prompts.
CAPABILITIES = frozenset({"points", "box", "mask", "propagate"})


class UnsupportedPrompt(ValueError):
    """The method cannot take this kind of prompt (the message says which kinds it takes)."""


@dataclass(frozen=True)
class RunOutcome:
    """What :meth:`Session.run` did. ``completed`` is False when it was cancelled: the
    ``units_done`` units (slices) written so far stay, as one undo step."""

    completed: bool
    units_done: int
    units_total: int
    changed: Box | None

    @property
    def status(self) -> str:
        return "completed" if self.completed else "cancelled"


class Session(UndoableSession):
    """The protocol every method's session implements (see the module docstring).

    Subclasses set :attr:`method` (the registry name) and :attr:`capabilities`.
    """

    method: str = ""
    capabilities: frozenset[str] = frozenset()
    _volume: Volume | None = None

    # --- the volume and the buffer ------------------------------------------------------------
    @abstractmethod
    def open_volume(self, volume: Volume, target_buffer: np.ndarray | None = None) -> None:
        """Open ``volume`` (intensities in (k, j, i), held by reference); results go into
        ``target_buffer`` (a zero buffer is made when None). Forgets the prompts and history of
        a volume opened before. May be slow (image embedding)."""

    @abstractmethod
    def set_target_buffer(self, buffer: np.ndarray) -> None:
        """Write results into ``buffer`` (caller-owned uint8, the volume's (k, j, i) shape) from
        now on; prompts and history start over."""

    @property
    def volume(self) -> Volume | None:
        """The open volume, or None."""
        return self._volume

    @property
    def result(self) -> np.ndarray:
        """The current mask: the target buffer."""
        return self._require_history().buffer

    def _require_volume(self) -> Volume:
        if self._volume is None:
            raise ValueError("no volume is open: call open_volume(volume) first")
        return self._volume

    def _require_history(self) -> MaskHistory:
        self._require_volume()  # open_volume always sets a buffer and its history
        return self._history

    # --- prompts --------------------------------------------------------------------------------
    @abstractmethod
    def add_points(self, positives: Sequence = (), negatives: Sequence = (), *, space: str = "ras",
                   view_normal=None) -> Box | None:
        """Clicks (each 3 coordinates in ``space``), positives then negatives, as one step;
        ``view_normal``: the RAS normal of the view they were placed in (a method that slices
        the volume may follow it). Returns the changed box, or None."""

    def add_point(self, coordinates, positive: bool = True, *, space: str = "ras", view_normal=None) -> Box | None:
        """One click."""
        points = [coordinates]
        return self.add_points(points if positive else [], [] if positive else points, space=space,
                               view_normal=view_normal)

    def add_box(self, corner_a, corner_b, *, space: str = "ras", view_normal=None) -> Box | None:
        """A box on one slice, by two opposite corners."""
        raise UnsupportedPrompt(f"{self.method} takes {self._takes()}, not a box")

    def add_mask(self, mask: np.ndarray, slice_index: int, *, view_normal=None) -> Box | None:
        """A mask drawn on slice ``slice_index`` of the session's slicing axis."""
        raise UnsupportedPrompt(f"{self.method} takes {self._takes()}, not a slice mask")

    def _takes(self) -> str:
        kinds = [name for name in ("points", "box", "mask") if name in self.capabilities]
        return " and ".join(kinds) if kinds else "no prompts"

    # --- volume work ----------------------------------------------------------------------------
    def run(self, progress: ProgressCallback | None = None) -> RunOutcome:
        """The method's work after the prompts (a propagation); a method whose prompts give
        the whole result at once has nothing to do. Never raises on cancellation."""
        return RunOutcome(True, 0, 0, None)

    def cancel(self) -> None:
        """Ask a running :meth:`run` to stop after its current unit (thread-safe)."""

    # --- the end --------------------------------------------------------------------------------
    def close(self) -> None:
        """Forget the volume and release cached work (device memory); the session can open
        another volume afterwards."""
        self._history = None
        self._volume = None
        self._prompts = self._no_prompts()
