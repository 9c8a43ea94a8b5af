"""The VolumetricSAM browser app: trame-slicer's Slicer views, a side panel, one controller.

Everything that segments goes through :class:`volsam.mrml.controller.InteractionController`
(the one the Slicer modules drive) and the method registry; this module only builds the page,
shows the image, forwards the panel's buttons and shows the controller's state. The views are
trame-slicer's: real Slicer slice and 3D views rendered on the server and streamed to the
page, with Slicer's own mouse interaction (scroll to change slice, right-drag to zoom,
middle-drag to pan) and markups placement, so a click in a view becomes a markups control
point that the controller observes. Window/level: a slider in the panel, or a left-drag in
a slice view in Slicer's window/level mouse mode.

Threads: trame runs one asyncio loop; every MRML and VTK call happens on it. Model work runs on
the controller's worker thread; a periodic task on the loop polls the controller, which applies
finished results to MRML there.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

from ..geometry import Volume
from .config import AppConfig

log = logging.getLogger(__name__)

#: How often the loop polls the controller for finished work (seconds).
POLL_INTERVAL_S = 0.05
#: Colour of the first segment (RGB 0..1; later segments get Slicer's default colours).
FIRST_SEGMENT_COLOUR = (0.95, 0.55, 0.1)
#: Placing-mode names of the panel -> the controller's prompt roles.
PROMPT_ROLES = ("positive", "negative", "box")
#: The segment representation the 3D view shows.
CLOSED_SURFACE = "Closed surface"
#: Window and level (HU) the demo phantom opens with.
DEMO_WINDOW_LEVEL = (400.0, 40.0)
EDIT_TOOLS = ("paint", "erase")
#: The desktop modules' shortcut actions (``volsam.mrml.shortcuts.SHORTCUTS``) -> a prompt role
#: to place, or a controller action: one key table for Slicer and the browser.
SHORTCUT_ACTIONS = {"placePositive": "positive", "placeNegative": "negative", "onNextSegment": "next_segment",
                    "onReset": "reset", "onUndo": "undo", "onRedo": "redo"}
#: The controller's methods that panel buttons call by name, without arguments.
CONTROLLER_ACTIONS = frozenset({"run_pending", "undo", "redo", "reset", "next_segment", "propagate",
                                "propagate_correction", "cancel"})


def one_line(error: BaseException) -> str:
    """An exception as the one line the page shows (never a traceback)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


@dataclass
class LoadedImage:
    """The opened image: engine volume (for saving on its grid) and its name."""

    volume: Volume
    name: str
    is_demo: bool


def load_image(config: AppConfig) -> LoadedImage:
    """The image the app opens: ``config.image`` through :mod:`volsam.io`, or the demo phantom."""
    if config.image is None:
        from ..phantoms import make_phantom

        image, _labels, _info = make_phantom(config.demo_seed)
        return LoadedImage(image, f"Demo phantom (seed {config.demo_seed})", True)
    from ..io import read_image

    path = Path(config.image)
    name = path.name[:-7] if path.name.endswith(".nii.gz") else path.stem
    return LoadedImage(read_image(path), name or "image", False)


def load_llvm_users_in_order() -> None:
    """Import triton (torch's compiler, which bundles LLVM) before VTK renders for the first time.

    With offscreen OSMesa, the first render loads Mesa's llvmpipe and its own LLVM; triton
    imported after that (torch imports it lazily, e.g. on the model thread) crashes the process
    with a segmentation fault. Imported first, both live side by side.
    """
    try:
        import triton  # noqa: F401
    except ImportError:  # no triton (a CPU-only torch build without it): nothing to order
        pass


def _view_marker(view_id: str) -> None:
    """An empty element next to a view's image that names the view (``data-view="Red"``), so a
    page test finds the view it clicks in."""
    from trame.widgets import html

    html.Div(raw_attrs=[f'data-view="{view_id}"'], style="display: none;")


def _slice_view_gutter(server, view_id, view) -> None:
    from trame_slicer.app.ui import create_vertical_slice_view_gutter_ui

    _view_marker(view.get_singleton_tag())
    create_vertical_slice_view_gutter_ui(server, view_id, view)


def _threed_view_gutter(server, view_id, view) -> None:
    from trame_slicer.app.ui import create_vertical_view_gutter_ui

    _view_marker(view.get_singleton_tag())
    create_vertical_view_gutter_ui(server, view_id, view)


class VolumetricSamApp:
    """One app: a Slicer scene with the image, a segmentation, the views and the panel."""

    def __init__(self, config: AppConfig, server=None):
        from trame.app import get_server
        from trame_slicer import module as trame_slicer_module
        from trame_slicer.core import LayoutManager, SlicerApp
        from trame_slicer.rca_view import register_rca_factories

        from ..methods import get_method, method_names
        from ..mrml.nodes import volume_node_from_volume

        get_method(config.method)  # a clear error for an unknown method before anything starts
        load_llvm_users_in_order()
        self.config = config
        self.method_names = method_names()
        self.server = server or get_server(None, client_type="vue3")
        self.server.enable_module(trame_slicer_module)
        self.state = self.server.state
        self.slicer = SlicerApp()
        self.scene = self.slicer.scene
        register_rca_factories(self.slicer.view_manager, self.server, slice_view_ui_f=_slice_view_gutter,
                               three_d_view_ui_f=_threed_view_gutter)
        self.layout_manager = LayoutManager(self.scene, self.slicer.view_manager, self.server)
        self.layout_manager.register_layout_dict(LayoutManager.default_grid_configuration())
        if not self.layout_manager.has_layout(config.layout):
            raise ValueError(f"unknown layout {config.layout!r}; expected one of "
                             f"{', '.join(self.layout_manager.get_layout_ids())}")
        self.layout_manager.set_layout(config.layout)

        self.image = load_image(config)
        self.volume_node = volume_node_from_volume(self.scene, self.image.volume, self.image.name)
        self._show_volume()
        self.editor = self.slicer.segmentation_editor
        self.segmentation_node = self.editor.create_empty_segmentation_node()
        self.segmentation_node.SetName(f"{self.image.name} segmentation")
        # No undo stack for trame-slicer's editor: its effects then push nothing onto a second
        # history; a paint stroke is recorded as one step of the controller's history instead.
        self.editor.set_undo_stack(None)
        self.editor.set_active_segmentation(self.segmentation_node, self.volume_node)
        # The 3D view shows segments as surfaces (rebuilt after each change: _keep_surfaces).
        self.editor.set_surface_representation_enabled(True)
        self._keep_surfaces()
        first = self.editor.add_empty_segment(segment_name="Lesion 1", segment_color=list(FIRST_SEGMENT_COLOUR))
        self.editor.set_active_segment_id(first)
        self.editor.active_segment_modifier.segmentation_modified.connect(self._on_segmentation_modified)
        from .editing import RECORD_ATTRIBUTE

        setattr(self.editor, RECORD_ATTRIBUTE, self._record_stroke)

        self.controller = None
        self._poll_task = None
        self._surfaces_queued = False
        self._view_sizes: dict[str, tuple] = {}
        #: How many times the controller's state changed (tests wait for a button's effect on it).
        self.controller_updates = 0
        self._init_state()
        self._build_ui()
        self.server.controller.on_server_ready.add(self._on_server_ready)
        self._refresh_segments()

    # --- the image and the views ---------------------------------------------------------------
    def _show_volume(self) -> None:
        if self.image.is_demo:  # a soft-tissue window shows the phantom's lesions
            self.volume_node.GetDisplayNode().AutoWindowLevelOff()
            self.volume_node.GetDisplayNode().SetWindowLevel(*DEMO_WINDOW_LEVEL)
        display = self.slicer.display_manager
        if self.config.volume_rendering:
            display.show_volume(self.volume_node, vr_preset="CT-Soft-Tissue", do_reset_views=True)
        else:
            display.show_volume_in_slice_background(self.volume_node)
            display.reset_views()

    def slice_view(self, orientation: str):
        """The slice view showing ``orientation`` ("Axial", "Coronal" or "Sagittal")."""
        for view in self.slicer.view_manager.get_slice_views():
            if view.get_orientation() == orientation:
                return view
        raise ValueError(f"no {orientation} view in the layout")

    # --- page state ----------------------------------------------------------------------------
    def _init_state(self) -> None:
        from ..devices import DEVICE_CHOICES

        state = self.state
        state.trame__title = "VolumetricSAM"
        state.setdefault("layout_id", self.config.layout)
        state.layout_ids = self.layout_manager.get_layout_ids()
        state.method = self.config.method
        state.methods = [{"value": name, "title": self._method_title(name)} for name in self.method_names]
        state.device = self.config.device
        state.devices = list(DEVICE_CHOICES)
        state.placing = None  # one of PROMPT_ROLES, or None
        state.tool = None  # one of EDIT_TOOLS, or None
        state.window_level_mode = False  # left-drag in a slice view sets window/level
        state.auto_run = True
        state.model_ready = False
        state.busy = False
        state.message = "Loading the model..."
        state.error = ""
        state.cpu_warning = ""
        state.weights_needed = ""
        state.progress_done = 0
        state.progress_total = 0
        state.can_undo = False
        state.can_redo = False
        state.confirmed_slices = []
        state.capabilities = []
        state.segments = []
        state.active_segment_id = ""
        state.saved_path = ""
        from .export import safe_stem

        state.image_name = self.image.name
        state.file_stem = safe_stem(self.image.name)  # downloads are named as saved files are
        state.scalar_range = [float(v) for v in self.volume_node.GetImageData().GetScalarRange()]
        state.display_range = self._display_range()
        state.change("layout_id")(self._on_layout_changed)
        state.change("method", "device")(self._on_model_choice_changed)
        state.change("auto_run")(self._on_auto_run_changed)
        state.change("display_range")(self._on_display_range_changed)

    def _display_range(self) -> list[float]:
        from trame_slicer.core import VolumeWindowLevel

        return [round(float(v), 1) for v in VolumeWindowLevel.get_volume_display_range(self.volume_node)]

    def _on_display_range_changed(self, display_range, **_):
        """Window/level from the panel's range slider (the grey values shown black to white)."""
        from trame_slicer.core import VolumeWindowLevel

        self._guard(lambda: VolumeWindowLevel.set_volume_node_display_min_max_range(self.volume_node, *display_range))

    def _method_title(self, name: str) -> str:
        from ..methods import get_method

        method = get_method(name)
        return f"{method.module_name} ({method.title})"

    def _on_layout_changed(self, layout_id, **_):
        self._guard(lambda: self.layout_manager.set_layout(layout_id))

    def show_error(self, message: str) -> None:
        with self.state:
            self.state.error = message

    def _guard(self, action):
        """Run a panel action; an exception becomes the page's one-line error message."""
        try:
            with self.state:
                self.state.error = ""
            return action()
        except Exception as error:  # the page shows it; the server keeps running
            log.debug("panel action failed", exc_info=True)
            self.show_error(one_line(error))
            return None

    # --- the controller ------------------------------------------------------------------------
    def _on_server_ready(self, **_):
        self._start_controller()
        self._poll_task = asyncio.ensure_future(self._poll_forever())

    def _fit_resized_views(self) -> None:
        """Fit each slice view to the image when the page gave it a new size: the views are made
        before the page lays them out, so a fit at start would fit a placeholder size."""
        for view in self.slicer.view_manager.get_slice_views():
            size = tuple(view.render_window().GetSize())
            if self._view_sizes.get(view.get_singleton_tag()) != size:
                self._view_sizes[view.get_singleton_tag()] = size
                view.fit_view_to_content()

    def fitted_size(self, view_tag: str) -> tuple | None:
        """The size (pixels) a slice view was last fitted at, or None before its first fit."""
        return self._view_sizes.get(view_tag)

    async def _poll_forever(self):
        while True:
            self._fit_resized_views()
            if self.controller is not None:
                try:
                    self.controller.poll(0.0)
                except Exception as error:
                    self.show_error(one_line(error))
            await asyncio.sleep(POLL_INTERVAL_S)

    def _start_controller(self) -> None:
        def start():
            from ..methods import SessionSettings, WeightsChoice, get_method
            from ..mrml.controller import InteractionController

            if self.controller is not None:
                self.controller.close()
                self.controller = None
            method = get_method(self.state.method)
            weights = WeightsChoice(weights=self.config.weights_for(method.name),
                                    sam_checkpoint=self.config.sam_checkpoint,
                                    sam2_checkpoint=self.config.sam2_checkpoint, from_cache=True)
            controller = InteractionController(self.scene, method)
            controller.add_listener(self._on_controller_state)
            self.controller = controller
            with self.state:
                self.state.capabilities = sorted(method.capabilities)
                self.state.message = f"Loading {method.title}..."
            controller.initialize(self.volume_node, self.segmentation_node, self.editor.active_segment_id,
                                  weights=weights, settings=SessionSettings(preset=self.config.preset),
                                  device=self.state.device)
            controller.auto_run = bool(self.state.auto_run)

        self._guard(start)

    def _on_model_choice_changed(self, **_):
        if self._poll_task is None:  # not started yet: the server-ready hook starts it
            return
        self._set_placing(None)
        self._start_controller()

    def _on_auto_run_changed(self, auto_run, **_):
        if self.controller is not None:
            self.controller.auto_run = bool(auto_run)

    def _on_controller_state(self, controller_state) -> None:
        from ..mrml.controller import CPU_WARNING

        self.controller_updates += 1
        with self.state:
            state = self.state
            state.model_ready = bool(controller_state.ready)
            state.busy = bool(controller_state.busy)
            state.message = controller_state.message or ""
            state.error = controller_state.error or ""
            done, total = controller_state.progress or (0, 0)
            state.progress_done, state.progress_total = int(done), int(total)
            state.can_undo = bool(controller_state.can_undo)
            state.can_redo = bool(controller_state.can_redo)
            state.confirmed_slices = [int(index) for index in controller_state.confirmed_slices]
            state.cpu_warning = CPU_WARNING if controller_state.cpu_warning else ""
            state.placing = controller_state.placing
            state.window_level_mode = self._in_window_level_mode()
            needed = controller_state.weights_needed
            state.weights_needed = "" if needed is None else f"{needed.entry.filename} ({needed.reason})"
        if controller_state.segment_id and controller_state.segment_id != self.editor.active_segment_id:
            self.editor.set_active_segment_id(controller_state.segment_id)
        self._refresh_segments()
        # The state may change in the middle of a write into the segment (the controller observes
        # the segmentation): rebuild the surfaces once that call is over, never inside it.
        if not self._surfaces_queued:
            self._surfaces_queued = True
            asyncio.get_event_loop().call_soon(self._keep_surfaces)

    def _keep_surfaces(self) -> None:
        """Rebuild the 3D surfaces when a write into the labelmap dropped them: a segment
        written in place invalidates its derived representations, and nothing in this scene
        (unlike the Slicer application's segment editor) asks for them again."""
        self._surfaces_queued = False
        if not self.segmentation_node.GetSegmentation().ContainsRepresentation(CLOSED_SURFACE):
            self.segmentation_node.CreateClosedSurfaceRepresentation()

    def _require_controller(self):
        if self.controller is None:
            raise ValueError("the model is not loaded yet (see the message above)")
        return self.controller

    # --- panel actions (each one call of the controller) --------------------------------------
    def _set_placing(self, role: str | None) -> None:
        """Place prompts of ``role`` with the mouse (None: leave placing)."""
        if role is None:
            if self.controller is not None:
                self.controller.stop_placing()
        else:
            if role not in PROMPT_ROLES:
                raise ValueError(f"unknown prompt kind {role!r}; expected one of {', '.join(PROMPT_ROLES)}")
            self._set_tool(None)
            self._require_controller().start_placing(role)
        with self.state:
            self.state.placing = role

    def _set_tool(self, tool: str | None) -> None:
        """Paint or erase in the selected segment with trame-slicer's brush (None: stop); each
        stroke becomes one step of the controller's history (:mod:`.editing`)."""
        from .editing import recorded_effects

        if tool is None:
            self.editor.deactivate_effect()
        else:
            if tool not in EDIT_TOOLS:
                raise ValueError(f"unknown tool {tool!r}; expected one of {', '.join(EDIT_TOOLS)}")
            self._require_controller()
            if self.state.placing is not None:
                self._set_placing(None)
            self.editor.set_active_effect_type(recorded_effects()[tool])
        with self.state:
            self.state.tool = tool

    def _record_stroke(self, labelmap, extent, erase: bool) -> None:
        """A finished paint or erase stroke -> one step of the controller's history."""
        from .editing import stroke_on_grid

        def record():
            stroke = stroke_on_grid(labelmap, extent, self.image.volume)
            if stroke is not None:
                brush, box = stroke
                self._require_controller().record_edit(brush, box, erase=erase, label="erase" if erase else "paint")

        self._guard(record)

    def _interaction_node(self):
        return self.scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")

    def _in_window_level_mode(self) -> bool:
        node = self._interaction_node()
        return node is not None and node.GetCurrentInteractionMode() == node.AdjustWindowLevel

    def toggle_window_level_mode(self) -> None:
        """Slicer's "Adjust window/level" mouse mode: a left-drag in a slice view sets window
        (left-right) and level (up-down), by Slicer's own widget, which acts in that mode only
        (``vtkMRMLWindowLevelWidget::CanProcessInteractionEvent``). Placing points or painting
        leaves it, as in Slicer."""

        def toggle():
            node = self._interaction_node()
            entering = not self._in_window_level_mode()
            if entering:
                self._set_tool(None)
                self._set_placing(None)
            node.SetCurrentInteractionMode(node.AdjustWindowLevel if entering else node.ViewTransform)
            with self.state:
                self.state.window_level_mode = entering

        self._guard(toggle)

    def toggle_placing(self, role: str) -> None:
        self._guard(lambda: self._set_placing(None if self.state.placing == role else role))

    def toggle_tool(self, tool: str) -> None:
        self._guard(lambda: self._set_tool(None if self.state.tool == tool else tool))

    def controller_action(self, name: str) -> None:
        """Call the controller's ``name``, one of :data:`CONTROLLER_ACTIONS` (the page sends the
        name; anything else is refused)."""
        def act():
            if name not in CONTROLLER_ACTIONS:
                raise ValueError(f"unknown action {name!r}; expected one of {', '.join(sorted(CONTROLLER_ACTIONS))}")
            getattr(self._require_controller(), name)()

        self._guard(act)

    def shortcut(self, key: str, ctrl: bool, shift: bool) -> None:
        """The desktop modules' keys (``volsam.mrml.shortcuts.SHORTCUTS``: P and N place points,
        Ctrl+Shift+N next segment, Ctrl+Shift+X reset, Ctrl+Z undo, Ctrl+Y or Ctrl+Shift+Z redo);
        other keys do nothing."""
        from ..mrml.shortcuts import SHORTCUTS

        pressed = (bool(ctrl), bool(shift), key.lower())
        for keys, _, widget_action in SHORTCUTS:
            *modifiers, letter = keys.split("+")
            if pressed == ("Ctrl" in modifiers, "Shift" in modifiers, letter.lower()):
                action = SHORTCUT_ACTIONS[widget_action]
                if action in PROMPT_ROLES:
                    self.toggle_placing(action)
                else:
                    self.controller_action(action)
                return

    def confirm_shown_slice(self) -> None:
        """Confirm the slice that the view across the propagation axis shows."""
        def confirm():
            controller = self._require_controller()
            controller.confirm_slice(controller.slice_index_in_view(controller.view_across_slicing_axis()))

        self._guard(confirm)

    def download_weights(self) -> None:
        """The user agreed to download the file the controller says is needed."""
        self._guard(lambda: self._require_controller().download_weights())

    # --- the segment list ----------------------------------------------------------------------
    def _on_segmentation_modified(self, *_):
        self._refresh_segments()

    def _refresh_segments(self) -> None:
        segmentation = self.segmentation_node.GetSegmentation()
        display = self.segmentation_node.GetDisplayNode()
        rows = []
        for index in range(segmentation.GetNumberOfSegments()):
            segment_id = segmentation.GetNthSegmentID(index)
            segment = segmentation.GetSegment(segment_id)
            colour = "#%02x%02x%02x" % tuple(int(round(255 * c)) for c in segment.GetColor())
            visible = bool(display.GetSegmentVisibility(segment_id)) if display is not None else True
            rows.append({"id": segment_id, "name": segment.GetName(), "color": colour, "visible": visible})
        with self.state:
            self.state.segments = rows
            self.state.active_segment_id = self.editor.active_segment_id

    def select_segment(self, segment_id: str) -> None:
        def select():
            self.editor.set_active_segment_id(segment_id)
            if self.controller is not None:
                self.controller.select_segment(self.segmentation_node, segment_id)
            self._refresh_segments()

        self._guard(select)

    def toggle_segment_visibility(self, segment_id: str) -> None:
        def toggle():
            display = self.segmentation_node.GetDisplayNode()
            display.SetSegmentVisibility(segment_id, not display.GetSegmentVisibility(segment_id))
            self._refresh_segments()

        self._guard(toggle)

    # --- saving and downloading ----------------------------------------------------------------
    def save(self, fmt: str):
        from .export import save_segmentation

        path = self._guard(lambda: save_segmentation(self.segmentation_node, self.image.volume,
                                                     self.config.save_dir, self.image.name, fmt))
        if path is not None:
            with self.state:
                self.state.saved_path = str(path)
                self.state.message = f"Saved {path}"
        return path

    def download(self, fmt: str):
        """The saved file's bytes as a trame attachment the page downloads."""
        import tempfile

        from .export import save_segmentation

        def attach():
            with tempfile.TemporaryDirectory() as folder:
                path = save_segmentation(self.segmentation_node, self.image.volume, folder, self.image.name, fmt)
                return self.server.protocol.addAttachment(path.read_bytes())

        return self._guard(attach)

    # --- the page ------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        from .page import build_page

        self.ui = build_page(self)

    # --- life cycle ----------------------------------------------------------------------------
    def close(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            self._poll_task = None
        if self.controller is not None:
            self.controller.close()
            self.controller = None


def serve(config: AppConfig, access, *, server_name: str | None = None, thread: bool = False,
          on_ready=None, announce=print) -> VolumetricSamApp:
    """Build the app and serve it on ``access`` (blocks until the server stops).

    ``on_ready(app, port)`` runs on the server's loop once it listens; ``announce`` gets the
    line with the URL to open.
    """
    from trame.app import get_server

    name = server_name or f"volsam-app-{next(_SERVER_NUMBERS)}"
    server = get_server(name, client_type="vue3")
    # trame reads its options from the command line unless TRAME_ARGS says otherwise; ours are
    # given here, and the secret a client must present is the access token.
    server.cli.set_defaults(authKey=access.secret)
    app = VolumetricSamApp(config, server=server)

    def ready(**_):
        port = server.port
        if announce is not None:
            announce(f"VolumetricSAM app: open {access.url(port)}")
        if on_ready is not None:
            on_ready(app, port)

    server.controller.on_server_ready.add(ready)
    server.start(port=access.port, host=access.host, open_browser=False, show_connection_info=False,
                 thread=thread, disable_logging=True)
    return app


#: Each app gets a trame server of its own name (trame keeps servers by name).
_SERVER_NUMBERS = itertools.count(1)
