"""Multi-level undo/redo of a caller-owned mask buffer, stored as compressed changed boxes.

Every change the sessions make goes through :meth:`MaskHistory.commit`, which writes the new
values into the buffer and keeps the old and new contents of the changed box (zlib of the
uint8 patch: masks compress about 50-500x). Undo and redo write a patch back and return the box
they changed, so a viewer updates only that box. Nothing else in the buffer is touched, which
is what keeps a user's own painting safe.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

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

    @property
    def box(self) -> Box | None:
        result = None
        for patch in self.patches:
            result = patch.box if result is None else result.union(patch.box)
        return result


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
    def begin(self, label: str = "") -> None:
        """Group the following commits into one undo step (e.g. a propagation of many slices)."""
        self.end()
        self._open = _Step(label=label)

    def end(self) -> Box | None:
        """Close the group opened by :meth:`begin`; returns its changed box."""
        step, self._open = self._open, None
        if step is not None and step.patches:
            self._push(step)
            return step.box
        return None

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
        """Restore the buffer as it was before the last step; None when there is nothing to undo."""
        self.end()
        if not self._undo:
            return None
        step = self._undo.pop()
        for patch in reversed(step.patches):
            patch.restore(self.buffer, "before")
        self._redo.append(step)
        return step.box

    def redo(self) -> Box | None:
        self.end()
        if not self._redo:
            return None
        step = self._redo.pop()
        for patch in step.patches:
            patch.restore(self.buffer, "after")
        self._undo.append(step)
        return step.box

    def clear(self) -> None:
        """Forget all steps (the buffer is left as it is)."""
        self._open = None
        self._undo.clear()
        self._redo.clear()

    @property
    def stored_bytes(self) -> int:
        return sum(len(p.before) + len(p.after) for s in self._undo + self._redo for p in s.patches)
