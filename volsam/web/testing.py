"""Running the app and a headless browser from tests and benchmarks.

:class:`RunningApp` serves the app on 127.0.0.1 (a free port) in a thread of this process, so
a test can both click in the page and look at the server's MRML scene: :meth:`RunningApp.call`
runs a function on the server's loop thread, where all MRML and VTK work happens.
:func:`launch_chromium` starts the system's Chromium through playwright (no browser download).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import threading
import time

import numpy as np

from .access import access_for
from .config import AppConfig

#: Chromium flags: headless, software rendering, nothing that reaches the network.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run")
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium_path() -> str | None:
    """The system's Chromium executable, or None."""
    found = os.environ.get("VOLSAM_CHROMIUM")
    if found:
        return found if os.path.exists(found) else None
    for candidate in CHROMIUM_CANDIDATES:
        if os.path.exists(candidate):
            return candidate
    return shutil.which("chromium")


def missing_browser_tools() -> str | None:
    """Why the browser tests cannot run here (a sentence), or None when they can."""
    for module in ("trame", "trame_slicer", "playwright"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e '.[web,test]')"
    if chromium_path() is None:
        return "no Chromium found (apt-get install chromium, or set VOLSAM_CHROMIUM)"
    return None


def offscreen_rendering() -> None:
    """Render VTK windows with OSMesa (no display, no GPU), as trame-slicer's CI does."""
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkOSOpenGLRenderWindow")


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=chromium_path(), args=list(CHROMIUM_ARGS), headless=True)


class RunningApp:
    """The app served in a background thread; use as a context manager."""

    def __init__(self, config: AppConfig | None = None, host: str = "127.0.0.1", token: str | None = None,
                 start_timeout_s: float = 180.0):
        self.config = config or AppConfig()
        self.access = access_for(host, 0, token)
        self.start_timeout_s = start_timeout_s
        self.app = None
        self.port = None
        self._loop = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="volsam-app", daemon=True)

    @property
    def url(self) -> str:
        return self.access.url(self.port).replace(self.access.host, "127.0.0.1", 1)

    def _serve(self) -> None:
        from .app import serve

        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)

        def ready(app, port):
            self.app, self.port = app, port
            self._ready.set()

        try:
            serve(self.config, self.access, thread=True, on_ready=ready, announce=None)
        except BaseException as error:  # reported to the test thread by __enter__
            self._failure = error
            self._ready.set()

    def __enter__(self) -> RunningApp:
        offscreen_rendering()
        self._thread.start()
        if not self._ready.wait(self.start_timeout_s):
            raise TimeoutError(f"the app did not start within {self.start_timeout_s:.0f} s")
        if self._failure is not None:
            raise RuntimeError(f"the app failed to start: {self._failure}") from self._failure
        return self

    def call(self, function, timeout: float = 120.0):
        """``function(app)`` run on the server's loop thread; its result (or exception)."""
        result: concurrent.futures.Future = concurrent.futures.Future()

        def run():
            try:
                result.set_result(function(self.app))
            except BaseException as error:
                result.set_exception(error)

        self._loop.call_soon_threadsafe(run)
        return result.result(timeout)

    def wait_until(self, condition, timeout: float = 120.0, what: str = "the condition"):
        """Poll ``condition(app)`` on the loop thread until it is true (generous waits: a loaded
        machine is slow, and nothing here measures speed)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.call(condition)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:.0f} s for {what}")
            time.sleep(0.1)

    def __exit__(self, *exc_info) -> None:
        if self._loop is None or not self._thread.is_alive():
            return
        try:
            self.call(lambda app: app.close(), timeout=60)
        finally:
            future = asyncio.run_coroutine_threadsafe(self.app.server.stop(), self._loop)
            try:
                future.result(30)
            except Exception:
                pass
            self._thread.join(30)


def view_area(page, view_tag: str):
    """The page element a view's image is streamed into (where a user clicks)."""
    return page.locator(f"div:has(> [data-view='{view_tag}']) > .remote-controlled-area")


def wait_view_settled(running: RunningApp, page, view_tag: str, timeout: float = 120.0) -> None:
    """Wait until a slice view has the size the page gives it and was fitted at that size (on a
    loaded machine the page lays out late, and a fit after aiming would move the target)."""
    def sizes(app):
        return tuple(app.slicer.view_manager.get_view(view_tag).render_window().GetSize()), app.fitted_size(view_tag)

    deadline = time.monotonic() + timeout
    while True:
        box = view_area(page, view_tag).bounding_box()  # playwright: on this thread only
        size, fitted = running.call(sizes)
        if (box is not None and abs(size[0] - box["width"]) <= 1 and abs(size[1] - box["height"]) <= 1
                and fitted == size):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the {view_tag} view did not settle within {timeout:.0f} s")
        time.sleep(0.1)


def page_position_of_ras(running: RunningApp, page, view_tag: str, ras) -> tuple[float, float]:
    """Where on the page a slice view shows the RAS point ``ras`` (which must lie on its plane):
    the view's XY-to-RAS matrix inverted, VTK's bottom-up rows turned into the page's top-down."""
    import numpy as np

    wait_view_settled(running, page, view_tag)

    def display_xy(app):
        from ..mrml.nodes import matrix_from_vtk

        view = app.slicer.view_manager.get_view(view_tag)
        xy = np.linalg.inv(matrix_from_vtk(view.get_view_node().GetXYToRAS())) @ np.append(np.asarray(ras, float), 1.0)
        return float(xy[0]), float(xy[1]), tuple(view.render_window().GetSize())

    x, y, (width, height) = running.call(display_xy)
    box = view_area(page, view_tag).bounding_box()
    return box["x"] + (x + 0.5) * box["width"] / width, box["y"] + (height - y - 0.5) * box["height"] / height


def click_at_ras(running: RunningApp, page, view_tag: str, ras) -> tuple[float, float]:
    """Show ``ras``'s slice in the view and click there with the mouse; returns the page position."""
    def show(app):
        view = app.slicer.view_manager.get_view(view_tag)
        normal = np.asarray(view.get_view_node().GetSliceToRAS().MultiplyPoint((0, 0, 1, 0))[:3])
        view.set_slice_value(float(np.dot(normal, ras)))

    running.call(show)
    page.wait_for_timeout(300)  # the page shows the new slice (a settle, not a speed check)
    x, y = page_position_of_ras(running, page, view_tag, ras)
    page.mouse.move(x, y)
    page.mouse.click(x, y)
    return x, y


def segment_mask(app):
    """The selected segment as a uint8 (k, j, i) mask on the image's grid (run on the loop thread)."""
    from ..mrml.segments import SegmentOnGrid

    return SegmentOnGrid(app.segmentation_node, app.editor.active_segment_id, app.image.volume).read()


def wait_idle(running: RunningApp, timeout: float = 300.0) -> None:
    """Wait until the controller has no job running or queued."""
    running.wait_until(lambda app: app.controller is not None and not app.controller.state.busy, timeout,
                       "the controller to finish its jobs")


def page_position_in_3d(running: RunningApp, page, world_ras) -> tuple[float, float]:
    """Where on the page the 3D view shows the RAS point ``world_ras`` (its renderer's
    world-to-display transform; VTK's bottom-up rows turned into the page's top-down)."""
    def display_xy(app):
        view = app.slicer.view_manager.get_threed_views()[0]
        renderer = view.renderer()
        renderer.SetWorldPoint(*[float(v) for v in world_ras], 1.0)
        renderer.WorldToDisplay()
        x, y, _ = renderer.GetDisplayPoint()
        return view.get_singleton_tag(), x, y, tuple(view.render_window().GetSize())

    tag, x, y, (width, height) = running.call(display_xy)
    box = view_area(page, tag).bounding_box()
    return box["x"] + (x + 0.5) * box["width"] / width, box["y"] + (height - y - 0.5) * box["height"] / height
