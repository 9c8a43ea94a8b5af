"""A stand-in method for the interaction controller's tests, where the model does not matter.

:class:`BlobSession` implements the session protocol (:mod:`volsam.sessions.protocol`) with
plain numpy: a positive click adds a ball of ``radius_mm`` around the clicked voxel, a negative
click removes one; a box fills its rectangle on its slice; a mask prompt confirms a slice; ``run``
"propagates" by copying onto every other slice the nearest confirmed slice that holds a mask,
never across another confirmed slice, one slice per unit, reporting progress and honouring
``cancel`` (``unit_gate`` holds each unit after the first ``hold_after``). It keeps its prompts in the session base's history,
so its undo and redo behave as the real sessions' do (every prompt, run and reset one step).

``gate`` (a :class:`threading.Event`, open by default) holds every model call until it is set:
tests close it to have a job running while they change the scene.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from volsam.geometry import Box, Volume, closest_voxel_axis
from volsam.methods import LoadedModel, Method
from volsam.sessions.history import MaskHistory
from volsam.sessions.protocol import RunOutcome, Session


@dataclass(frozen=True)
class _Prompts:
    clicks: tuple = ()
    confirmed: frozenset = frozenset()
    pending: frozenset = frozenset()


class BlobSession(Session):
    method = "stand-in"

    def __init__(self, capabilities=frozenset({"points", "box", "mask", "propagate"}), radius_mm: float = 6.0):
        self.capabilities = frozenset(capabilities)
        self.radius_mm = radius_mm
        self.gate = threading.Event()
        self.gate.set()
        self.unit_gate = threading.Event()
        self.unit_gate.set()
        self.hold_after = 0
        self.closed = False
        self.calls: list[str] = []
        self.working = False  # a model call is running (on the worker thread)
        self.slices_read_while_working = 0
        self._cancel = threading.Event()
        self._volume: Volume | None = None
        self._history = None
        self._prompts = _Prompts()
        self._axis = 2

    # --- protocol: volume and buffer ---------------------------------------------------------
    def open_volume(self, volume: Volume, target_buffer=None) -> None:
        self.gate.wait()
        self.calls.append("open_volume")
        self._volume = volume
        self.set_target_buffer(np.zeros(volume.shape_kji, np.uint8) if target_buffer is None else target_buffer)

    def set_target_buffer(self, buffer) -> None:
        self._history = MaskHistory(buffer)
        self._prompts = _Prompts()

    @property
    def volume(self):
        return self._volume

    def _no_prompts(self):
        return _Prompts()

    def _require_history(self) -> MaskHistory:
        if self._history is None:
            raise ValueError("no volume open")
        return self._history

    # --- slicing (the propagation session's extras) ------------------------------------------
    @property
    def slice_axis(self) -> int:
        return self._axis

    @property
    def num_slices(self) -> int:
        return self._volume.shape_ijk[self._axis]

    @property
    def confirmed_slices(self):
        self.slices_read_while_working += self.working
        return tuple(sorted(self._prompts.confirmed))

    @property
    def pending_slices(self):
        self.slices_read_while_working += self.working
        return tuple(sorted(self._prompts.pending))

    def slice_index_of(self, ras) -> int:
        return int(round(self._volume.ras_to_ijk_points(np.asarray(ras, float))[self._axis]))

    def _follow(self, view_normal) -> None:
        if view_normal is not None:
            self._axis = closest_voxel_axis(self._volume, view_normal)

    # --- prompts ------------------------------------------------------------------------------
    def _step(self, label: str, change, prompts: _Prompts) -> Box | None:
        self.working = True
        try:
            self.gate.wait()
            self.calls.append(label)
            history = self._require_history()
            history.begin(label, self._prompts)
            change(history)
            self._prompts = prompts
            return history.end(prompts)
        finally:
            self.working = False

    def add_points(self, positives=(), negatives=(), *, space="ras", view_normal=None) -> Box | None:
        self._follow(view_normal)
        clicks = [(np.asarray(r, float), True) for r in positives] + [(np.asarray(r, float), False) for r in negatives]

        def change(history):
            for ras, positive in clicks:
                ball, box = self._ball(ras)
                current = history.buffer[box.slices].astype(bool)
                history.commit((current | ball) if positive else (current & ~ball), box)

        confirmed = self._prompts.confirmed
        pending = self._prompts.pending
        if "propagate" in self.capabilities and clicks:
            index = self.slice_index_of(clicks[-1][0])
            confirmed, pending = confirmed | {index}, pending | {index}
        prompts = _Prompts(self._prompts.clicks + tuple((tuple(r), p) for r, p in clicks), confirmed, pending)
        return self._step("points", change, prompts)

    def _ball(self, ras) -> tuple[np.ndarray, Box]:
        volume = self._volume
        centre = np.round(volume.ras_to_ijk_points(ras)[::-1]).astype(int)
        reach = np.ceil(self.radius_mm / volume.spacing[::-1]).astype(int)
        box = Box(centre - reach, centre + reach + 1).clip_to(volume.shape_kji)
        k, j, i = np.indices(box.shape)
        ijk = np.stack([i + box.start[2], j + box.start[1], k + box.start[0]], -1).reshape(-1, 3).astype(float)
        near = np.linalg.norm(volume.ijk_to_ras_points(ijk) - ras, axis=1) <= self.radius_mm
        if "propagate" in self.capabilities:  # a slice prompt: only the clicked slice
            index = self.slice_index_of(ras)
            on_slice = (np.stack([i, j, k], -1).reshape(-1, 3)[:, self._axis] + box.start[2 - self._axis]) == index
            near &= on_slice
        return near.reshape(box.shape), box

    def add_box(self, corner_a, corner_b, *, space="ras", view_normal=None) -> Box | None:
        if "box" not in self.capabilities:
            return super().add_box(corner_a, corner_b, view_normal=view_normal)
        self._follow(view_normal)
        ijk = self._volume.ras_to_ijk_points(np.array([corner_a, corner_b], float))
        low, high = np.round(ijk.min(axis=0)).astype(int), np.round(ijk.max(axis=0)).astype(int)
        box = Box(low[::-1], high[::-1] + 1).clip_to(self._volume.shape_kji)
        index = int(low[self._axis])

        def change(history):
            history.commit(np.ones(box.shape, np.uint8), box)

        prompts = _Prompts(self._prompts.clicks, self._prompts.confirmed | {index}, self._prompts.pending | {index})
        return self._step("box", change, prompts)

    def add_mask(self, mask, slice_index: int, *, view_normal=None) -> Box | None:
        if "mask" not in self.capabilities:
            return super().add_mask(mask, slice_index, view_normal=view_normal)
        slab = self._slab(slice_index)

        def change(history):
            history.commit(np.expand_dims(np.asarray(mask, np.uint8), 2 - self._axis), slab)

        prompts = _Prompts(self._prompts.clicks, self._prompts.confirmed | {slice_index},
                           self._prompts.pending | {slice_index})
        return self._step("mask", change, prompts)

    def _slab(self, index: int) -> Box:
        start, stop = [0, 0, 0], list(self._volume.shape_kji)
        start[2 - self._axis], stop[2 - self._axis] = index, index + 1
        return Box(start, stop)

    # --- run ----------------------------------------------------------------------------------
    def run(self, progress=None) -> RunOutcome:
        if "propagate" not in self.capabilities:
            return super().run(progress)
        self.working = True
        try:
            return self._run(progress)
        finally:
            self.working = False

    def _run(self, progress) -> RunOutcome:
        self.gate.wait()
        self.calls.append("run")
        self._cancel.clear()
        history = self._require_history()
        confirmed = sorted(self._prompts.confirmed)
        targets = [index for index in range(self.num_slices) if index not in confirmed] if confirmed else []
        history.begin("run", self._prompts)
        done = 0
        for index in targets:
            if done >= self.hold_after:
                self.unit_gate.wait()
            if self._cancel.is_set():
                break
            history.commit(self._propagated(index, confirmed, history.buffer), self._slab(index))
            done += 1
            if progress is not None:
                progress(done, len(targets))
        completed = done == len(targets)
        if completed:
            self._prompts = _Prompts(self._prompts.clicks, self._prompts.confirmed, frozenset())
        return RunOutcome(completed, done, len(targets), history.end(self._prompts))

    def _propagated(self, index: int, confirmed, buffer) -> np.ndarray:
        """The mask slice ``index`` gets: the nearest confirmed slice with a mask that no other
        confirmed slice separates from it; nothing when there is none."""
        below = [c for c in confirmed if c < index]
        above = [c for c in confirmed if c > index]
        sources = ([max(below)] if below else []) + ([min(above)] if above else [])
        masks = [(abs(c - index), buffer[self._slab(c).slices]) for c in sources]
        masks = [(distance, mask) for distance, mask in masks if mask.any()]
        if not masks:
            return np.zeros(self._slab(index).shape, np.uint8)
        return min(masks, key=lambda item: item[0])[1].copy()

    def cancel(self) -> None:
        self._cancel.set()

    def close(self) -> None:
        self.closed = True
        super().close()


class StandInMethod(Method):
    """A registry entry for :class:`BlobSession` (the model is irrelevant: ``load_model`` gives
    none). ``loads`` counts model loads; ``load_gate`` holds them like the session's gate."""

    name = "stand-in"
    title = "Stand-in"
    checkpoint_kinds = ()
    demo_filename = ""

    def __init__(self, module_name: str = "StandIn", capabilities=("points", "box", "mask", "propagate")):
        self.module_name = module_name
        self.capabilities = frozenset(capabilities)
        self.sessions: list[BlobSession] = []
        self.loads = 0
        self.load_gate = threading.Event()
        self.load_gate.set()
        self.load_error: BaseException | None = None

    def load_model(self, choice, device) -> LoadedModel:
        self.load_gate.wait()
        if self.load_error is not None:
            error, self.load_error = self.load_error, None
            raise error
        self.loads += 1
        return LoadedModel(self, None, device, "a stand-in")

    def open_session(self, loaded, settings=None) -> BlobSession:
        session = BlobSession(self.capabilities)
        self.sessions.append(session)
        return session

    def checkpoint_detectors(self) -> tuple:
        return ()
