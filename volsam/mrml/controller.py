"""The interaction controller: everything the SAMAdapt3D and SAM2Volume modules (and the browser
app) do between the user's clicks and the segment, written once, qt-free, tested on real MRML.

The Qt widgets and the browser app only wire their UI events to this object and show its
:class:`ControllerState`; they never call a session or write a segment themselves::

    controller = InteractionController(scene, method)          # method: a volsam.methods.Method
    controller.initialize(volume_node, weights=WeightsChoice("demo"), settings=SessionSettings())
    node = controller.prompt_node("positive")                  # the user places control points here
    ...                                                        # the main loop calls controller.poll(0.03)

* **Prompts** are markups nodes, one per role (:meth:`prompt_node`: "positive" and "negative"
  fiducials, "box", a ROI, for methods that take boxes). The controller observes them: a control
  point placed (``PointPositionDefinedEvent``) becomes a pending prompt; a ROI becomes a pending
  box when its placement ends (the interaction node leaves place mode, or an interaction with its
  handles ends) or at :meth:`run_pending`. With :attr:`auto_run` each placed prompt runs at once,
  otherwise prompts wait for :meth:`run_pending`.
* **One job at a time.** Every request (a prompt, a propagation, undo, a change of segment, ...)
  is queued and runs after the one before; model work runs on the one worker thread
  (:class:`~volsam.mrml.worker.ModelWorker`), MRML is read and written on the main thread only,
  before and after the job. The main thread calls :meth:`poll` (or :meth:`wait_idle`), which
  waits for the running job in a call that releases the GIL and then applies finished results.
  So state that the worker changes (the confirmed slices) is read only between jobs.
* **One history** (:class:`~volsam.mrml.interaction.SegmentInteraction`): every prompt, run and
  reset, and every edit made through the app (:meth:`record_edit`, e.g. a paint stroke), is one
  undo step; undo gives the segment back bit-exactly as it was before the step, painting
  included, and puts the prompts' markups back as they were (a box as a whole, centre, size and
  orientation). Painting with Slicer's Segment Editor is one undo step of its own ("edit in
  Segment Editor"), taken in before the next request (a prompt, an edit, undo, redo, reset, a
  change of segment) and whenever :meth:`poll` finds no job running: undo after a stroke takes the
  stroke away, bit-exactly, and redo brings it back. The controller observes the segmentation
  node so that :attr:`ControllerState.can_undo` shows such a stroke at once (it is taken in
  later, whole: one Segment Editor operation may modify the labelmap more than once).
* **Changes under a job**: a segment selected during a job is applied after it (the job's result
  lands in the segment it started on); a volume whose voxels or geometry change is reopened before
  the next prompt; a scene closed during a job cancels it and drops its result, and the
  controller lets go of every node.

Switching segment starts a new history (the session's prompts belong to the segment).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import vtk

from ..geometry import Box, closest_voxel_axis
from .interaction import SegmentInteraction
from .nodes import (
    PROMPT_COLORS,
    PROMPT_ROLE_ATTRIBUTE,
    box_prompt_from_roi,
    control_point_ras,
    matrix_from_vtk,
    node_to_world_matrix,
    nodes_by_class,
    prompt_markups_node,
    slice_normal_ras,
    slice_views_containing,
    volume_from_node,
)
from .prompt_markups import (
    POINT_ROLES,
    PromptMarkups,
    read_prompt_markups,
    roi_geometry,
    set_roi_geometry,
    write_prompt_markups,
)
from .segments import ensure_segment, set_reference_geometry
from .worker import JobProgress, ModelWorker, wait_for

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControllerState:
    """What a front end shows. ``ready``: a model and a volume are open; ``busy``: a job runs or
    waits; ``message``: one line for a status bar; ``error``: the last failure, one line (None
    after a success); ``progress``: (done, total) of the running job, None when it has none;
    ``segment_id``: the segment written into; ``device``/``cpu_warning``: where the model runs
    (the CPU warning stays visible); ``placing``: the prompt role being placed;
    ``pending_prompts``: prompts placed and not run yet; ``weights_needed``: a
    :class:`~volsam.weights.download.WeightsNeeded` to ask the user about (then
    :meth:`InteractionController.download_weights`); ``running``: the label of the running job
    (e.g. "Propagation"), None when none runs."""

    ready: bool = False
    busy: bool = False
    message: str = "Choose a volume and press Initialize."
    error: str | None = None
    progress: tuple[int, int] | None = None
    can_undo: bool = False
    can_redo: bool = False
    confirmed_slices: tuple[int, ...] = ()
    pending_slices: tuple[int, ...] = ()
    segment_id: str | None = None
    device: str | None = None
    cpu_warning: bool = False
    placing: str | None = None
    pending_prompts: int = 0
    weights_needed: Any = None
    description: str = ""
    running: str | None = None


CPU_WARNING = ("Running on the CPU: every click takes seconds (a propagation minutes). "
               "A CUDA GPU or Apple MPS is much faster.")


@dataclass
class _Job:
    """A job on the worker: ``apply(result)`` runs on the main thread when it is done."""

    future: Any
    label: str
    apply: Callable[[Any], None]
    fail: Callable[[BaseException], None] | None = None
    progress: JobProgress | None = None
    cancel: Callable[[], None] | None = None
    discarded: bool = False
    #: Say "<label>: cancelled." when a discarded job returns (not after a scene close, which
    #: said what happened already).
    report_discard: bool = True
    #: What to do with the result of a discarded job (e.g. close the session it opened).
    release: Callable[[Any], None] | None = None


@dataclass
class _Opened:
    """What initialize gives the main thread: the model, the session with its volume, and what
    it was opened with (to reuse the model when only the volume changes)."""

    loaded: Any
    session: Any
    volume: Any
    key: tuple


@dataclass
class _Initialize:
    """The arguments of :meth:`InteractionController.initialize` (kept to retry after a download)."""

    volume_node: Any
    segmentation_node: Any
    segment_id: str | None
    weights: Any
    settings: Any
    device: str


class InteractionController:
    """See the module docstring. ``scene``: the MRML scene; ``method``: a
    :class:`volsam.methods.Method`; ``worker``: a shared :class:`ModelWorker` (one is made and
    owned otherwise)."""

    def __init__(self, scene, method, worker: ModelWorker | None = None):
        self.scene = scene
        self.method = method
        self._owns_worker = worker is None
        self.worker = worker or ModelWorker(f"{method.module_name}-model")
        #: Each placed prompt runs at once; otherwise prompts wait for :meth:`run_pending`.
        self.auto_run = True
        #: Propagating methods: (first, last) slices the segment may change in; None: all.
        self.slice_range: tuple[int, int] | None = None
        #: Propagating methods: slice across the view the user prompted in (its normal is given
        #: to the session with each prompt).
        self.follow_view = False
        self._requests: deque[Callable[[], _Job | None]] = deque()
        self._job: _Job | None = None
        self._polling = False
        self._listeners: list[Callable[[ControllerState], None]] = []
        self._state = ControllerState()
        self._slices: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())
        self._message = self._state.message
        self._error: str | None = None
        self._weights_needed = None
        self._opened: _Opened | None = None
        self._interaction: SegmentInteraction | None = None
        self._volume_node = None
        self._volume_state = None
        self._segmentation_node = None
        self._segmentation_observations: list[tuple[Any, int]] = []
        self._last_initialize: _Initialize | None = None
        self._pending_points: list[tuple[str, str]] = []  # (role, control point id)
        self._committed = PromptMarkups()
        self._restoring = False
        self._prompt_nodes: dict[str, Any] = {}  # role -> markups node, observed
        self._prompt_observations: list[tuple[Any, int]] = []
        self._node_observations: list[tuple[Any, int]] = []
        self._scene_observations = [
            scene.AddObserver(scene.StartCloseEvent, self._on_scene_closing),
            scene.AddObserver(scene.NodeRemovedEvent, self._on_node_removed),
        ]
        self._interaction_node = scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
        self._selection_node = scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
        if self._interaction_node is not None:
            self._node_observations.append((self._interaction_node, self._interaction_node.AddObserver(
                self._interaction_node.InteractionModeChangedEvent, self._on_interaction_mode)))
        self._closed = False

    # --- state and listeners ------------------------------------------------------------------
    @property
    def state(self) -> ControllerState:
        return self._state

    def add_listener(self, callback: Callable[[ControllerState], None]) -> None:
        """``callback(state)`` on the main thread after every change of the state."""
        self._listeners.append(callback)

    def remove_listener(self, callback) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    @property
    def interaction(self) -> SegmentInteraction | None:
        """The session bound to the segment (None until initialized); read it between jobs."""
        return self._interaction

    @property
    def session(self):
        return None if self._opened is None else self._opened.session

    @property
    def volume(self):
        return None if self._opened is None else self._opened.volume

    @property
    def segmentation_node(self):
        return self._segmentation_node

    def _publish(self) -> None:
        interaction = self._interaction
        if self._job is None:
            self._read_slices()
        progress = None
        if self._job is not None and self._job.progress is not None:
            _, done, total = self._job.progress.snapshot()
            progress = (done, total) if total else None
        device = None if self._opened is None else self._opened.loaded.device
        state = ControllerState(
            ready=interaction is not None and interaction.target is not None,
            busy=self._job is not None or bool(self._requests),
            message=self._message, error=self._error, progress=progress,
            can_undo=interaction is not None and (interaction.can_undo or interaction.has_unrecorded_edits),
            can_redo=interaction is not None and interaction.can_redo,
            confirmed_slices=self._slices[0], pending_slices=self._slices[1],
            segment_id=interaction.segment_id if interaction is not None else None,
            device=None if device is None else str(device),
            cpu_warning=device is not None and getattr(device, "type", str(device)) == "cpu",
            placing=self._placing_role(), pending_prompts=len(self._pending_points) + (self._box_pending() is not None),
            weights_needed=self._weights_needed,
            description="" if self._opened is None else self._opened.loaded.description,
            running=None if self._job is None else self._job.label)
        if state != self._state:
            self._state = state
            for listener in list(self._listeners):
                try:
                    listener(state)
                except Exception:  # a front end's bug must not break the controller's bookkeeping
                    logger.exception(f"{self.method.module_name}: a state listener failed")

    def _read_slices(self) -> None:
        """Take the session's confirmed and pending slices. Only between jobs: the worker changes
        them during one."""
        session = self.session if self._interaction is not None else None
        if session is None or not self.method.propagates:
            self._slices = ((), ())
        else:
            self._slices = (tuple(session.confirmed_slices), tuple(session.pending_slices))

    def _say(self, message: str, error: str | None = None) -> None:
        self._message = message
        self._error = error
        if error:
            logger.warning(f"{self.method.module_name}: {error}")

    # --- the queue ----------------------------------------------------------------------------
    def _request(self, prepare: Callable[[], _Job | None], front: bool = False) -> None:
        if self._closed:
            raise RuntimeError("the controller was closed")
        if front:
            self._requests.appendleft(prepare)
        else:
            self._requests.append(prepare)
        self._pump()
        self._publish()

    def _pump(self) -> None:
        """Start queued requests while no job runs (main thread). A request either finishes here
        (MRML-only work) or hands a job to the worker."""
        while self._job is None and self._requests:
            prepare = self._requests.popleft()
            try:
                self._job = prepare()
            except Exception as error:  # one line for the user, the traceback in the log
                logger.debug("request failed", exc_info=True)
                self._say(f"Failed: {error}", str(error))

    def _submit(self, label: str, work: Callable[[], Any], apply: Callable[[Any], None],
                fail: Callable[[BaseException], None] | None = None, progress: JobProgress | None = None,
                cancel: Callable[[], None] | None = None) -> _Job:
        self._say(f"{label}...")
        return _Job(self.worker.submit(work), label, apply, fail, progress, cancel)

    def poll(self, timeout: float = 0.0) -> bool:
        """Main thread: wait up to ``timeout`` s for the running job (releasing the GIL), then
        apply it if it finished and start what is queued. True if a job finished."""
        if self._polling:  # called again from a listener or from events processed meanwhile
            return False
        self._polling = True
        try:
            job = self._job
            if job is None:
                self._take_in_edits()
                self._pump()
                return False
            if not wait_for(job.future, timeout):
                self._publish()  # progress
                return False
            self._job = None
            self._finish(job)
            self._read_slices()
            if self._job is None and not self._requests:
                self._take_in_edits()
            self._pump()
            return True
        finally:
            self._polling = False
            self._publish()

    def _take_in_edits(self) -> None:
        """Between jobs: painting made with Segment Editor since the last step becomes a step."""
        interaction = self._interaction
        if self._job is not None or interaction is None or interaction.target is None:
            return
        try:
            step = interaction.take_in_edits(self._committed)
        except ValueError:  # e.g. the segment was removed (SegmentGridError): the next request says so
            logger.debug("taking in an edit failed", exc_info=True)
            return
        if step is not None:
            self._say("Edit in Segment Editor: one undo step.")

    def _observe_segmentation(self, segmentation_node) -> None:
        """Observe the segmentation the history belongs to: a Segment Editor stroke shows as
        something to undo at once (:meth:`_on_segmentation_modified`)."""
        for node, tag in self._segmentation_observations:
            node.RemoveObserver(tag)
        self._segmentation_observations = []
        if segmentation_node is None:
            return
        from slicer import vtkSegmentation

        for event in (vtkSegmentation.SourceRepresentationModified, vtkSegmentation.SegmentModified):
            self._segmentation_observations.append(
                (segmentation_node, segmentation_node.AddObserver(event, self._on_segmentation_modified)))

    def _on_segmentation_modified(self, node, event) -> None:
        interaction = self._interaction
        if interaction is None or interaction.writing or self._polling:
            return
        self._publish()

    def _finish(self, job: _Job) -> None:
        try:
            result = job.future.result()
        except BaseException as error:
            if job.fail is not None and not job.discarded:
                try:
                    job.fail(error)
                except Exception as other:
                    error = other
                else:
                    return
            if not job.discarded:
                logger.error(f"{self.method.module_name}: {job.label} failed",
                             exc_info=(type(error), error, error.__traceback__))
                self._say(f"{job.label} failed: {error}", str(error))
            return
        if job.discarded:
            if job.release is not None:
                job.release(result)
            if job.report_discard:
                self._say(f"{job.label}: cancelled.")
            return
        try:
            job.apply(result)
        except Exception as error:
            logger.error(f"{self.method.module_name}: {job.label} failed", exc_info=True)
            self._say(f"{job.label} failed: {error}", str(error))

    def wait_idle(self, timeout: float | None = None) -> None:
        """Scripts and tests: poll until no job runs or is queued (TimeoutError after
        ``timeout`` s of waiting)."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self._job is not None or self._requests:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.method.module_name}: still busy after {timeout} s")
            self.poll(0.05)

    @property
    def busy(self) -> bool:
        return self._job is not None or bool(self._requests)

    def cancel(self) -> None:
        """Cancel the running job (a propagation stops after its current slice, keeping the
        slices done as one undo step; a loading or a download is dropped when it returns) and
        forget the queued requests."""
        self._requests.clear()
        job = self._job
        if job is not None:
            if job.progress is not None:
                job.progress.cancel.set()
            if job.cancel is not None:
                job.cancel()
            else:
                job.discarded = True
            self._say(f"Cancelling {job.label.lower()}...")
        self._publish()

    # --- initialize ---------------------------------------------------------------------------
    def initialize(self, volume_node, segmentation_node=None, segment_id: str | None = None, weights=None,
                   settings=None, device: str = "auto") -> None:
        """Load the model (or reuse it when only the volume changed) and open the volume on the
        worker; then bind the segment (a new segmentation when None, a new segment when
        ``segment_id`` is None or unknown). ``weights``: a :class:`volsam.methods.WeightsChoice`."""
        from ..methods import SessionSettings, WeightsChoice

        request = _Initialize(volume_node, segmentation_node, segment_id, weights or WeightsChoice("demo"),
                              settings or SessionSettings(), device)
        self._last_initialize = request
        self._request(lambda: self._start_initialize(request))

    def _start_initialize(self, request: _Initialize) -> _Job:
        if request.volume_node is None or request.volume_node.GetScene() is not self.scene:
            raise ValueError("choose a volume first")
        volume = volume_from_node(request.volume_node)
        segmentation = request.segmentation_node
        if segmentation is None or segmentation.GetScene() is not self.scene:
            segmentation = self.scene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", self.scene.GenerateUniqueName(f"{request.volume_node.GetName()} lesions"))
            segmentation.CreateDefaultDisplayNodes()
            set_reference_geometry(segmentation, volume)
            request.segmentation_node = segmentation
        key = (request.weights, request.device)
        previous = self._opened
        self._release_session()  # the old session holds the old volume; a new one is opened
        reuse = previous.loaded if previous is not None and previous.key == key else None
        method, settings = self.method, request.settings
        self._weights_needed = None

        def work() -> _Opened:
            from ..devices import resolve_device

            loaded = reuse or method.load_model(request.weights, resolve_device(request.device))
            session = method.open_session(loaded, method.checkpoint_settings(request.weights, settings))
            session.open_volume(volume)
            return _Opened(loaded, session, volume, key)

        def apply(opened: _Opened) -> None:
            if request.volume_node.GetScene() is not self.scene or segmentation.GetScene() is not self.scene:
                opened.session.close()
                raise ValueError("the volume or the segmentation was removed while loading")
            self._bind(opened, request.volume_node, segmentation, request.segment_id)
            self._say(f"Ready: {opened.loaded.description}.")

        def fail(error: BaseException) -> None:
            from ..weights.download import WeightsNeeded

            if not isinstance(error, WeightsNeeded):
                raise error
            self._weights_needed = error
            self._say(f"{error.entry.filename} is needed: {error.reason}.")

        job = self._submit("Loading the model and the volume", work, apply, fail, JobProgress("Loading"))
        job.release = lambda opened: opened.session.close()
        return job

    def _bind(self, opened: _Opened, volume_node, segmentation_node, segment_id) -> None:
        self._opened = opened
        self._volume_node = volume_node
        self._volume_state = _volume_state(volume_node)
        self._segmentation_node = segmentation_node
        interaction = SegmentInteraction(opened.session, opened.volume)
        interaction.set_segment(segmentation_node, ensure_segment(segmentation_node, segment_id, "Lesion"))
        self._interaction = interaction
        self._observe_segmentation(segmentation_node)
        self._observe_nodes()
        self._clear_prompt_markups()

    def download_weights(self) -> None:
        """Download the file :attr:`ControllerState.weights_needed` names (only after the user
        agreed to its licence), then initialize again."""
        needed = self._weights_needed
        if needed is None:
            return
        self._weights_needed = None
        self._request(lambda: self._start_download(needed.entry))

    def decline_weights(self) -> None:
        """The user declined the download :attr:`ControllerState.weights_needed` asked about."""
        needed, self._weights_needed = self._weights_needed, None
        if needed is not None:
            self._say(f"{needed.entry.filename} was not downloaded; choose another model.")
        self._publish()

    def report(self, message: str) -> None:
        """Show a front end's own one-line message in the state (e.g. setup cancelled)."""
        self._say(message)
        self._publish()

    def _start_download(self, entry) -> _Job:
        from ..weights.download import download

        progress = JobProgress(f"Downloading {entry.filename}")

        def report(done, total):
            progress.update(done, total or 0)

        def apply(result) -> None:
            note = (f" Its SHA256 was recorded now ({result.sha256}) and will be checked from now on."
                    if getattr(result, "recorded_now", False) else "")
            self._say(f"Downloaded {entry.filename}.{note}")
            if self._last_initialize is not None:
                request = self._last_initialize
                self._requests.appendleft(lambda: self._start_initialize(request))

        return self._submit(f"Downloading {entry.filename}", lambda: download(entry, None, report, progress.cancel),
                            apply, progress=progress, cancel=progress.cancel.set)

    def _require_ready(self) -> SegmentInteraction:
        if self._interaction is None or self._interaction.target is None:
            raise ValueError("press Initialize first")
        return self._interaction

    # --- prompt markups -----------------------------------------------------------------------
    def prompt_node(self, role: str):
        """The markups node the user places ``role`` prompts into ("positive", "negative",
        "box" for methods that take boxes); created on first use, observed from then on."""
        if role == "box" and "box" not in self.method.capabilities:
            raise ValueError(f"{self.method.title} takes points, not boxes")
        node = self._prompt_nodes.get(role)
        if node is not None and node.GetScene() is self.scene:
            return node
        node = prompt_markups_node(self.scene, self.method.module_name, role)
        self._prompt_nodes[role] = node
        if role == "box":  # a drawn ROI runs when its placement ends (see _on_interaction_mode)
            event, handler = node.PointEndInteractionEvent, self._on_box_interaction_end
        else:
            event, handler = node.PointPositionDefinedEvent, self._on_point_defined
        self._prompt_observations.append((node, node.AddObserver(event, handler)))
        return node

    @property
    def prompt_roles(self) -> tuple[str, ...]:
        return tuple(role for role in PROMPT_COLORS if role in POINT_ROLES or role in self.method.capabilities)

    def start_placing(self, role: str) -> None:
        """Put the views in place mode for ``role`` (a new box replaces the old one)."""
        node = self.prompt_node(role)
        if self._selection_node is None or self._interaction_node is None:
            raise ValueError("this scene has no interaction node to place prompts with")
        if role == "box":
            self._restoring = True
            try:
                node.RemoveAllControlPoints()  # a ROI holds one box; placing another needs it empty
            finally:
                self._restoring = False
        self._selection_node.SetReferenceActivePlaceNodeClassName(node.GetClassName())
        self._selection_node.SetActivePlaceNodeID(node.GetID())
        self._interaction_node.SetPlaceModePersistence(0 if role == "box" else 1)
        self._interaction_node.SetCurrentInteractionMode(self._interaction_node.Place)
        self._publish()

    def stop_placing(self) -> None:
        if self._interaction_node is not None:
            self._interaction_node.SetCurrentInteractionMode(self._interaction_node.ViewTransform)

    def _placing_role(self) -> str | None:
        node = self._interaction_node
        if node is None or self._selection_node is None or node.GetCurrentInteractionMode() != node.Place:
            return None
        active = self._selection_node.GetActivePlaceNodeID()
        for role, observed in self._prompt_nodes.items():
            if observed.GetID() == active:
                return role
        return None

    def _observed(self, role: str):
        """The prompt node of ``role`` if it exists and is observed, else None (no node is made)."""
        node = self._prompt_nodes.get(role)
        return node if node is not None and node.GetScene() is self.scene else None

    @staticmethod
    def _role_of(node) -> str:
        return node.GetAttribute(PROMPT_ROLE_ATTRIBUTE).partition(".")[2]

    def _on_point_defined(self, node, event) -> None:
        if self._restoring:
            return
        index = node.GetNumberOfControlPoints() - 1
        if index < 0:
            return
        role, point_id = self._role_of(node), node.GetNthControlPointID(index)
        if (role, point_id) in self._pending_points:
            return
        if self._interaction is None:
            self._say("Press Initialize first: this point is not used.", "press Initialize first")
            self._publish()
            return
        self._pending_points.append((role, point_id))
        self._prompt_placed()

    def _on_box_interaction_end(self, node, event) -> None:
        if not self._restoring:
            self._prompt_placed()

    def _on_interaction_mode(self, node, event) -> None:
        # A non-persistent placement (the box) ends by leaving place mode: the ROI is drawn.
        if not self._restoring and node.GetCurrentInteractionMode() != node.Place and self._box_pending() is not None:
            self._prompt_placed()
        self._publish()

    def _prompt_placed(self) -> None:
        if self.auto_run and self._interaction is not None:
            self.run_pending()
        else:
            self._publish()

    def _box_node(self):
        return self._observed("box")

    def _box_pending(self):
        """The ROI's geometry if it holds a drawn box that is not part of the history yet."""
        node = self._box_node()
        if node is None or self._interaction is None:
            return None
        geometry = roi_geometry(node)
        if geometry is None or sum(size > 0 for size in geometry[1]) < 2 or geometry == self._committed.box:
            return None
        return geometry

    def _live_prompt_nodes(self) -> dict:
        return {role: node for role, node in self._prompt_nodes.items() if node.GetScene() is self.scene}

    def _snapshot(self) -> PromptMarkups:
        return read_prompt_markups(self._live_prompt_nodes())

    def _restore_markups(self, markups: PromptMarkups | None) -> None:
        """Put the prompt markups back as ``markups`` says (their placement events are ignored)."""
        markups = markups or PromptMarkups()
        self._restoring = True
        try:
            write_prompt_markups(self._live_prompt_nodes(), markups)
        finally:
            self._restoring = False
        self._committed = markups
        self._pending_points = []

    def _clear_prompt_markups(self) -> None:
        self._restore_markups(PromptMarkups())

    # --- running prompts ----------------------------------------------------------------------
    def run_pending(self) -> None:
        """Run the prompts placed since the last run: a box first (with its own undo step), then
        the points, all of them as one step."""
        self._request(self._start_pending)

    def _start_pending(self) -> _Job | None:
        interaction = self._require_ready()
        reopen = self._reopen_if_volume_changed(self._start_pending)
        if reopen is not None:
            return reopen
        box = self._box_pending()
        if box is not None:
            job = self._start_box()
            if self._pending_points:
                self._requests.appendleft(self._start_pending)  # the points follow as their own step
            return job
        points = self._pending_point_positions()
        self._pending_points = []
        if not points:
            return None
        positives = [ras for role, ras in points if role == "positive"]
        negatives = [ras for role, ras in points if role == "negative"]
        normal = self._view_normal(points[-1][1])
        label = (f"{'positive' if positives else 'negative'} point" if len(points) == 1
                 else f"{len(points)} points")
        return self._start_step(label, lambda session: session.add_points(positives, negatives, view_normal=normal),
                                interaction, after=self._snapshot())

    def _pending_point_positions(self) -> list[tuple[str, np.ndarray]]:
        found = []
        for role, point_id in self._pending_points:
            node = self.prompt_node(role)
            index = node.GetNthControlPointIndexByID(point_id)
            if index >= 0 and node.GetNthControlPointPositionStatus(index) == node.PositionDefined:
                found.append((role, control_point_ras(node, index)))
        return found

    def _start_box(self) -> _Job:
        interaction = self._require_ready()
        node = self._box_node()
        normal = self._view_normal(np.array(node.GetCenterWorld()))
        volume = interaction.volume
        axis = closest_voxel_axis(volume, normal) if normal is not None else self.session.slice_axis
        try:
            prompt = box_prompt_from_roi(volume, node, axis)
        except ValueError:
            self._restoring = True  # a box outside the image goes; the points placed with it stay
            try:
                set_roi_geometry(node, self._committed.box)
            finally:
                self._restoring = False
            raise
        corners = volume.ijk_to_ras_points(np.array([prompt.min_ijk, prompt.max_ijk], float))
        after = replace(self._committed, box=roi_geometry(node))  # the points placed meanwhile come next
        return self._start_step("box", lambda session: session.add_box(corners[0], corners[1], view_normal=normal),
                                interaction, after=after)

    def _view_normal(self, position_ras):
        """The normal of the slice view a prompt at ``position_ras`` was placed in (None: keep the
        session's slicing), when :attr:`follow_view` is on."""
        if not (self.follow_view and self.method.propagates):
            return None
        tolerance = float(self.volume.spacing.min()) / 2
        views = slice_views_containing(position_ras, self._slice_nodes(), tolerance)
        return slice_normal_ras(views[0]) if views else None

    def _slice_nodes(self) -> list:
        """The slice views' nodes, Red, Yellow and Green first."""
        order = {"Red": 0, "Yellow": 1, "Green": 2}
        return sorted(nodes_by_class(self.scene, "vtkMRMLSliceNode"),
                      key=lambda node: order.get(node.GetLayoutName(), len(order)))

    def _write_limit(self) -> Box | None:
        if self.slice_range is None or not self.method.propagates:
            return None
        first, last = self.slice_range
        num_slices = self.session.num_slices
        if not 0 <= first <= last < num_slices:
            raise ValueError(f"the slice range {first}..{last} must lie within 0..{num_slices - 1}")
        return self._slab(first, last + 1)

    def _slab(self, first: int, stop: int) -> Box:
        """Slices ``first`` to ``stop`` (excluded) across the session's slicing axis, as a box."""
        start, end = [0, 0, 0], list(self.volume.shape_kji)
        array_axis = 2 - self.session.slice_axis  # index axis i, j, k -> array axis 2, 1, 0
        start[array_axis], end[array_axis] = first, stop
        return Box(start, end)

    def _start_step(self, label: str, call: Callable[[Any], Any], interaction: SegmentInteraction,
                    after: PromptMarkups | None = None, progress: JobProgress | None = None,
                    changed_box: Callable[[Any], Box | None] = lambda result: result,
                    done_message: Callable[[Any, Box | None], str] | None = None) -> _Job:
        """One session step on the worker, recorded in the history with the markups before
        (the committed ones) and ``after`` it."""
        write_limit = self._write_limit()
        before = self._committed
        after = before if after is None else after
        interaction.begin_step(before)
        session = interaction.session

        def apply(result) -> None:
            box = interaction.finish_step(changed_box(result), label, None, write_limit, before, after)
            self._committed = after
            message = done_message(result, box) if done_message else None
            self._say(message or f"{label.capitalize()}: {'segment updated' if box is not None else 'no change'}.")

        def fail(error: BaseException) -> None:
            interaction.abort_step()
            self._restore_markups(before)  # the prompt did not happen
            raise error

        cancel = session.cancel if progress is not None else None
        return self._submit(label.capitalize(), lambda: call(session), apply, fail, progress, cancel)

    # --- propagation (methods that propagate) -----------------------------------------------
    def propagate(self) -> None:
        """Propagate through the volume (within :attr:`slice_range` if set: empty confirmed
        slices just outside it stop the propagation there, each its own undo step)."""
        self._request(lambda: self._start_range_limits(lambda: self._start_run("propagation")))

    def propagate_correction(self) -> None:
        """Propagate from the slices confirmed since the last propagation, up to their
        neighbouring confirmed slices only."""
        def start():
            self._require_propagating()
            if not self.session.pending_slices:
                raise ValueError("confirm a corrected slice first")
            return self._start_range_limits(lambda: self._start_run("propagated correction"))
        self._request(start)

    def _require_propagating(self) -> SegmentInteraction:
        interaction = self._require_ready()
        if not self.method.propagates:
            raise ValueError(f"{self.method.title} does not propagate")
        return interaction

    def _start_range_limits(self, then: Callable[[], _Job | None]) -> _Job | None:
        self._require_propagating()
        if self.slice_range is None:
            return then()
        limits = range_boundary_slices(self.session.num_slices, self.session.confirmed_slices, *self.slice_range)
        self._requests.appendleft(then)
        for index in reversed(limits):
            self._requests.appendleft(lambda index=index: self._start_confirm(index, empty=True))
        return None

    def _start_run(self, label: str) -> _Job:
        interaction = self._require_propagating()
        progress = JobProgress(label.capitalize())

        def run(session):
            return session.run(progress=lambda done, total: progress.update(done, total))

        def message(outcome, box) -> str:
            if outcome.completed:
                return f"{label.capitalize()}: {outcome.units_done} slices."
            return (f"{label.capitalize()} cancelled after {outcome.units_done} of {outcome.units_total} slices "
                    "(they stay; Ctrl+Z undoes them).")

        return self._start_step(label, run, interaction, progress=progress,
                                changed_box=lambda outcome: outcome.changed, done_message=message)

    def confirm_slice(self, slice_index: int) -> None:
        """The segment on slice ``slice_index`` of the session's slicing axis, as the user left it
        (Segment Editor or clicks), becomes a confirmed slice."""
        self._request(lambda: self._start_confirm(int(slice_index)))

    def _start_confirm(self, slice_index: int, empty: bool = False) -> _Job:
        interaction = self._require_propagating()
        if not 0 <= slice_index < self.session.num_slices:
            raise ValueError(f"slice {slice_index} is outside 0..{self.session.num_slices - 1}")
        slab = self._slab(slice_index, slice_index + 1)
        mask = np.squeeze(interaction.current_mask(slab), axis=2 - self.session.slice_axis)
        if empty:
            mask, label = np.zeros_like(mask), f"range limit at slice {slice_index}"
        else:
            mask, label = mask.copy(), f"confirmed slice {slice_index}"
        return self._start_step(label, lambda session: session.add_mask(mask, slice_index), interaction)

    def slice_index_in_view(self, slice_node) -> int:
        """The index of the slice ``slice_node`` shows across the session's slicing axis."""
        from .nodes import slice_index_in_view

        self._require_propagating()
        return slice_index_in_view(self.volume, slice_node, self.session.slice_axis)

    def view_across_slicing_axis(self):
        """The first slice view (Red, Yellow, Green first) that shows slices across the session's axis."""
        self._require_propagating()
        for node in self._slice_nodes():
            if closest_voxel_axis(self.volume, slice_normal_ras(node)) == self.session.slice_axis:
                return node
        raise ValueError(f"no slice view shows slices across voxel axis {'ijk'[self.session.slice_axis]}; "
                         "set a view's orientation")

    # --- edits, undo, redo, reset -------------------------------------------------------------
    def record_edit(self, brush: np.ndarray, box: Box, erase: bool = False, label: str = "paint") -> None:
        """An edit made through the app (a paint or erase stroke of ``brush`` within ``box``,
        (k, j, i)): written into the segment as one undo step of the same history."""
        def run() -> None:
            interaction = self._require_ready()
            interaction.edit(np.asarray(brush), box, erase, label, self._committed)
            self._say(f"{label.capitalize()}.")
        self._request(run)

    def undo(self) -> None:
        """Undo the last step: the segment exactly as before it, and its prompts."""
        self._request(lambda: self._move("undo"))

    def redo(self) -> None:
        self._request(lambda: self._move("redo"))

    def _move(self, which: str) -> None:
        interaction = self._require_ready()
        step = interaction.undo(self._committed) if which == "undo" else interaction.redo(self._committed)
        if step is None:
            self._say(f"Nothing to {which}.")
            return
        self._restore_markups(step.state)
        self._say(f"{which.capitalize()}: {step.label}.")
        return

    def reset(self) -> None:
        """Clear the prompts and the segment, as one undo step."""
        def run() -> None:
            interaction = self._require_ready()
            interaction.reset(state_before=self._committed, state_after=PromptMarkups())
            self._clear_prompt_markups()
            self._say("Reset: prompts and segment cleared (undo brings them back).")
        self._request(run)

    # --- segments -----------------------------------------------------------------------------
    def select_segment(self, segmentation_node, segment_id: str) -> None:
        """Work on another segment from now on (after the running job: its result goes into the
        segment it started on). The history starts over."""
        def run() -> None:
            interaction = self._require_ready()
            if interaction.target.node is not segmentation_node or interaction.segment_id != segment_id:
                self._select_now(segmentation_node, segment_id)
        self._request(run)

    def next_segment(self) -> None:
        """Move on to the segment after the current one, or a new segment after the last."""
        def run() -> None:
            interaction = self._require_ready()
            segmentation = interaction.target.node
            ids = list(segmentation.GetSegmentation().GetSegmentIDs())
            position = ids.index(interaction.segment_id) if interaction.segment_id in ids else len(ids) - 1
            following = ids[position + 1] if position + 1 < len(ids) else ensure_segment(segmentation, None, "Lesion")
            self._requests.appendleft(lambda: self._select_now(segmentation, following))
        self._request(run)

    def _select_now(self, segmentation_node, segment_id) -> None:
        interaction = self._require_ready()
        interaction.set_segment(segmentation_node, segment_id)
        self._segmentation_node = segmentation_node
        self._observe_segmentation(segmentation_node)
        self._clear_prompt_markups()
        self._say(f"Working on segment '{interaction.target.name}'.")

    # --- the volume, the scene ----------------------------------------------------------------
    def _reopen_if_volume_changed(self, then) -> _Job | None:
        """When the volume's voxels or geometry changed since they were opened: open it again
        (the history starts over) and run ``then`` afterwards."""
        if self._volume_node is None or _volume_state(self._volume_node) == self._volume_state:
            return None
        interaction = self._require_ready()
        volume = volume_from_node(self._volume_node)
        session = interaction.session
        segmentation, segment_id = interaction.target.node, interaction.segment_id
        self._requests.appendleft(then)

        def apply(_) -> None:
            self._opened = replace(self._opened, volume=volume)
            self._volume_state = _volume_state(self._volume_node)
            self._interaction = SegmentInteraction(session, volume)
            self._interaction.set_segment(segmentation, segment_id)
            self._committed = PromptMarkups()  # the prompts before belong to the old history
            self._say("The volume changed: it was sent to the model again (undo starts over).")

        return self._submit("Reopening the changed volume", lambda: session.open_volume(volume), apply)

    def _on_scene_closing(self, caller=None, event=None, message: str = "The scene was closed") -> None:
        """The scene is closing (or a node the controller works on goes): cancel, drop the
        running job's result, forget the queue and every node."""
        self._requests.clear()
        job = self._job
        if job is not None:
            job.discarded, job.report_discard = True, False
            if job.cancel is not None:
                job.cancel()
            session = self.session
            job.release = lambda _result: session is not None and session.close()
        else:
            self._release_session()
        self._forget_nodes()
        self._say(f"{message}: press Initialize again.")
        self._publish()

    def _on_node_removed(self, scene, event) -> None:
        # A removed node has no scene any more (the event's node needs calldata; this is simpler).
        for node in (self._volume_node, self._segmentation_node):
            if node is not None and node.GetScene() is None:
                self._on_scene_closing(message=f"'{node.GetName()}' was removed")
                return

    def _forget_nodes(self) -> None:
        for node, tag in self._prompt_observations:
            node.RemoveObserver(tag)
        self._prompt_observations = []
        self._observe_segmentation(None)
        self._prompt_nodes = {}
        self._pending_points = []
        self._committed = PromptMarkups()
        self._interaction = None
        self._volume_node = None
        self._volume_state = None
        self._segmentation_node = None
        self._last_initialize = None
        if self._job is None:
            self._opened = None

    def _release_session(self) -> None:
        if self._opened is not None:
            self._opened.session.close()
        self._interaction = None

    def _observe_nodes(self) -> None:
        for role in self.prompt_roles:
            self.prompt_node(role)

    def close(self) -> None:
        """Cancel, stop the worker (a daemon: nothing waits for a running job), release the
        session and every observer."""
        if self._closed:
            return
        self.cancel()
        if self._job is not None:
            self._job.discarded = True
        self._forget_nodes()
        if self._job is None and self._opened is not None:
            self._opened.session.close()
        self._opened = None
        for tag in self._scene_observations:
            self.scene.RemoveObserver(tag)
        for node, tag in self._node_observations:
            node.RemoveObserver(tag)
        self._node_observations = []
        self._listeners = []
        if self._owns_worker:
            self.worker.shutdown()
        self._closed = True


# --- helpers ----------------------------------------------------------------------------------
def _volume_state(volume_node):
    """What a session depends on: the voxels and where they are in the world (not display
    settings, which also modify the node)."""
    image = volume_node.GetImageData()
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    return (volume_node.GetID(), image.GetMTime() if image is not None else 0,
            tuple(matrix_from_vtk(ijk_to_ras).ravel()), tuple(node_to_world_matrix(volume_node).ravel()))


def range_boundary_slices(num_slices: int, confirmed, first: int, last: int) -> list[int]:
    """Slices to confirm as empty so that propagation stays within ``first..last``.

    Propagation never crosses a confirmed slice, so an empty confirmed slice just outside each
    end of the range stops it there; writes into the segment are limited to the range, so these
    empty slices never reach it.
    """
    if not 0 <= first <= last < num_slices:
        raise ValueError(f"the slice range {first}..{last} must lie within 0..{num_slices - 1}")
    return [index for index in (first - 1, last + 1) if 0 <= index < num_slices and index not in set(confirmed)]
