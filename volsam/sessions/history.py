"""Multi-level undo/redo of a caller-owned mask buffer, stored as compressed changed boxes.

Every change the sessions make goes through :meth:`MaskHistory.commit`, which writes the new
values into the buffer and keeps the old and new contents of the changed box (zlib of the
uint8 patch: masks compress about 50-500x). Undo and redo write a patch back and return the box
they changed, so a viewer updates only that box. Nothing else in the buffer is touched, which
is what keeps a user's own painting safe.

A step may also carry the caller's own state (an immutable snapshot, e.g. a session's prompts)
from before and after it: :meth:`MaskHistory.begin` takes the state before, :meth:`MaskHistory.end`
the state after, and :meth:`MaskHistory.undo_with_state` / :meth:`MaskHistory.redo_with_state`
hand back the state to restore with the box. This makes the history the one undo stack of a
session, so its prompts and its mask cannot get out of step.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..geometry import Box


@dataclass(frozen=True)
class _Patch:
    box: Box
    before: bytes
    after: bytes

    def restore(self, buffer: np.ndarray, which: str) -> None:
        data = zlib.decompress(self.before if which == "before" else self.after)
        buffer[self.box.slices] = np.frombuffer(data, dtype=buffer.dtype).reshape(self.box.shape)


@dataclass
class _Step:
    patches: list[_Patch] = field(default_factory=list)
    label: str = ""
    state_before: Any = None
    state_after: Any = None

    @property
    def box(self) -> Box | None:
        result = None
        for patch in self.patches:
            result = patch.box if result is None else result.union(patch.box)
        return result


@dataclass(frozen=True)
class UndoResult:
    """What one undo or redo restored: the changed box of the buffer (None when the step
    changed only the state) and the caller's state to restore (None when the step has none)."""

    box: Box | None
    state: Any


class MaskHistory:
    """Undo/redo over ``buffer`` (a uint8 (k, j, i) array owned by the caller).

    ``max_steps`` bounds memory; the oldest steps are forgotten first.
    """

    def __init__(self, buffer: np.ndarray, max_steps: int = 100):
        if buffer.ndim != 3 or buffer.dtype != np.uint8:
            raise ValueError(f"the target buffer must be a 3D uint8 array, got {buffer.ndim}D {buffer.dtype}")
        if not buffer.flags.writeable:
            raise ValueError("the target buffer must be writeable")
        self.buffer = buffer
        self.max_steps = max_steps
        self._undo: list[_Step] = []
        self._redo: list[_Step] = []
        self._open: _Step | None = None

    # --- recording ------------------------------------------------------------------------
    def begin(self, label: str = "", state: Any = None) -> None:
        """Group the following commits into one undo step (e.g. a propagation of many slices).

        ``state``: the caller's state before the step (any immutable object but None), handed
        back when the step is undone.
        """
        self.end()
        self._open = _Step(label=label, state_before=state)

    def end(self, state: Any = None) -> Box | None:
        """Close the group opened by :meth:`begin`; returns its changed box.

        ``state``: the caller's state after the step. A step given one is recorded even if the
        mask did not change (a click that changed only the prompts is still an undo step);
        without one the state counts as unchanged and only a mask change is recorded.
        """
        step, self._open = self._open, None
        if step is None or (state is None and not step.patches):
            return None
        step.state_after = step.state_before if state is None else state
        self._push(step)
        return step.box

    def commit(self, values: np.ndarray, box: Box, label: str = "") -> Box | None:
        """Write ``values`` into ``buffer[box]`` and record the change.

        Returns the box that really changed (tightened to the differing voxels), or None if
        the values equal what was there.
        """
        box = Box(box.start, box.stop)
        if tuple(values.shape) != box.shape or box != box.clip_to(self.buffer.shape):
            raise ValueError(f"values of shape {values.shape} do not fit box {box} inside the buffer "
                             f"of shape {self.buffer.shape}")
        values = np.asarray(values).astype(np.uint8, copy=False)
        current = self.buffer[box.slices]
        changed = Box.from_mask(current != values)
        if changed is None:
            return None
        inner = changed.slices
        changed = Box(np.add(box.start, changed.start), np.add(box.start, changed.stop))
        patch = _Patch(changed, zlib.compress(np.ascontiguousarray(current[inner]).tobytes(), 1),
                       zlib.compress(np.ascontiguousarray(values[inner]).tobytes(), 1))
        self.buffer[changed.slices] = values[inner]
        if self._open is not None:
            self._open.patches.append(patch)
        else:
            self._push(_Step([patch], label))
        return changed

    def _push(self, step: _Step) -> None:
        self._undo.append(step)
        del self._undo[:-self.max_steps]
        self._redo.clear()

    # --- navigation -----------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> Box | None:
        """Restore the buffer as it was before the last step; returns the changed box, None when
        there is nothing to undo or the step changed no voxel."""
        result = self.undo_with_state()
        return None if result is None else result.box

    def redo(self) -> Box | None:
        result = self.redo_with_state()
        return None if result is None else result.box

    def undo_with_state(self) -> UndoResult | None:
        """Undo the last step; the result holds the state from before it. None when there is
        nothing to undo."""
        self.end()
        if not self._undo:
            return None
        step = self._undo.pop()
        for patch in reversed(step.patches):
            patch.restore(self.buffer, "before")
        self._redo.append(step)
        return UndoResult(step.box, step.state_before)

    def redo_with_state(self) -> UndoResult | None:
        """Redo the last undone step; the result holds the state from after it."""
        self.end()
        if not self._redo:
            return None
        step = self._redo.pop()
        for patch in step.patches:
            patch.restore(self.buffer, "after")
        self._undo.append(step)
        return UndoResult(step.box, step.state_after)

    def clear(self) -> None:
        """Forget all steps (the buffer is left as it is)."""
        self._open = None
        self._undo.clear()
        self._redo.clear()

    @property
    def stored_bytes(self) -> int:
        return sum(len(p.before) + len(p.after) for s in self._undo + self._redo for p in s.patches)
