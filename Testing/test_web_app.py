"""The browser app without a model: views, real clicks, saving, downloading, access rules.

The app runs on 127.0.0.1 in a thread of this process (so a test can look at its MRML scene)
and headless Chromium clicks in it like a user. Waits are on conditions, generous, and never
measure speed.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from volsam.web.access import TRAME_DEFAULT_SECRET, access_for, is_loopback
from volsam.web.testing import missing_browser_tools

MISSING = missing_browser_tools()
browser_only = pytest.mark.skipif(MISSING is not None, reason=f"browser tests skipped: {MISSING}")

VIEWPORT = {"width": 1400, "height": 900}


# --- access rules (no browser) -------------------------------------------------------------------
def test_loopback_needs_no_token_and_any_other_address_gets_one():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("myhost")
    local = access_for("127.0.0.1", 8080)
    assert local.token is None and local.secret == TRAME_DEFAULT_SECRET
    assert local.url() == "http://127.0.0.1:8080/"
    exposed = access_for("0.0.0.0", 8080)
    assert exposed.token and len(exposed.token) >= 16 and exposed.secret == exposed.token
    assert exposed.url().endswith(f":8080/?secret={exposed.token}")
    assert access_for("0.0.0.0", 8080).token != exposed.token  # random each start
    with pytest.raises(ValueError, match="at least 16 characters"):
        access_for("0.0.0.0", 8080, token="short")


def test_cli_app_errors_are_one_line():
    for argv, expected in ((["app", "/no/such/image.nii.gz"], "no such image file or DICOM folder"),
                           (["app", "--weights", "nope=x.pt"], "unknown method 'nope'"),
                           (["app", "--host", "0.0.0.0", "--token", "abc"], "at least 16 characters")):
        result = subprocess.run([sys.executable, "-m", "volsam", *argv], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        last = result.stderr.strip().splitlines()[-1]  # argparse's own errors print the usage first
        assert last.startswith("volsam app: error:") and expected in last, result.stderr
        assert "Traceback" not in result.stderr


def test_cli_app_is_listed_and_documents_its_options():
    result = subprocess.run([sys.executable, "-m", "volsam", "app", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    for option in ("--port", "--host", "--token", "--weights", "--device", "--out"):
        assert option in result.stdout


# --- in the browser ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def running(tmp_path_factory):
    from volsam.web.config import AppConfig
    from volsam.web.testing import RunningApp

    with RunningApp(AppConfig(save_dir=tmp_path_factory.mktemp("saved"))) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    from volsam.web.testing import launch_chromium

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(running, browser):
    from volsam.web.testing import view_area

    page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
    page.goto(running.url)
    view_area(page, "Red").wait_for(timeout=120_000)
    # As a user must, wait for the model: binding it adds the controller's prompt markups nodes,
    # and Slicer's markups logic makes a newly added markups node the one the views place into.
    running.wait_until(lambda app: app.state.model_ready and not app.state.busy, 300, "the demo model")
    yield page
    page.close()


@pytest.fixture(scope="module")
def phantom():
    from volsam.phantoms import make_phantom
    from volsam.web.config import DEMO_SEED

    return make_phantom(DEMO_SEED)


def _largest_lesion_ras(phantom) -> np.ndarray:
    image, _labels, info = phantom
    lesion = max(info.lesions, key=lambda item: item.diameter_mm)
    return image.ijk_to_ras_points(np.array(lesion.center_ijk, float))


@browser_only
def test_page_shows_four_views_of_the_demo_phantom_and_both_methods(running, page, phantom):
    from volsam.web.testing import view_area

    tags = running.call(lambda app: ([view.get_orientation() for view in app.slicer.view_manager.get_slice_views()],
                                     [view.get_singleton_tag() for view in app.slicer.view_manager.get_views()]))
    assert sorted(tags[0]) == ["Axial", "Coronal", "Sagittal"] and len(tags[1]) == 4  # four-up: three slices + 3D
    for tag in tags[1]:
        assert view_area(page, tag).count() == 1, tag
    page.locator("[data-test=method]").click()
    options = page.locator(".v-overlay .v-list-item-title").all_inner_texts()
    page.keyboard.press("Escape")
    assert any("SAMAdapt3D" in text for text in options) and any("SAM2Volume" in text for text in options)
    image = phantom[0]
    loaded = running.call(lambda app: (app.volume_node.GetImageData().GetDimensions(), app.image.volume.ijk_to_ras))
    assert tuple(loaded[0]) == image.shape_ijk
    np.testing.assert_allclose(loaded[1], image.ijk_to_ras)


@browser_only
def test_a_click_in_the_axial_view_arrives_as_a_control_point_at_the_clicked_ras(running, page, phantom):
    from volsam.mrml.nodes import defined_control_points_ras, prompt_markups_node
    from volsam.web.testing import page_position_of_ras

    target = _largest_lesion_ras(phantom)

    def place(app):
        app.slice_view("Axial").set_slice_value(float(target[2]))
        node = prompt_markups_node(app.scene, "test", "positive")
        node.RemoveAllControlPoints()
        app.slicer.markups_logic.place_node(node, persistent=True)

    running.call(place)
    page.wait_for_timeout(500)  # let the page show the new slice before aiming (not a speed check)
    x, y = page_position_of_ras(running, page, "Red", target)
    page.mouse.move(x, y)
    page.mouse.click(x, y)
    points = running.wait_until(
        lambda app: defined_control_points_ras(prompt_markups_node(app.scene, "test", "positive")).tolist() or None,
        what="the click's control point")
    running.call(lambda app: app.slicer.markups_logic.disable_place_mode())
    assert len(points) == 1
    spacing = phantom[0].spacing
    # In-plane: within one screen pixel (the view shows about 0.3 mm per pixel); across: on the slice.
    np.testing.assert_allclose(points[0][:2], target[:2], atol=min(spacing[:2]) / 2)
    assert abs(points[0][2] - target[2]) < 1e-3


@browser_only
def test_save_buttons_write_files_in_the_image_geometry_and_download_gives_the_same(running, page, phantom,
                                                                                   tmp_path):
    import SimpleITK as sitk

    from volsam.geometry import Box
    from volsam.io import read_image
    from volsam.mrml.segments import SegmentOnGrid

    image = phantom[0]
    blob = np.zeros(image.shape_kji, np.uint8)
    blob[20:30, 40:50, 30:45] = 1

    def fill(app):
        segment_id = app.editor.active_segment_id
        SegmentOnGrid(app.segmentation_node, segment_id, app.image.volume).write(blob, Box.full(image.shape_kji))

    running.call(fill)
    for button, suffix in (("save-nifti", ".nii.gz"), ("save-seg-nrrd", ".seg.nrrd")):
        page.locator(f"[data-test={button}]").click()
        saved = page.locator("[data-test=saved-path]")
        saved.filter(has_text=suffix).wait_for(timeout=60_000)
        path = saved.inner_text().strip()
        read = sitk.ReadImage(path)
        assert read.GetSize() == image.shape_ijk if suffix == ".nii.gz" else True
        if suffix == ".nii.gz":
            volume = read_image(path)
            assert volume.same_geometry(image)
            np.testing.assert_array_equal(volume.array, blob)
        else:  # Slicer's segmentation file: the segment's voxels at the same world positions
            array = sitk.GetArrayFromImage(read)
            assert array.sum() == blob.sum()
            origin_lps = np.array(read.TransformIndexToPhysicalPoint([int(v) for v in np.argwhere(array)[0][::-1]]))
            first = image.ijk_to_ras_points(np.argwhere(blob)[0][::-1].astype(float))
            np.testing.assert_allclose(origin_lps * [-1, -1, 1], first, atol=1e-3)

    with page.expect_download(timeout=60_000) as download_info:
        page.locator("[data-test=download-nifti]").click()
    downloaded = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(downloaded)
    assert downloaded.name == "Demo_phantom_seed_2025.nii.gz"  # named as Save names it
    volume = read_image(downloaded)
    assert volume.same_geometry(image)
    np.testing.assert_array_equal(volume.array, blob)


@browser_only
def test_the_mouse_scrolls_slices_and_window_level_follows_the_slider_and_a_drag(running, page):
    from volsam.web.testing import view_area

    box = view_area(page, "Red").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    offset = running.call(lambda app: app.slice_view("Axial").get_slice_value())
    page.mouse.move(x, y)
    page.mouse.wheel(0, 120)
    running.wait_until(lambda app: app.slice_view("Axial").get_slice_value() != offset, 60, "another slice")

    def window_level(app):
        display = app.volume_node.GetDisplayNode()
        return display.GetWindow(), display.GetLevel()

    before = running.call(window_level)
    # Window/level: the panel's range slider (the grey values shown black to white), moved with the mouse.
    slider = page.locator("[data-test=window-level] .v-slider-thumb").first
    thumb = slider.bounding_box()
    page.mouse.move(thumb["x"] + thumb["width"] / 2, thumb["y"] + thumb["height"] / 2)
    page.mouse.down()
    page.mouse.move(thumb["x"] + 40, thumb["y"] + thumb["height"] / 2, steps=5)
    page.mouse.up()
    running.wait_until(lambda app: window_level(app) != before, 60, "another window/level")

    # And as in Slicer: in the window/level mouse mode a left-drag in a slice view sets it.
    page.locator("[data-test=window-level-mode]").click()
    running.wait_until(lambda app: app.state.window_level_mode, 60, "the window/level mouse mode")
    before = running.call(window_level)
    box = view_area(page, "Green").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 60, y + 40, steps=8)
    page.mouse.up()
    running.wait_until(lambda app: window_level(app) != before, 60, "window/level from a drag in the view")
    window, level = running.call(window_level)
    assert window > before[0] and level != before[1]  # right: wider window; down: another level
    page.locator("[data-test=window-level-mode]").click()
    running.wait_until(lambda app: not app.state.window_level_mode, 60, "leaving the window/level mouse mode")
    mode = running.call(lambda app: app._interaction_node().GetCurrentInteractionMode())
    assert mode == running.call(lambda app: app._interaction_node().ViewTransform)


@browser_only
def test_the_segment_list_shows_names_and_colours_and_toggles_visibility(running, page):
    rows = page.locator("[data-test=segments] .v-list-item")
    assert rows.count() == 1 and "Lesion 1" in rows.first.inner_text()

    def visible(app):
        return bool(app.segmentation_node.GetDisplayNode().GetSegmentVisibility(app.editor.active_segment_id))

    assert running.call(visible)
    page.locator("[data-test=segment-visibility]").click()
    running.wait_until(lambda app: not visible(app), 60, "the segment hidden")
    page.locator("[data-test=segment-visibility]").click()
    running.wait_until(visible, 60, "the segment shown again")


@browser_only
def test_the_layout_menu_switches_the_views(running, page):
    from volsam.web.testing import view_area

    page.locator(".v-app-bar .v-select").click()
    page.locator(".v-overlay .v-list-item-title", has_text="Axial Only").click()
    running.wait_until(lambda app: len(app.slicer.view_manager.get_current_view_ids()) == 1, 60, "one view")
    page.locator("div:has(> [data-view='Green'])").wait_for(state="detached", timeout=60_000)
    page.locator(".v-app-bar .v-select").click()
    page.locator(".v-overlay .v-list-item-title", has_text="Quad View").click()
    view_area(page, "Green").wait_for(timeout=60_000)
    assert running.call(lambda app: len(app.slicer.view_manager.get_current_view_ids())) == 4


@browser_only
def test_a_wrong_token_is_refused_and_the_right_one_lets_the_page_in(browser):
    from volsam.web.testing import RunningApp, view_area

    token = "right-token-" + "x" * 12
    with RunningApp(token=token) as running:
        assert running.url.endswith(f"?secret={token}")
        wrong = browser.new_page(viewport=VIEWPORT)
        refusals = []
        wrong.on("websocket", lambda socket: socket.on(
            "framereceived", lambda frame: refusals.append(frame) if b"Authentication failed" in (
                frame if isinstance(frame, bytes) else frame.encode()) else None))
        wrong.goto(running.url.replace(token, "wrong-token-" + "y" * 12))
        wrong.wait_for_function("() => true")
        deadline_ms = 60_000
        while not refusals and deadline_ms > 0:
            wrong.wait_for_timeout(200)
            deadline_ms -= 200
        assert refusals, "the server did not refuse the wrong token"
        assert view_area(wrong, "Red").count() == 0
        wrong.close()

        right = browser.new_page(viewport=VIEWPORT)
        right.goto(running.url)
        view_area(right, "Red").wait_for(timeout=120_000)
        right.close()


@browser_only
def test_the_cli_serves_an_image_file_on_loopback_and_prints_the_url(tmp_path, phantom):
    import os
    import re
    import signal
    import urllib.request

    from volsam.io import write_image

    path = tmp_path / "ct.nii.gz"
    write_image(phantom[0], path)
    env = dict(os.environ, VTK_DEFAULT_OPENGL_WINDOW="vtkOSOpenGLRenderWindow", PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "volsam", "app", str(path), "--port", "0", "--out", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True)
    watchdog = threading.Timer(300, lambda: os.killpg(process.pid, signal.SIGKILL))  # never hang the suite
    watchdog.start()
    try:
        port = None
        for line in process.stdout:  # reads until the app announces itself (or exits)
            found = re.search(r"open http://127\.0\.0\.1:(\d+)/", line)
            if found:
                port = int(found.group(1))
                break
        assert port, "the app printed no loopback URL"
        # Only the app this test started, on loopback, and never through a configured proxy.
        loopback = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with loopback.open(f"http://127.0.0.1:{port}/", timeout=60) as response:
            assert response.status == 200 and b"<html" in response.read().lower()
    finally:
        watchdog.cancel()
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)


def test_an_image_file_opens_with_its_geometry_and_name(tmp_path):
    from volsam.io import write_image
    from volsam.web.app import load_image
    from volsam.web.config import AppConfig

    from conftest import make_volume

    volume = make_volume(dtype=np.int16)
    path = tmp_path / "oblique scan.nii.gz"
    write_image(volume, path)
    loaded = load_image(AppConfig(image=path))
    assert loaded.name == "oblique scan" and not loaded.is_demo
    assert loaded.volume.same_geometry(volume)
    np.testing.assert_array_equal(loaded.volume.array, volume.array)
    with pytest.raises(ValueError, match="no such file"):
        load_image(AppConfig(image=tmp_path / "missing.nrrd"))
