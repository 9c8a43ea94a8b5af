"""The page: an app bar, the side panel (both methods), and trame-slicer's view grid.

Buttons carry ``data-test`` attributes (stable names for the browser tests, which click them
like a user). What a button does is one call of :class:`~volsam.web.app.VolumetricSamApp`.
"""

from __future__ import annotations

PANEL_WIDTH = 330


def build_page(app):
    """The page of ``app`` (a :class:`~volsam.web.app.VolumetricSamApp`; not imported here, which
    imports this module)."""
    from trame.ui.vuetify3 import VAppLayout
    from trame.widgets import client, html
    from trame.widgets import vuetify3 as v

    with VAppLayout(app.server, full_height=True) as layout:
        layout.root.theme = "dark"
        # The desktop modules' shortcuts, for the whole page (not while typing in a field).
        key = app.server.controller.trigger_name(app.shortcut)
        client.ClientTriggers(mounted=(
            "window.addEventListener('keydown', (event) => {"
            " if (['INPUT', 'TEXTAREA'].includes(event.target.tagName)) return;"
            f" trigger('{key}', [event.key, event.ctrlKey || event.metaKey, event.shiftKey]); }})"))
        with v.VAppBar(density="compact"):
            v.VToolbarTitle("VolumetricSAM  ·  {{ image_name }}", style="user-select: none;")
            v.VSpacer()
            v.VSelect(v_model=("layout_id",), items=("layout_ids",), density="compact", hide_details=True,
                      variant="outlined", style="max-width: 180px;", classes="mr-2", label="Layout")
        with v.VNavigationDrawer(permanent=True, width=PANEL_WIDTH, location="left"):
            _panel(app, v, html)
        with v.VMain(), html.Div(style="height: calc(100vh - 48px); display: flex;"):
            app.layout_manager.initialize_layout_grid(layout)
    return layout


def _test(name: str) -> dict:
    """The ``data-test`` attribute the browser tests find an element by."""
    return {"raw_attrs": [f'data-test="{name}"']}


def _button(v, label: str, click, test: str, **kwargs):
    return v.VBtn(label, click=click, size="small", classes="ma-1", **_test(test), **kwargs)


def _panel(app, v, html) -> None:
    ctrl = app.server.controller
    with v.VContainer(classes="pa-2", fluid=True):
        # Method and device ------------------------------------------------------------------------
        v.VSelect(label="Method", v_model=("method",), items=("methods",), density="compact",
                  hide_details=True, classes="mb-2", **_test("method"))
        v.VSelect(label="Device", v_model=("device",), items=("devices",), density="compact",
                  hide_details=True, classes="mb-2", **_test("device"))
        v.VAlert("{{ cpu_warning }}", v_if=("cpu_warning",), type="error", density="compact",
                 classes="mb-2 text-caption", **_test("cpu-warning"))
        v.VRangeSlider(label="Window", v_model=("display_range",), min=("scalar_range[0]",),
                       max=("scalar_range[1]",), step=1, density="compact", hide_details=True, strict=True,
                       classes="mb-2", **_test("window-level"))
        _button(v, "Window/level drag", app.toggle_window_level_mode, "window-level-mode",
                color=("window_level_mode ? 'blue' : undefined",))
        # Status -----------------------------------------------------------------------------------
        html.Div("{{ message }}", classes="text-caption mb-1", **_test("message"))
        v.VProgressLinear(v_if=("busy",), model_value=("progress_total ? 100 * progress_done / progress_total : 0",),
                          indeterminate=("!progress_total",), color="orange", classes="mb-1",
                          **_test("progress"))
        with html.Div(v_if=("weights_needed",), classes="text-caption mb-2", **_test("weights-needed")):
            html.Span("Needed: {{ weights_needed }} ")
            _button(v, "Download it", app.download_weights, "download-weights")
        v.VAlert("{{ error }}", v_if=("error",), type="warning", density="compact", closable=True,
                 click_close="error = ''", classes="mb-2 text-caption", **_test("error"))

        # Prompts ----------------------------------------------------------------------------------
        v.VDivider(classes="my-1")
        html.Div("Click in a view", classes="text-overline")
        with html.Div(classes="d-flex flex-wrap"):
            _button(v, "Positive point", (app.toggle_placing, "['positive']"), "place-positive",
                    color=("placing === 'positive' ? 'green' : undefined",), disabled=("!model_ready",))
            _button(v, "Negative point", (app.toggle_placing, "['negative']"), "place-negative",
                    color=("placing === 'negative' ? 'red' : undefined",), disabled=("!model_ready",))
            _button(v, "Box", (app.toggle_placing, "['box']"), "place-box", v_if=("capabilities.includes('box')",),
                    color=("placing === 'box' ? 'yellow' : undefined",), disabled=("!model_ready",))
        v.VCheckbox(label="Auto-run on each prompt", v_model=("auto_run",), density="compact", hide_details=True,
                    **_test("auto-run"))
        with html.Div(classes="d-flex flex-wrap"):
            _button(v, "Segment", (app.controller_action, "['run_pending']"), "run", disabled=("!model_ready || busy",))
            _button(v, "Undo", (app.controller_action, "['undo']"), "undo", disabled=("!can_undo || busy",))
            _button(v, "Redo", (app.controller_action, "['redo']"), "redo", disabled=("!can_redo || busy",))
            _button(v, "Reset", (app.controller_action, "['reset']"), "reset", disabled=("!model_ready || busy",))
            _button(v, "Next segment", (app.controller_action, "['next_segment']"), "next-segment",
                    disabled=("!model_ready || busy",))

        # SAM2Volume: propagation -----------------------------------------------------------------
        with html.Div(v_if=("capabilities.includes('propagate')",)):
            v.VDivider(classes="my-1")
            html.Div("Propagation", classes="text-overline")
            with html.Div(classes="d-flex flex-wrap"):
                _button(v, "Propagate", (app.controller_action, "['propagate']"), "propagate",
                        disabled=("!model_ready || busy",))
                _button(v, "Cancel", (app.controller_action, "['cancel']"), "cancel", disabled=("!busy",))
                _button(v, "Confirm slice", app.confirm_shown_slice, "confirm-slice", disabled=("!model_ready || busy",))
                _button(v, "Propagate correction", (app.controller_action, "['propagate_correction']"),
                        "propagate-correction", disabled=("!model_ready || busy",))
            html.Div("Confirmed slices: {{ confirmed_slices.length ? confirmed_slices.join(', ') : 'none' }}",
                     classes="text-caption", **_test("confirmed-slices"))

        # Manual correction -----------------------------------------------------------------------
        v.VDivider(classes="my-1")
        html.Div("Correct by hand", classes="text-overline")
        with html.Div(classes="d-flex flex-wrap"):
            _button(v, "Paint", (app.toggle_tool, "['paint']"), "paint",
                    color=("tool === 'paint' ? 'orange' : undefined",))
            _button(v, "Erase", (app.toggle_tool, "['erase']"), "erase",
                    color=("tool === 'erase' ? 'orange' : undefined",))

        # Segments ---------------------------------------------------------------------------------
        v.VDivider(classes="my-1")
        html.Div("Segments", classes="text-overline")
        with v.VList(density="compact", classes="pa-0", **_test("segments")):
            with v.VListItem(v_for="item in segments", key="item.id",
                             active=("item.id === active_segment_id",),
                             click=(app.select_segment, "[item.id]")):
                with html.Div(classes="d-flex align-center"):
                    v.VIcon("mdi-circle", color=("item.color",), size="small", classes="mr-2")
                    html.Span("{{ item.name }}", classes="flex-grow-1")
                    toggle = ctrl.trigger_name(app.toggle_segment_visibility)
                    # .stop: the eye toggles visibility without selecting the segment under it.
                    v.VBtn(icon=("item.visible ? 'mdi-eye' : 'mdi-eye-off'",), size="x-small", variant="text",
                           raw_attrs=[f'@click.stop="trigger(\'{toggle}\', [item.id])"', 'data-test="segment-visibility"'])

        # Save -------------------------------------------------------------------------------------
        v.VDivider(classes="my-1")
        html.Div("Save", classes="text-overline")
        with html.Div(classes="d-flex flex-wrap"):
            _button(v, "Save .seg.nrrd", (app.save, "['seg.nrrd']"), "save-seg-nrrd")
            _button(v, "Save NIfTI", (app.save, "['nifti']"), "save-nifti")
            download = ctrl.trigger_name(app.download)
            _button(v, "Download .seg.nrrd", f"utils.download(file_stem + '.seg.nrrd', trigger('{download}', "
                    "['seg.nrrd']), 'application/octet-stream')", "download-seg-nrrd")
            _button(v, "Download NIfTI", f"utils.download(file_stem + '.nii.gz', trigger('{download}', "
                    "['nifti']), 'application/gzip')", "download-nifti")
        html.Div("{{ saved_path }}", v_if=("saved_path",), classes="text-caption", **_test("saved-path"))
