"""A prompt session bound to one segment: results go into the segment, undo restores it exactly.

The session (any object with the protocol of :mod:`volsam.sessions.protocol`) writes its result
into a uint8 buffer that this class owns, and returns the changed box;
:meth:`SegmentInteraction.finish_step` then writes only that box into the segment. Between two
prompts the user may paint in the segment with Segment Editor. Two things keep that painting safe:

* before each prompt (:meth:`~SegmentInteraction.begin_step`) the buffer is brought up to date
  with the segment, so the session starts from what the user sees;
* undo and redo restore the segment from this class's own history
  (:class:`~volsam.sessions.history.PatchHistory`) over the segment's *raw* labelmap contents in
  each changed box, taken just before and after each write, rather than from the session's
  buffer, which never saw the painting. Undo of a click therefore gives back the segment exactly
  as it was before that click, painting included (and, in a labelmap layer shared with other
  segments, their voxels too);
* painting made with Segment Editor is a step of this history of its own ("edit in Segment
  Editor"), so undo takes the stroke away first and redo brings it back. This class keeps a
  *shadow* of the segment's raw labelmap on the volume's grid (what
  :meth:`~volsam.mrml.segments.SegmentOnGrid.read_raw` returns), updated only inside the boxes it
  writes itself (steps, app edits, undo and redo), so it costs nothing per click (its memory:
  one labelmap value per voxel of the volume, as much as the session's buffer). When the
  labelmap changed since this class last wrote it (a cheap comparison of its address and
  modification times), :meth:`~SegmentInteraction.take_in_edits` records the change as one step
  whose before-patch comes from the shadow and after-patch from the segment, over the box where
  they differ. That runs before every step, edit, undo, redo, reset and change of segment (and
  the controller runs it between jobs), so a change nobody recorded is never overwritten.

The rules of this history: every session step (a prompt, a run, a reset: one undo step of the
session each, changed or not, as the protocol says) is one step here, and the session's own
``undo``/``redo`` are called alongside so its prompts follow; an edit made through the app
(:meth:`~SegmentInteraction.edit`, e.g. a paint stroke in the browser) and an edit made in
Segment Editor are each one step of their own that the session does not know about. A step may
carry the caller's state before and after it (the prompt markups), handed back by undo and redo
(an edit in Segment Editor carries the caller's state at the time it was taken in, unchanged).

Threads: everything here touches MRML and runs on the main thread, except the model work between
:meth:`begin_step` and :meth:`finish_step` (the buffer is not touched meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..geometry import Box, Volume, union_boxes
from ..sessions.history import Patch, PatchHistory, Step
from .segments import SegmentGridError, SegmentOnGrid

#: The label of a step taken in from Segment Editor (or any other writer of the labelmap).
EDITOR_EDIT_LABEL = "edit in Segment Editor"


@dataclass(frozen=True)
class SegmentStep:
    """One undoable change of the segment, as undo and redo hand it back.

    ``box``: where the segment changed (None: nowhere); ``state``: the caller's state to restore
    (from before the step after an undo, from after it after a redo); ``tag``: the caller's note.
    """

    box: Box | None
    label: str
    state: Any = None
    tag: Any = None


@dataclass(frozen=True)
class _Note:
    session_step: bool  # the session has a matching step of its own
    tag: Any


class _RawSegment:
    """A segment's raw labelmap as the history's target; ``written(box)`` follows each write
    (the shadow takes the box in)."""

    def __init__(self, segment: SegmentOnGrid, written: Callable[[Box], None]):
        self.segment = segment
        self.written = written

    def read_box(self, box: Box) -> np.ndarray:
        return self.segment.read_raw(box)

    def write_box(self, values: np.ndarray, box: Box) -> None:
        self.segment.write_raw(values, box)
        self.written(box)


class SegmentInteraction:
    """Drive ``session`` for one segment of a segmentation node on ``volume``'s grid.

    ``session.open_volume(volume)`` must have been called (it may be slow, so the caller runs it
    on its worker thread); this object hands the session its target buffer.
    """

    def __init__(self, session, volume: Volume, max_undo_steps: int = 100):
        self.session = session
        self.volume = volume
        self.max_undo_steps = max_undo_steps
        self.buffer = np.zeros(volume.shape_kji, dtype=np.uint8)
        self.target: SegmentOnGrid | None = None
        self._history: PatchHistory | None = None
        # Where the buffer may hold nonzero voxels, and the labelmap state it was synced with.
        self._buffer_box: Box | None = None
        self._synced_state = None
        self._step_open = False
        # The segment's raw labelmap as this class last wrote or took it in (see the module
        # docstring), where it may be nonzero, and the labelmap state it matches.
        self._shadow: np.ndarray | None = None
        self._shadow_box: Box | None = None
        self._recorded_state = None
        self._writing = 0
        session.set_target_buffer(self.buffer)

    # --- which segment ------------------------------------------------------------------------
    def set_segment(self, segmentation_node, segment_id: str) -> None:
        """Work on another segment: the session's prompts start over and the undo history is
        dropped (it belongs to the previous segment)."""
        if self.target is not None:
            try:  # the previous history is dropped, but nothing is taken in halfway
                self.take_in_edits()
            except SegmentGridError:  # the previous segment (or its labelmap) is gone
                pass
        with self._write_guard():
            self.target = SegmentOnGrid(segmentation_node, segment_id, self.volume)
        self._history = PatchHistory(_RawSegment(self.target, self._shadow_follow), self.max_undo_steps)
        self.session.set_target_buffer(self.buffer)  # prompts and the session's history start over
        self._buffer_box = Box.full(self.volume.shape_kji)
        self._sync_buffer(force=True)
        self._reset_shadow()

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

    # --- the shadow: edits this class did not make ----------------------------------------------
    @contextmanager
    def _write_guard(self) -> Iterator[None]:
        """Mark this class's own writes (:attr:`writing`), and take the labelmap's state after them."""
        self._writing += 1
        try:
            yield
        finally:
            self._writing -= 1
            if self._writing == 0 and self.target is not None:
                try:
                    self._recorded_state = self._labelmap_state()
                except SegmentGridError:
                    self._recorded_state = None

    @property
    def writing(self) -> bool:
        """True while this class writes the segment (its own modified events are not edits)."""
        return self._writing > 0

    def _reset_shadow(self) -> None:
        target = self._require_target()
        with self._write_guard():  # labelmap_box may put the labelmap on the volume's grid
            box = target.labelmap_box()
        dtype = target.read_raw(Box((0, 0, 0), (0, 0, 0))).dtype
        self._shadow = np.zeros(self.volume.shape_kji, dtype)
        if box is not None:
            self._shadow[box.slices] = target.read_raw(box)
        self._shadow_box = box

    def _shadow_follow(self, box: Box) -> None:
        """This class wrote ``box``: the shadow takes it in from the segment."""
        values = self._require_target().read_raw(box)
        if values.dtype != self._shadow.dtype:
            self._shadow = self._shadow.astype(values.dtype)
        self._shadow[box.slices] = values
        self._shadow_box = union_boxes(self._shadow_box, box)

    @property
    def has_unrecorded_edits(self) -> bool:
        """Whether the labelmap changed since this class last wrote it (cheap: no voxel is read;
        the change may still turn out to change no voxel)."""
        if self.target is None or self._history is None:
            return False
        try:
            return self._labelmap_state() != self._recorded_state
        except SegmentGridError:
            return False

    def take_in_edits(self, state: Any = None, label: str = EDITOR_EDIT_LABEL) -> SegmentStep | None:
        """Record a change of the labelmap that this class did not make (painting with Segment
        Editor) as one step of the history, not the session's: before from the shadow, after
        from the segment, over the box where they differ. ``state``: the caller's state, kept by
        the step (before and after). Returns the step, None when nothing changed (cheap then)."""
        self._check_idle()
        if not self.has_unrecorded_edits:
            return None
        target = self._require_target()
        with self._write_guard():  # labelmap_box may put the labelmap on the volume's grid
            now_box = target.labelmap_box()
        region = union_boxes(self._shadow_box, now_box)
        step = None
        if region is not None:
            current = target.read_raw(region)
            if current.dtype != self._shadow.dtype:
                self._shadow = self._shadow.astype(current.dtype)
            before = self._shadow[region.slices]
            changed = Box.from_mask(before != current)
            if changed is not None:
                inner = changed.slices
                box = Box(np.add(region.start, changed.start), np.add(region.start, changed.stop))
                patch = Patch.of(box, before[inner].copy(), current[inner].copy())
                self._history.push(Step([patch], label, state, state, _Note(False, None)))
                step = SegmentStep(box, label, state)
            self._shadow[region.slices] = current
        self._shadow_box = now_box
        self._recorded_state = self._labelmap_state()
        return step

    # --- recording ----------------------------------------------------------------------------
    def _write_recorded(self, values: np.ndarray, box: Box, history: PatchHistory) -> None:
        """Set the segment to the 0/1 ``values`` in ``box`` and record the raw change."""
        target = self._require_target()
        with self._write_guard():
            before = target.read_raw(box)
            target.write(values, box)
            self._shadow_follow(box)
            history.add(Patch.of(box, before, self._shadow[box.slices].copy()))

    def _require_history(self) -> PatchHistory:
        self._require_target()
        return self._history

    def _check_idle(self) -> None:
        if self._step_open:
            raise RuntimeError("a prompt is still running; wait for it to finish")

    # --- prompts ------------------------------------------------------------------------------
    def begin_step(self, state: Any = None) -> None:
        """Before a prompt runs (main thread): take in edits made since the last step (``state``:
        the caller's state now) and bring the buffer up to date with the segment."""
        self._check_idle()
        self.take_in_edits(state)
        self._sync_buffer()
        self._step_open = True

    def finish_step(self, box: Box | None, label: str = "", tag: Any = None, write_limit: Box | None = None,
                    state_before: Any = None, state_after: Any = None) -> Box | None:
        """After a session step ran (main thread): write the buffer's ``box`` into the segment and
        record the step for undo (always, changed or not: it is one step of the session too).
        ``write_limit`` keeps the segment outside it untouched (e.g. a slice range). Returns the
        box written (None if nothing was)."""
        if not self._step_open:
            raise RuntimeError("finish_step without begin_step")
        self._step_open = False
        history = self._require_history()
        # Painting made while the model ran is a step of its own, before this one.
        self.take_in_edits(state_before)
        buffer_synced = self._labelmap_state() == self._synced_state
        history.begin(label, state_before, _Note(True, tag))
        if box is not None and not box.is_empty:
            box = box.clip_to(self.volume.shape_kji)
            self._buffer_box = union_boxes(self._buffer_box, box)
            if write_limit is not None:
                box = box.intersection(write_limit)
        written = None
        if box is not None and not box.is_empty:
            self._write_recorded(self.buffer[box.slices], box, history)
            written = box
        history.end(state_after, keep_unchanged=True)
        if written is not None and buffer_synced:
            self._synced_state = self._labelmap_state()
        return written

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

    def edit(self, brush: np.ndarray, box: Box, erase: bool = False, label: str = "paint",
             state: Any = None) -> Box | None:
        """An edit made through the app (a paint or erase stroke): the segment gains (or loses,
        ``erase``) the nonzero voxels of ``brush`` within ``box``; one undo step, not the session's.
        Returns the box written."""
        self._check_idle()
        history = self._require_history()
        box = Box(box.start, box.stop)
        if tuple(brush.shape) != box.shape or box != box.clip_to(self.volume.shape_kji):
            raise ValueError(f"a brush of shape {brush.shape} does not fit box {box} inside the volume "
                             f"of shape {self.volume.shape_kji}")
        self.take_in_edits(state)  # painting in Segment Editor before it is a step of its own
        self._sync_buffer()  # take in any painting made since (cheap when there was none)
        current = self.current_mask(box).astype(bool)
        stroke = np.asarray(brush) != 0
        values = ((current & ~stroke) if erase else (current | stroke)).astype(np.uint8)
        history.begin(label, state, _Note(False, None))
        self._write_recorded(values, box, history)
        history.end(state, keep_unchanged=True)
        # Only the stroke's box changed: the buffer follows there, not through a whole sync.
        self.buffer[box.slices] = values
        self._buffer_box = union_boxes(self._buffer_box, box)
        self._synced_state = self._labelmap_state()
        return box

    # --- undo / redo / reset ------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return self._history is not None and self._history.can_undo

    @property
    def can_redo(self) -> bool:
        return self._history is not None and self._history.can_redo

    def undo(self, state: Any = None) -> SegmentStep | None:
        """Give the segment back as it was before the last step; None when there is none. An
        edit made in Segment Editor since the last step is taken in first (``state``: the
        caller's state now), so it is what this undoes."""
        return self._move("undo", state)

    def redo(self, state: Any = None) -> SegmentStep | None:
        """Redo the last undone step (none after an edit made in Segment Editor since: it is a
        new step, which forgets what could be redone)."""
        return self._move("redo", state)

    def _move(self, which: str, state: Any = None) -> SegmentStep | None:
        self._check_idle()
        history = self._require_history()
        self.take_in_edits(state)
        with self._write_guard():
            step: Step | None = history.undo() if which == "undo" else history.redo()
        if step is None:
            return None
        session_box = None
        if step.tag.session_step:
            session_box = self.session.undo() if which == "undo" else self.session.redo()
        # The session restored its own (painting-free) view; the segment is the truth.
        self._buffer_box = union_boxes(self._buffer_box, session_box, step.box)
        self._sync_buffer(force=True)
        state = step.state_before if which == "undo" else step.state_after
        return SegmentStep(step.box, step.label, state, step.tag.tag)

    def reset(self, label: str = "reset", state_before: Any = None, state_after: Any = None) -> SegmentStep:
        """Forget the session's prompts and clear the segment, as one undoable step (undo brings
        the voxels and the session's prompts back)."""
        self._check_idle()
        history = self._require_history()
        self.take_in_edits(state_before)
        self.session.reset()
        history.begin(label, state_before, _Note(True, None))
        box = self._require_target().labelmap_box()
        if box is not None:
            self._write_recorded(np.zeros(box.shape, np.uint8), box, history)
        step = history.end(state_after, keep_unchanged=True)
        self._buffer_box = Box.full(self.volume.shape_kji)
        self._sync_buffer(force=True)
        return SegmentStep(step.box, label, state_after)
