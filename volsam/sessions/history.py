"""Multi-level undo/redo stored as compressed changed boxes: the one undo machinery of volsam.

:class:`PatchHistory` is the machinery: a stack of steps, each a list of :class:`Patch` (the
old and new contents of one box, zlib-compressed: masks compress about 50-500x), over any
*target* that can read and write a box of voxels (:class:`BoxTarget`). Undo and redo write the
patches back and return the step, so a viewer updates only its box. It is dtype-agnostic: a
patch keeps the dtype it was taken with.

Two users declare their own rules on top of it:

* :class:`MaskHistory` (the sessions): the target is a caller-owned uint8 (k, j, i) buffer;
  :meth:`MaskHistory.commit` writes new values and records only the voxels that really changed;
  a step given the caller's state (the session's prompts) is kept even if no voxel changed;
* :class:`volsam.mrml.interaction.SegmentInteraction` (the MRML layer): the target is a
  segment's raw labelmap (label values of every segment sharing the layer), so undo gives back
  exactly what was there, user painting and other segments included; it mirrors every session
  step, changed or not, and records edits made through the app and edits made in Segment Editor
  as steps of their own.

A step may carry the caller's state from before and after it (any immutable object): undo hands
back the state before, redo the state after, so the caller's prompts and its voxels cannot get
out of step.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..geometry import Box


class BoxTarget(Protocol):
    """What a history writes its patches back into."""

    def read_box(self, box: Box) -> np.ndarray:
        """The values in ``box`` ((k, j, i) order), as a new array."""

    def write_box(self, values: np.ndarray, box: Box) -> None:
        """Put ``values`` back into ``box`` exactly."""


@dataclass(frozen=True)
class Patch:
    """The contents of one box before and after a change, compressed."""

    box: Box
    dtype: np.dtype
    before: bytes
    after: bytes

    @classmethod
    def of(cls, box: Box, before: np.ndarray, after: np.ndarray) -> Patch:
        if before.shape != box.shape or after.shape != box.shape or before.dtype != after.dtype:
            raise ValueError(f"patch values {before.shape} {before.dtype} / {after.shape} {after.dtype} "
                             f"do not fit box {box}")
        return cls(box, before.dtype, _compress(before), _compress(after))

    def values(self, which: str) -> np.ndarray:
        """The box's contents "before" or "after" the change."""
        data = zlib.decompress(self.before if which == "before" else self.after)
        return np.frombuffer(data, dtype=self.dtype).reshape(self.box.shape)


def _compress(values: np.ndarray) -> bytes:
    return zlib.compress(np.ascontiguousarray(values).tobytes(), 1)


@dataclass
class Step:
    """One undo step: its patches (applied in order), a label, the caller's state before and
    after it, and ``tag``, the caller's own note about it."""

    patches: list[Patch] = field(default_factory=list)
    label: str = ""
    state_before: Any = None
    state_after: Any = None
    tag: Any = None

    @property
    def box(self) -> Box | None:
        """The union of the patches' boxes (None when the step changed no voxel)."""
        result = None
        for patch in self.patches:
            result = patch.box if result is None else result.union(patch.box)
        return result


class PatchHistory:
    """Undo/redo stacks of :class:`Step` over ``target``; ``max_steps`` bounds memory (the
    oldest steps are forgotten first)."""

    def __init__(self, target: BoxTarget, max_steps: int = 100):
        self.target = target
        self.max_steps = max_steps
        self._undo: list[Step] = []
        self._redo: list[Step] = []
        self._open: Step | None = None

    # --- recording ------------------------------------------------------------------------
    def begin(self, label: str = "", state: Any = None, tag: Any = None) -> None:
        """Group the following patches into one step; ``state``: the caller's state before it."""
        self.end()
        self._open = Step(label=label, state_before=state, tag=tag)

    @property
    def recording(self) -> bool:
        return self._open is not None

    def add(self, patch: Patch) -> None:
        """Record ``patch`` (already written into the target) in the open step, or as a step of
        its own when none is open."""
        if self._open is not None:
            self._open.patches.append(patch)
        else:
            self.push(Step([patch]))

    def end(self, state: Any = None, keep_unchanged: bool = False) -> Step | None:
        """Close the open step and push it; returns it, or None when there was none or it changed
        nothing and ``keep_unchanged`` is False. ``state``: the caller's state after it (None:
        unchanged)."""
        step, self._open = self._open, None
        if step is None or not (step.patches or keep_unchanged):
            return None
        step.state_after = step.state_before if state is None else state
        self.push(step)
        return step

    def push(self, step: Step) -> None:
        """Record a finished step; a new step forgets what could be redone."""
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

    def undo(self) -> Step | None:
        """Write the last step's "before" contents back; returns the step, None if there is none."""
        self.end()
        if not self._undo:
            return None
        step = self._undo.pop()
        for patch in reversed(step.patches):
            self.target.write_box(patch.values("before"), patch.box)
        self._redo.append(step)
        return step

    def redo(self) -> Step | None:
        """Write the last undone step's "after" contents back; returns the step, None if none."""
        self.end()
        if not self._redo:
            return None
        step = self._redo.pop()
        for patch in step.patches:
            self.target.write_box(patch.values("after"), patch.box)
        self._undo.append(step)
        return step

    def clear(self) -> None:
        """Forget all steps (the target is left as it is)."""
        self._open = None
        self._undo.clear()
        self._redo.clear()


# --- the sessions' history: a caller-owned uint8 buffer -----------------------------------------
class ArrayTarget:
    """A numpy array as a :class:`BoxTarget`."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def read_box(self, box: Box) -> np.ndarray:
        return self.array[box.slices].copy()

    def write_box(self, values: np.ndarray, box: Box) -> None:
        self.array[box.slices] = values


@dataclass(frozen=True)
class UndoResult:
    """What one undo or redo restored: the changed box of the buffer (None when the step
    changed only the state) and the caller's state to restore (None when the step has none)."""

    box: Box | None
    state: Any


class MaskHistory:
    """Undo/redo over ``buffer`` (a uint8 (k, j, i) array owned by the caller).

    Its rules: :meth:`commit` records only the voxels that changed; a step closed with a state
    (:meth:`end`) is kept even when no voxel changed (a click that changed only the prompts is
    still an undo step); without one only a change of voxels is.
    """

    def __init__(self, buffer: np.ndarray, max_steps: int = 100):
        if buffer.ndim != 3 or buffer.dtype != np.uint8:
            raise ValueError(f"the target buffer must be a 3D uint8 array, got {buffer.ndim}D {buffer.dtype}")
        if not buffer.flags.writeable:
            raise ValueError("the target buffer must be writeable")
        self.buffer = buffer
        self._steps = PatchHistory(ArrayTarget(buffer), max_steps)

    @property
    def max_steps(self) -> int:
        return self._steps.max_steps

    # --- recording ------------------------------------------------------------------------
    def begin(self, label: str = "", state: Any = None) -> None:
        """Group the following commits into one undo step (e.g. a propagation of many slices).

        ``state``: the caller's state before the step (any immutable object but None), handed
        back when the step is undone.
        """
        self._steps.begin(label, state)

    def end(self, state: Any = None) -> Box | None:
        """Close the group opened by :meth:`begin`; returns its changed box.

        ``state``: the caller's state after the step; a step given one is recorded even if the
        mask did not change.
        """
        step = self._steps.end(state, keep_unchanged=state is not None)
        return None if step is None else step.box

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
        patch = Patch.of(changed, current[inner].copy(), values[inner].copy())
        self.buffer[changed.slices] = values[inner]
        if self._steps.recording:
            self._steps.add(patch)
        else:
            self._steps.push(Step([patch], label))
        return changed

    # --- navigation -----------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return self._steps.can_undo

    @property
    def can_redo(self) -> bool:
        return self._steps.can_redo

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
        step = self._steps.undo()
        return None if step is None else UndoResult(step.box, step.state_before)

    def redo_with_state(self) -> UndoResult | None:
        """Redo the last undone step; the result holds the state from after it."""
        step = self._steps.redo()
        return None if step is None else UndoResult(step.box, step.state_after)

    def clear(self) -> None:
        """Forget all steps (the buffer is left as it is)."""
        self._steps.clear()
