"""The SAM2-3dMed session: prompt a slice, propagate through the volume, correct, undo.

One session per open volume (see :mod:`volsam.sessions` for the shape all sessions share)::

    session = PropagationSession(model, PropagationSessionConfig(slice_direction="axial"))
    session.open_volume(volume, buffer)                       # buffer: caller-owned uint8 (k, j, i)
    session.add_point(ras, positive=True)                     # segments that slice at once
    outcome = session.run(progress=lambda done, total: ...)   # propagates both ways
    session.add_point(other_ras, positive=False)              # a correction on another slice
    session.run()                                             # re-propagates from it only

Every prompted slice becomes a *confirmed* slice: a conditioning frame for the model, and a
slice propagation never writes. :meth:`PropagationSession.run` works outward from the
slices prompted since the last propagation, in both directions, up to (not across) the
nearest other confirmed slice or the volume's end; when two such slices bound one gap, each
takes its half. Each propagated slice keeps the parts of its mask that overlap the previous
slice's (``TrackerConfig.keep_connected``): the object is one connected thing, so propagation
does not jump to a neighbouring lesion. A direction stops early once the object has been absent
on K consecutive slices, and the rest of that run is cleared. Masks are written into the caller's buffer slice
by slice as they come, through :class:`~volsam.sessions.history.MaskHistory`; every prompt,
propagation and reset is one undo step of it, which restores the prompts with the mask.
:meth:`PropagationSession.cancel` (from the progress callback or another thread) stops after
the current slice; the slices done so far stay, and the outcome says so.
A slice prompted with negative clicks alone, and the propagation from it, only remove voxels.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..geometry import Box, Volume, union_boxes
from ..models.sam2_3dmed.frames import IntensityConfig, guess_modality
from ..models.sam2_3dmed.memory import SliceMemory
from ..models.sam2_3dmed.slicing import SlicePlane, slice_axis_for
from ..models.sam2_3dmed.tracker import (
    SlicePrompt,
    SliceTracker,
    TrackerConfig,
    VolumeTrackingState,
)
from ..prompts import box_prompt, point_prompt
from .base import check_target_buffer
from .history import MaskHistory
from .protocol import ProgressCallback, RunOutcome, Session

if TYPE_CHECKING:
    import torch

    from ..models.sam2_3dmed.model import SAM2ThreeDMed

@dataclass(frozen=True)
class PropagationSessionConfig:
    """``slice_direction``: "axial", "coronal", "sagittal" or a RAS normal (3 numbers);
    ``intensity``: None guesses CT or not from each volume opened (:func:`guess_modality`)."""

    slice_direction: str | tuple[float, float, float] = "axial"
    intensity: IntensityConfig | None = None
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    max_undo_steps: int = 100


@dataclass(frozen=True)
class PropagationProgress:
    """One step of :meth:`PropagationSession.propagation_steps`."""

    slices_done: int
    slices_total: int
    slice_index: int
    changed: Box | None


@dataclass(frozen=True, eq=False)
class _ConfirmedSlice:
    """A prompted slice: its accumulated prompt, memory and last mask logits."""

    prompt: SlicePrompt
    memory: SliceMemory
    mask_logits: torch.Tensor | None


def _only_removes(prompt: SlicePrompt) -> bool:
    """A prompt of negative clicks alone says what is not the object, never what is: the
    slice it is on, and the propagation from there, only lose voxels. (Without this, the
    demo model's answer to a negative click on a leak could sweep further than the leak.)"""
    return prompt.mask is None and prompt.box_xyxy is None and len(prompt.labels) > 0 and not np.any(prompt.labels == 1)


@dataclass(frozen=True)
class _Interactions:
    """Everything besides the buffer that undo and redo restore (immutable)."""

    confirmed: Mapping[int, _ConfirmedSlice] = field(default_factory=dict)
    pending: frozenset[int] = frozenset()


class PropagationSession(Session):
    """Interactive SAM2-3dMed segmentation of one volume into a caller-owned buffer."""

    method = "sam2-3dmed"
    capabilities = frozenset({"points", "box", "mask", "propagate"})

    def __init__(self, model: SAM2ThreeDMed, config: PropagationSessionConfig | None = None):
        self.config = config or PropagationSessionConfig()
        self.tracker = SliceTracker(model, self.config.tracker)
        self._volume: Volume | None = None
        self._value_range: tuple[float, float] | None = None
        self._plane: SlicePlane | None = None
        self._state: VolumeTrackingState | None = None
        self._history: MaskHistory | None = None
        self._prompts = self._no_prompts()
        self._cancel = threading.Event()

    # --- volume and buffer ----------------------------------------------------------------------
    def open_volume(self, volume: Volume, target_buffer: np.ndarray | None = None) -> None:
        """Open ``volume`` (held by reference), sliced across the config's direction; results
        go into ``target_buffer`` (a zero buffer is made when None). Forgets the previous
        volume's prompts and history."""
        if not isinstance(volume, Volume):
            raise ValueError(f"open_volume expects a volsam.geometry.Volume, got {type(volume).__name__}")
        intensity = self.config.intensity or IntensityConfig(modality=guess_modality(volume.array))
        axis = slice_axis_for(volume, self.config.slice_direction)
        self._check_slice_count(volume, axis)
        buffer = np.zeros(volume.shape_kji, dtype=np.uint8) if target_buffer is None else target_buffer
        check_target_buffer(buffer, volume)
        self._volume = volume
        self._value_range = intensity.value_range(volume.array)
        self._history = MaskHistory(buffer, self.config.max_undo_steps)
        self._open_axis(axis)

    def set_target_buffer(self, buffer: np.ndarray) -> None:
        """Write results into ``buffer`` (caller-owned uint8, the volume's (k, j, i) shape) from
        now on; prompts and history restart."""
        volume = self._require_volume()
        check_target_buffer(buffer, volume)
        self._history = MaskHistory(buffer, self.config.max_undo_steps)
        self._forget_interactions()

    def close(self) -> None:
        """Forget the volume, its slice features and memories (device memory)."""
        super().close()
        self._volume = self._plane = self._state = self._value_range = None

    @property
    def slice_axis(self) -> int:
        """Index axis (0 = i, 1 = j, 2 = k) the volume is sliced across."""
        return self._require_plane().index_axis

    @property
    def num_slices(self) -> int:
        return self._require_plane().num_slices

    @property
    def confirmed_slices(self) -> tuple[int, ...]:
        return tuple(sorted(self._prompts.confirmed))

    @property
    def pending_slices(self) -> tuple[int, ...]:
        """Confirmed slices prompted since the last completed propagation."""
        return tuple(sorted(self._prompts.pending))

    def slice_index_of(self, coordinates, space: str = "ras") -> int:
        """The slice (across the session's axis) that a point lies on."""
        clicks = [point_prompt(self._require_volume(), coordinates, space)]
        return self._require_plane().points_on_one_slice(clicks)[0]

    # --- prompts --------------------------------------------------------------------------------
    def add_point(self, coordinates, positive: bool = True, *, space: str = "ras", view_normal=None) -> Box | None:
        """Click on a slice (``coordinates`` in ``space``: "ras", "lps" or "ijk"); the slice is
        segmented at once. Returns the changed box of the buffer, or None."""
        return self.add_prompt(points=[coordinates], positive=[positive], space=space, view_normal=view_normal)

    def add_points(self, positives: Sequence = (), negatives: Sequence = (), *, space: str = "ras",
                   view_normal=None) -> Box | None:
        """Several clicks on one slice as one step (positives, then negatives)."""
        return self.add_prompt(points=[*positives, *negatives],
                               positive=[True] * len(positives) + [False] * len(negatives),
                               space=space, view_normal=view_normal)

    def add_box(self, corner_a, corner_b, *, space: str = "ras", view_normal=None) -> Box | None:
        """A box drawn on one slice, by two opposite corners."""
        return self.add_prompt(box=(corner_a, corner_b), space=space, view_normal=view_normal)

    def add_prompt(self, points: Sequence = (), positive: Sequence[bool] = (), box=None, space: str = "ras",
                   view_normal=None) -> Box | None:
        """Clicks and/or a box, all on one slice. Clicks add to earlier clicks on that slice; a
        box replaces an earlier box there."""
        volume = self._require_volume()
        history = self._require_history()
        if len(points) != len(positive):
            raise ValueError(f"{len(points)} points but {len(positive)} positive/negative flags")
        if not len(points) and box is None:
            raise ValueError("a prompt needs at least one point or a box")
        self._follow_view(view_normal)
        plane = self._require_plane()
        clicks = [point_prompt(volume, p, space, bool(flag)) for p, flag in zip(points, positive)]
        slice_index = box_xyxy = None
        if box is not None:
            corners = np.asarray(box, dtype=np.float64)
            if corners.shape != (2, 3):
                raise ValueError(f"a box is given as two corners of 3 coordinates, got shape {corners.shape}")
            slice_index, box_xyxy = plane.box_on_one_slice(box_prompt(volume, corners[0], corners[1], space))
        xy, labels = np.zeros((0, 2)), np.zeros(0, dtype=np.int32)
        if clicks:
            click_slice, xy, labels = plane.points_on_one_slice(clicks)
            if slice_index is not None and click_slice != slice_index:
                raise ValueError(f"the points lie on slice {click_slice} but the box on slice {slice_index} "
                                 f"(axis {plane.axis_name}); all prompts of one interaction lie on one slice")
            slice_index = click_slice
        earlier = self._prompts.confirmed.get(slice_index)
        if earlier is not None and earlier.prompt.mask is None:
            xy = np.concatenate([earlier.prompt.points_xy, xy])
            labels = np.concatenate([earlier.prompt.labels, labels])
            if box_xyxy is None:
                box_xyxy = earlier.prompt.box_xyxy
        prompt = SlicePrompt(points_xy=xy, labels=labels, box_xyxy=box_xyxy)
        return self._apply_prompt(slice_index, prompt, history)

    def add_mask(self, mask: np.ndarray, slice_index: int, *, view_normal=None) -> Box | None:
        """A mask drawn or edited on slice ``slice_index``: (rows, columns) of that slice,
        nonzero = object. It is written as given and conditions the model as SAM2's mask
        prompt does (an empty mask confirms that the object is absent there)."""
        self._require_history()
        self._follow_view(view_normal)
        plane = self._require_plane()
        mask = np.asarray(mask)
        if mask.shape != plane.slice_shape:
            raise ValueError(f"mask prompt of shape {mask.shape} does not match the slice shape "
                             f"{plane.slice_shape} (rows, columns) across axis {plane.axis_name}")
        if not isinstance(slice_index, (int, np.integer)) or not 0 <= slice_index < plane.num_slices:
            raise ValueError(f"slice {slice_index!r} lies outside the volume (slices 0..{plane.num_slices - 1} "
                             f"across axis {plane.axis_name})")
        return self._apply_prompt(int(slice_index), SlicePrompt(mask=mask != 0), self._history)

    def _apply_prompt(self, slice_index: int, prompt: SlicePrompt, history: MaskHistory) -> Box | None:
        plane, state = self._require_plane(), self._state
        earlier = self._prompts.confirmed.get(slice_index)
        previous_logits = earlier.mask_logits if earlier is not None else None
        previous_mask = None if earlier is not None else plane.take(history.buffer, slice_index)
        # The tracker reads the confirmed slices from its state; keep it equal to ours.
        state.conditioning = {t: c.memory for t, c in self._prompts.confirmed.items()}
        result = self.tracker.predict_prompt(state, slice_index, prompt, previous_logits, previous_mask)
        before = self._prompts
        confirmed = dict(before.confirmed)
        confirmed[slice_index] = _ConfirmedSlice(prompt, result.memory, result.mask_logits)
        # A mask the user drew is written as drawn; SAM2 would return it through its
        # low-resolution logits, which round off thin parts and corners.
        written = prompt.mask if prompt.mask is not None else result.mask
        if _only_removes(prompt):
            written = written & (plane.take(history.buffer, slice_index) > 0)
        history.begin("prompt", before)
        history.commit(plane.as_slab(written.astype(np.uint8)), plane.slab_box(slice_index, slice_index + 1))
        self._prompts = _Interactions(confirmed, before.pending | {slice_index})
        return history.end(self._prompts)  # a step even when no voxel changed

    # --- propagation ----------------------------------------------------------------------------
    def run(self, progress: ProgressCallback | None = None) -> RunOutcome:
        """Propagate from the slices prompted since the last propagation (see the module
        docstring). ``progress(slices_done, slices_total)`` is called after every slice; it may
        call :meth:`cancel`. Never raises on cancellation: see the outcome's ``completed``."""
        done, total, changed = 0, self._planned_total(), None
        steps = self.propagation_steps()
        try:
            for step in steps:
                done, total = step.slices_done, step.slices_total
                changed = union_boxes(changed, step.changed)
                if progress is not None:
                    progress(done, total)
        finally:
            steps.close()
        return RunOutcome(done == total, done, total, changed)

    def cancel(self) -> None:
        """Ask a running propagation to stop after the current slice (thread-safe)."""
        self._cancel.set()

    def propagation_steps(self) -> Iterator[PropagationProgress]:
        """The propagation as a generator, one step per slice written. Stopping early (by
        :meth:`cancel`, or by closing the generator) keeps the slices done so far."""
        history = self._require_history()
        plane, state = self._require_plane(), self._state
        runs = self._plan()
        total = sum(len(range(start + d, stop, d)) for start, d, stop in runs)
        self._cancel.clear()
        before = self._prompts
        state.conditioning = {t: c.memory for t, c in before.confirmed.items()}
        done = 0
        history.begin("propagate", before)
        try:
            for start, direction, stop in runs:
                last = start
                start_mask = plane.take(history.buffer, start) > 0
                removing = _only_removes(before.confirmed[start].prompt)
                for result in self.tracker.propagate(state, start, direction, stop, start_mask=start_mask):
                    mask = result.mask
                    if removing:
                        mask = mask & (plane.take(history.buffer, result.slice_index) > 0)
                    changed = self._write(history, plane, result.slice_index, mask)
                    done += 1
                    last = result.slice_index
                    yield PropagationProgress(done, total, result.slice_index, changed)
                    if self._cancel.is_set():
                        return
                # Stopped early: the object has ended, so older results beyond are cleared.
                for slice_index in range(last + direction, stop, direction):
                    changed = self._write(history, plane, slice_index, None)
                    done += 1
                    yield PropagationProgress(done, total, slice_index, changed)
                    if self._cancel.is_set():
                        return
        finally:
            if done == total and before.pending:  # completed: the pending slices are done
                self._prompts = _Interactions(before.confirmed)
                history.end(self._prompts)
            else:  # the prompts stay as they were: a step only if voxels changed
                history.end()

    def _plan(self) -> list[tuple[int, int, int]]:
        """Runs (start, direction, stop) covering the gaps next to pending confirmed slices."""
        confirmed = sorted(self._prompts.confirmed)
        pending = self._prompts.pending
        bounds = [-1, *confirmed, self._require_plane().num_slices]
        runs = []
        for low, high in itertools.pairwise(bounds):
            if high - low <= 1:
                continue
            if low in pending and high in pending:  # each side takes its half of the gap
                middle = (low + high) // 2
                runs += [(low, 1, middle + 1), (high, -1, middle)]
            elif low in pending:
                runs.append((low, 1, high))
            elif high in pending:
                runs.append((high, -1, low))
        return sorted(runs, key=lambda run: (run[0], -run[1]))

    def _planned_total(self) -> int:
        if self._plane is None or self._history is None:
            return 0
        return sum(len(range(start + d, stop, d)) for start, d, stop in self._plan())

    @staticmethod
    def _write(history: MaskHistory, plane: SlicePlane, slice_index: int, mask: np.ndarray | None) -> Box | None:
        values = np.zeros(plane.slice_shape, dtype=np.uint8) if mask is None else mask.astype(np.uint8)
        return history.commit(plane.as_slab(values), plane.slab_box(slice_index, slice_index + 1))

    # --- undo, redo, reset ------------------------------------------------------------------------
    def _no_prompts(self) -> _Interactions:
        return _Interactions()

    def _forget_interactions(self) -> None:
        self._prompts = self._no_prompts()
        if self._history is not None:
            self._history.clear()
        if self._state is not None:
            self._state.conditioning = {}

    # --- axis -----------------------------------------------------------------------------------
    def _follow_view(self, view_normal) -> None:
        """Slice across the axis of the view the user prompted in, if that is possible now."""
        if view_normal is None:
            return
        volume = self._require_volume()
        axis = slice_axis_for(volume, np.asarray(view_normal, dtype=np.float64))
        if axis == self._require_plane().index_axis:
            return
        if self._prompts.confirmed:
            raise ValueError(f"this prompt was made in a view across voxel axis {'ijk'[axis]}, but the session's "
                             f"prompts lie on slices across axis {self._plane.axis_name}; reset the session "
                             "to prompt in another view")
        self._check_slice_count(volume, axis)
        self._open_axis(axis)

    def _open_axis(self, axis: int) -> None:
        volume = self._require_volume()
        self._plane = SlicePlane(volume.shape_kji, axis)
        self._state = self.tracker.init_state(volume.array, self._plane, self._value_range)
        self._forget_interactions()

    @staticmethod
    def _check_slice_count(volume: Volume, axis: int) -> None:
        count = volume.shape_ijk[axis]
        if count < 2:
            raise ValueError(f"the volume has {count} slice across voxel axis {'ijk'[axis]} (shape (i, j, k) "
                             f"{volume.shape_ijk}); propagation needs at least 2 slices")

    # --- checks ---------------------------------------------------------------------------------
    def _require_plane(self) -> SlicePlane:
        self._require_volume()
        return self._plane


