"""Browser click -> segment visible on the page, with the demo model (``volsam app``).

The app serves the demo phantom on 127.0.0.1; headless Chromium clicks the largest lesion's
centre in the axial view with SAMAdapt3D's demo model; the time runs from the mouse click until
the page's streamed axial image shows the segment's colour beside the click (checked in the
page, each animation frame, on the image's own pixels). Between clicks *Reset* clears the
segment, so each is a first click. Printed: the median of ``--clicks`` clicks, and the model's
own share: the time the app's session spent in ``add_points`` during each of those clicks
(the model's work, measured inside the same run, under the same load).

    python bench/app_click.py                 # CPU, 5 clicks
    python bench/app_click.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: In the page: is the streamed image under (x, y) orange (the segment's colour) a few pixels right of it?
SEGMENT_VISIBLE_JS = """([x, y]) => {
  const img = document.elementFromPoint(x, y)?.closest('.remote-controlled-area')?.querySelector('img');
  if (!img || !img.complete || !img.naturalWidth) return false;
  const box = img.getBoundingClientRect();
  const canvas = window.__volsamCanvas || (window.__volsamCanvas = document.createElement('canvas'));
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const context = canvas.getContext('2d', {willReadFrequently: true});
  context.drawImage(img, 0, 0);
  const px = Math.round((x - box.left) * img.naturalWidth / box.width);
  const py = Math.round((y - box.top) * img.naturalHeight / box.height);
  const [r, g, b] = context.getImageData(px, py, 1, 1).data;
  return r - b > 40;
}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from volsam.web.config import AppConfig
    from volsam.web.testing import (RunningApp, launch_chromium, missing_browser_tools, page_position_of_ras,
                                    view_area, wait_idle)

    missing = missing_browser_tools()
    if missing:
        print(f"cannot run: {missing}")
        return 2
    from volsam.phantoms import make_phantom
    from volsam.web.config import DEMO_SEED

    image, _labels, info = make_phantom(DEMO_SEED)
    lesion = max(info.lesions, key=lambda item: item.diameter_mm)
    centre = image.ijk_to_ras_points(np.array(lesion.center_ijk, float))
    probe = centre + np.array([3.0, 0.0, 0.0])  # beside the point's marker

    seconds = []
    with RunningApp(AppConfig(device=args.device)) as running, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(running.url)
        view_area(page, "Red").wait_for(timeout=120_000)
        running.wait_until(lambda app: app.state.model_ready, 300, "the demo model")
        model_seconds: list[float] = []

        def time_the_session(app):
            session = app.controller.session
            add_points = session.add_points

            def timed(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return add_points(*args, **kwargs)
                finally:
                    model_seconds.append(time.perf_counter() - started)

            session.add_points = timed  # measurement only: the same call, timed

        running.call(time_the_session)
        running.call(lambda app: app.slice_view("Axial").set_slice_value(float(centre[2])))
        page.locator("[data-test=place-positive]").click()
        running.wait_until(lambda app: app.state.placing == "positive", 60, "placing")
        page.wait_for_timeout(500)
        x, y = page_position_of_ras(running, page, "Red", centre)
        px, py = page_position_of_ras(running, page, "Red", probe)
        for _ in range(args.clicks + 1):  # the first click warms the model up and is not counted
            page.mouse.move(x, y)
            started = time.perf_counter()
            page.mouse.click(x, y)
            page.wait_for_function(SEGMENT_VISIBLE_JS, arg=[px, py], polling="raf", timeout=300_000)
            seconds.append(time.perf_counter() - started)
            wait_idle(running)
            running.call(lambda app: app.controller.reset())
            wait_idle(running)
            page.wait_for_function(f"() => !({SEGMENT_VISIBLE_JS})([{px}, {py}])", polling="raf", timeout=60_000)
            running.call(lambda app: app.controller.start_placing("positive"))
        browser.close()
    clicks, model = seconds[1:], model_seconds[1:]
    click_s, model_s = statistics.median(clicks), statistics.median(model)
    print(f"device {args.device}, demo phantom {image.shape_ijk}, SAMAdapt3D demo model, {args.clicks} clicks")
    print(f"browser click -> segment visible on the page: median {click_s:.2f} s "
          f"(each: {', '.join(f'{s:.2f}' for s in clicks)})")
    print(f"the model's session step in those clicks: median {model_s:.2f} s = {100 * model_s / click_s:.0f} % "
          f"of a click; "
          f"the rest ({click_s - model_s:.2f} s) is the controller, MRML, rendering and streaming")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
