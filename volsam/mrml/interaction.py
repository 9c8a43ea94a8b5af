"""A prompt session bound to one segment: results go into the segment, undo restores it exactly.

The session (any object with the API of :mod:`volsam.sessions`) writes its result into a uint8
buffer that this class owns, and returns the changed box; :meth:`SegmentInteraction.finish_step`
then writes only that box into the segment. Between two prompts the user may paint in the
segment with Segment Editor. Two things keep that painting safe:

* before each prompt (:meth:`~SegmentInteraction.begin_step`) the buffer is brought up to date
  with the segment, so the session starts from what the user sees;
* undo and redo restore the segment from this class's own stack of the segment's raw labelmap
  contents in each changed box (compressed), taken just before and after each write, rather
  than from the session's buffer, which never saw the painting. Undo of a click therefore gives
  back the segment exactly as it was before that click, painting included (and, in a labelmap
  layer shared with other segments, their voxels too).

The session's own ``undo``/``redo`` are called alongside, so its prompt state follows. What a
session counts as one undo step is stated by the caller (:class:`SessionUndoRules`): both
sessions of volsam make every prompt (changed or not), propagation and reset one step.

Threads: :meth:`begin_step` and :meth:`finish_step` touch MRML and must run on the main thread;
the model work between them may run on a worker thread (the buffer is not touched meanwhile).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..geometry import Box, Volume, union_boxes
from .segments import SegmentOnGrid


@dataclass(frozen=True)
class SessionUndoRules:
    """Which calls the session records as one undo step of its own.

    ``unchanged_prompts``: a prompt that left the mask as it was is still a step;
    ``reset``: :meth:`reset` is a step (so undo gives the prompts back too).
    """

    unchanged_prompts: bool
    reset: bool


@dataclass
class SegmentStep:
    """One undoable change of the segment.

    ``tag`` is the caller's note of what made it (e.g. which markups point), handed back by
    undo and redo so the caller can hide or show that prompt again.
    """

    box: Box | None
    label: str = ""
    tag: Any = None
    session_step: bool = True
    _dtype: Any = field(default=None, repr=False)
    _before: bytes = field(default=b"", repr=False)
    _after: bytes = field(default=b"", repr=False)

    def values(self, which: str) -> np.ndarray:
        data = zlib.decompress(self._before if which == "before" else self._after)
        return np.frombuffer(data, dtype=self._dtype).reshape(self.box.shape)


def _compress(values: np.ndarray) -> bytes:
    return zlib.compress(np.ascontiguousarray(values).tobytes(), 1)


class SegmentInteraction:
    """Drive ``session`` for one segment of a segmentation node on ``volume``'s grid.

    ``session.open_volume(volume)`` must have been called (it may be slow, so the caller runs it
    on its worker thread); this object hands the session its target buffer.
    """

    def __init__(self, session, volume: Volume, undo_rules: SessionUndoRules, max_undo_steps: int = 100):
        self.session = session
        self.volume = volume
        self.undo_rules = undo_rules
        self.max_undo_steps = max_undo_steps
        self.buffer = np.zeros(volume.shape_kji, dtype=np.uint8)
        self.target: SegmentOnGrid | None = None
        self._undo: list[SegmentStep] = []
        self._redo: list[SegmentStep] = []
        # Where the buffer may hold nonzero voxels, and the labelmap state it was synced with.
        self._buffer_box: Box | None = None
        self._synced_state = None
        self._step_open = False
        session.set_target_buffer(self.buffer)

    # --- which segment ------------------------------------------------------------------------
    def set_segment(self, segmentation_node, segment_id: str) -> None:
        """Work on another segment: the session's prompts start over and the undo history is
        dropped (it belongs to the previous segment)."""
        self.target = SegmentOnGrid(segmentation_node, segment_id, self.volume)
        self._undo.clear()
        self._redo.clear()
        self.session.reset()
        self._buffer_box = Box.full(self.volume.shape_kji)  # reset() may have touched any voxel
        self._sync_buffer(force=True)

    @property
    def segment_id(self) -> str | None:
        return None if self.target is None else self.target.segment_id

    def _require_target(self) -> SegmentOnGrid:
        if self.target is None:
            raise ValueError("no segment selected")
        return self.target

    # --- buffer <-> segment -------------------------------------------------------------------
    def _labelmap_state(self):
        image = self._require_target()._labelmap()
        scalars = image.GetPointData().GetScalars()
        return (image.GetAddressAsString("vtkOrientedImageData"), image.GetMTime(),
                scalars.GetMTime() if scalars is not None else 0, tuple(image.GetExtent()))

    def _sync_buffer(self, force: bool = False) -> None:
        """Make the buffer equal to the segment; skipped when the labelmap has not changed since
        the last sync (the common case: nobody painted between two clicks)."""
        target = self._require_target()
        state = self._labelmap_state()
        if state == self._synced_state and not force:
            return
        segment_box = target.labelmap_box()
        region = union_boxes(self._buffer_box, segment_box)
        if region is not None:
            self.buffer[region.slices] = target.read(region)
        self._buffer_box = segment_box
        self._synced_state = state

    def current_mask(self, box: Box | None = None) -> np.ndarray:
        """The segment as it is now in ``box`` (default: everywhere), as a uint8 (k, j, i) mask,
        e.g. a slice the user corrected with Segment Editor, to give the session as a mask prompt."""
        return self._require_target().read(box)

    # --- prompts ------------------------------------------------------------------------------
    def begin_step(self) -> None:
        """Before a prompt runs (main thread): bring the buffer up to date with the segment."""
        if self._step_open:
            raise RuntimeError("a prompt is still running; wait for it to finish")
        self._sync_buffer()
        self._step_open = True

    def finish_step(self, box: Box | None, label: str = "", tag: Any = None,
                    write_limit: Box | None = None) -> Box | None:
        """After a prompt ran (main thread): write the buffer's ``box`` into the segment and
        record the change for undo. ``write_limit`` keeps the segment outside it untouched
        (e.g. a slice range). Returns the box written (None if nothing was)."""
        if not self._step_open:
            raise RuntimeError("finish_step without begin_step")
        self._step_open = False
        target = self._require_target()
        changed = box is not None and not box.is_empty
        session_step = changed or self.undo_rules.unchanged_prompts
        if changed:
            box = box.clip_to(self.volume.shape_kji)
            self._buffer_box = union_boxes(self._buffer_box, box)
            if write_limit is not None:
                box = box.intersection(write_limit)
        if not changed or box.is_empty:
            # Still a step of ours, so undo takes the prompt's markup away.
            self._push(SegmentStep(None, label, tag, session_step))
            return None
        before = target.read_raw(box)
        target.write(self.buffer[box.slices], box)
        after = target.read_raw(box)
        self._push(SegmentStep(box, label, tag, session_step, before.dtype, _compress(before), _compress(after)))
        self._synced_state = self._labelmap_state()
        return box

    def abort_step(self) -> None:
        """The prompt failed: the buffer may be half written, so take it back from the segment."""
        self._step_open = False
        self._buffer_box = Box.full(self.volume.shape_kji)
        self._sync_buffer(force=True)

    def run_step(self, prompt: Callable[[Any], Box | None], label: str = "", tag: Any = None,
                 write_limit: Box | None = None) -> Box | None:
        """Run ``prompt(session)`` here and now (tests, self-tests, scripts)."""
        self.begin_step()
        try:
            box = prompt(self.session)
        except BaseException:
            self.abort_step()
            raise
        return self.finish_step(box, label, tag, write_limit)

    def _push(self, step: SegmentStep) -> None:
        self._undo.append(step)
        del self._undo[:-self.max_undo_steps]
        self._redo.clear()

    # --- undo / redo / reset ------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> SegmentStep | None:
        """Give the segment back as it was before the last step; None when there is none."""
        return self._move(self._undo, self._redo, "before")

    def redo(self) -> SegmentStep | None:
        return self._move(self._redo, self._undo, "after")

    def _move(self, source: list, destination: list, which: str) -> SegmentStep | None:
        if self._step_open:
            raise RuntimeError("a prompt is still running; wait for it to finish")
        if not source:
            return None
        target = self._require_target()
        step = source.pop()
        session_box = None
        if step.session_step:
            session_box = self.session.undo() if which == "before" else self.session.redo()
        if step.box is not None:
            target.write_raw(step.values(which), step.box)
        destination.append(step)
        # The session restored its own (painting-free) view; the segment is the truth.
        self._buffer_box = union_boxes(self._buffer_box, session_box, step.box)
        self._sync_buffer(force=True)
        return step

    def reset(self, label: str = "reset") -> SegmentStep | None:
        """Forget the session's prompts and clear the segment. Undo brings the segment's voxels
        back, and the prompts too if the session can undo its reset."""
        if self._step_open:
            raise RuntimeError("a prompt is still running; wait for it to finish")
        target = self._require_target()
        self.session.reset()
        if not self.undo_rules.reset:  # the session forgot its steps: ours no longer map onto them
            for earlier in self._undo + self._redo:
                earlier.session_step = False
        self._buffer_box = Box.full(self.volume.shape_kji)
        box = target.labelmap_box()
        step = SegmentStep(None, label, None, self.undo_rules.reset)
        if box is not None:
            before = target.read_raw(box)
            target.write(np.zeros(box.shape, np.uint8), box)
            after = target.read_raw(box)
            step = SegmentStep(box, label, None, self.undo_rules.reset, before.dtype, _compress(before),
                               _compress(after))
        if step.box is not None or step.session_step:
            self._push(step)
        else:
            step = None
        self._sync_buffer(force=True)
        return step
