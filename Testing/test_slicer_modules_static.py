"""The Slicer modules checked without Slicer: static checks, and their qt-free helpers run.

No Slicer application and no Qt exist here, and nothing fakes them: the module files and their
``.ui`` files are read as text. Checked: every file compiles; every widget the code looks up
exists in the ``.ui``; every parameter-node field has exactly one bound widget of a type that
can hold it; the torch-based packages are imported lazily; the four module classes and the
self-test exist; the version check runs before anything else; no key Slicer binds is a
shortcut. The qt-free parts (dependency plan, model thread, model choices, version check) are run
for real.
"""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("SAMAdapt3D", "SAM2Volume")
SHARED = ROOT / "VolumetricSAMLib"
HEAVY_PACKAGES = ("torch", "torchvision", "sam2", "segment_anything", "hydra", "safetensors")
# Widget classes the parameter node wrapper can bind each field type to.
BINDABLE = {
    "bool": {"QCheckBox", "QPushButton"},
    "int": {"QSpinBox", "QSlider"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget"},
    "str": {"QLineEdit", "QComboBox", "QTextEdit"},
    "Path": {"ctkPathLineEdit", "ctkDirectoryButton"},
    "node": {"qMRMLNodeComboBox"},
}


def python_files():
    return [ROOT / f"{m}/{m}.py" for m in MODULES] + sorted(SHARED.glob("*.py")) + \
        [ROOT / "Resources/make_icons.py", ROOT / "Resources/make_screenshot.py"]


def ui_widgets(module: str) -> dict[str, ET.Element]:
    tree = ET.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui")
    return {widget.get("name"): widget for widget in tree.iter("widget")}


def parameter_name(widget: ET.Element) -> str | None:
    for prop in widget.findall("property"):
        if prop.get("name") == "SlicerParameterName":
            return prop.findtext("string")
    return None


def ui_lookups(path: Path) -> set[str]:
    """Names used as ``self.ui.<name>`` in a file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"):
            found.add(node.attr)
    return found


def constant(path: Path, name: str):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path.name} has no constant {name}")


def parameter_fields(module: str) -> dict[str, str]:
    """Field name -> annotation source of the module's @parameterNodeWrapper class."""
    tree = ast.parse((ROOT / module / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(getattr(d, "id", None) == "parameterNodeWrapper"
                                                  for d in node.decorator_list):
            return {item.target.id: ast.unparse(item.annotation) for item in node.body
                    if isinstance(item, ast.AnnAssign)}
    raise AssertionError(f"{module}.py has no @parameterNodeWrapper class")


def field_kind(annotation: str) -> str:
    if annotation.startswith("vtkMRML"):
        return "node"
    if annotation.endswith("Path"):
        return "Path"
    base = annotation.removeprefix("Annotated[").split(",")[0].strip("]")
    return base


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_file_compiles_and_has_no_placeholders(path):
    source = path.read_text()
    compile(source, str(path), "exec")
    assert "TODO" not in source and "FIXME" not in source


@pytest.mark.parametrize("module", MODULES)
def test_every_widget_the_code_looks_up_is_in_the_ui_file(module):
    widgets = ui_widgets(module)
    used = ui_lookups(ROOT / module / f"{module}.py") | ui_lookups(SHARED / "widget.py")
    missing = sorted(used - set(widgets))
    assert not missing, f"{module}.ui lacks widgets the code uses: {missing}"


def test_the_shared_widget_list_names_every_widget_the_shared_code_uses():
    shared = set(constant(SHARED / "widget.py", "SHARED_WIDGET_NAMES"))
    assert ui_lookups(SHARED / "widget.py") <= shared
    for module in MODULES:
        assert shared <= set(ui_widgets(module)), f"{module}.ui lacks shared widgets"


@pytest.mark.parametrize("module", MODULES)
def test_every_parameter_has_one_bound_widget_that_can_hold_it(module):
    fields = parameter_fields(module)
    bound: dict[str, list[ET.Element]] = {}
    for widget in ui_widgets(module).values():
        name = parameter_name(widget)
        if name is not None:
            bound.setdefault(name, []).append(widget)
    assert sorted(bound) == sorted(fields), "SlicerParameterName properties and parameter fields differ"
    for field, annotation in fields.items():
        (widget,) = bound[field]
        kind = field_kind(annotation)
        assert widget.get("class") in BINDABLE[kind], f"{field} ({annotation}) bound to a {widget.get('class')}"
        if widget.get("class") == "QComboBox":
            assert "Choice(" in annotation, f"{field}: a combo box needs a Choice annotation"


@pytest.mark.parametrize("module", MODULES)
def test_module_file_has_the_scripted_module_classes_and_a_self_test(module):
    tree = ast.parse((ROOT / module / f"{module}.py").read_text())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    for suffix, base in (("", "ScriptedLoadableModule"), ("Widget", "PromptSegmentationWidget"),
                         ("Logic", "PromptSegmentationLogic"), ("Test", "ScriptedLoadableModuleTest")):
        assert module + suffix in classes
        assert base in {getattr(b, "id", None) for b in classes[module + suffix].bases}
    test_methods = {n.name for n in classes[module + "Test"].body if isinstance(n, ast.FunctionDef)}
    assert "runTest" in test_methods and any(name.startswith("test_") for name in test_methods)
    module_class = ast.unparse(classes[module])
    for attribute in ("title", "categories", "contributors", "helpText", "acknowledgementText"):
        assert f"self.parent.{attribute}" in module_class


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported when the file is imported (not inside functions or TYPE_CHECKING)."""
    found = set()
    tree = ast.parse(path.read_text())
    package = path.relative_to(ROOT).parent.parts
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for child in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else []:
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = ".".join(package[:len(package) - child.level + 1] + ((child.module,) if child.module else ()))
                    found.add(base)
                    found.update(f"{base}.{alias.name}" for alias in child.names)
                else:
                    found.add(child.module)
                    found.update(f"{child.module}.{alias.name}" for alias in child.names)
    return found


def _source_of(module_name: str) -> Path | None:
    path = ROOT.joinpath(*module_name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def test_modules_load_before_setup_without_torch_sam2_or_segment_anything():
    """What a module file imports at load time (through volsam and VolumetricSAMLib) must not
    import the packages that first-run setup installs."""
    todo = [ROOT / f"{m}/{m}.py" for m in MODULES]
    seen, heavy = set(), []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _top_level_imports(path):
            if name.split(".")[0] in HEAVY_PACKAGES:
                heavy.append(f"{path.relative_to(ROOT)} imports {name}")
            parts = name.split(".")
            for end in range(1, len(parts) + 1):
                source = _source_of(".".join(parts[:end]))
                if source is not None:
                    todo.append(source)
    assert not heavy, heavy
    assert ROOT / "volsam/mrml/__init__.py" in seen  # the walk did reach into volsam


def test_qt_free_shared_code_imports_without_qt_or_torch():
    """The shared code outside the widget and logic runs in plain Python (and is tested)."""
    import subprocess

    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import VolumetricSAMLib.dependencies, "
            "VolumetricSAMLib.compatibility, volsam.mrml.controller, volsam.mrml.choices, volsam.mrml.shortcuts; "
            "bad = [m for m in ('qt', 'torch', "
            "'sam2', 'segment_anything') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the qt-free helpers, run -----------------------------------------------------------------
sys.path.insert(0, str(ROOT))
from volsam.mrml import choices, shortcuts, worker  # noqa: E402
from VolumetricSAMLib import compatibility, dependencies  # noqa: E402


def test_dependency_lists_use_minimum_versions_and_never_slicer_packages():
    for packages in dependencies.MODULE_PACKAGES.values():
        for package in packages:
            assert package.requirement == f"{package.name}>={package.minimum}"
            assert package.name.lower() not in dependencies.SHIPPED_WITH_SLICER
    names = {p.name for p in dependencies.MODULE_PACKAGES["SAM2Volume"]}
    assert {"sam2", "hydra-core", "iopath", "pillow", "tqdm"} <= names
    sam2 = dependencies.SAM2
    assert set(sam2.pip_options) == {"--no-build-isolation", "--no-deps"}
    assert sam2.environment == {"SAM2_BUILD_CUDA": "0"}
    # sam2 comes last: its own dependencies must be there before it is built without them.
    assert dependencies.MODULE_PACKAGES["SAM2Volume"][-1] is sam2


def test_no_package_is_installed_that_nothing_imports():
    """``segment-anything`` was installed for SAMAdapt3D, but nothing imports ``segment_anything``."""
    installed = {p.name for packages in dependencies.MODULE_PACKAGES.values() for p in packages}
    assert "segment-anything" not in installed
    sources = [path for path in (ROOT / "volsam").rglob("*.py")] + python_files()
    texts = [path.read_text(encoding="utf-8") for path in sources]
    assert not any("import segment_anything" in text or "from segment_anything" in text for text in texts)


def test_install_plan_lists_only_what_is_missing(monkeypatch):
    versions = {"torch": "2.5.1+cu121", "torchvision": "0.20.1", "safetensors": "0.4.5", "scipy": "1.9.0"}
    monkeypatch.setattr(dependencies, "installed_version", versions.get)
    plan = dependencies.install_plan("SAMAdapt3D")
    assert not plan.torch and [p.name for p in plan.packages] == ["scipy"]  # 1.9 < 1.10
    assert plan.lines() == ["scipy>=1.10"]
    versions["scipy"] = "1.13.1"
    assert dependencies.install_plan("SAMAdapt3D").empty
    versions.pop("torch")
    plan = dependencies.install_plan("SAM2Volume")
    assert plan.torch and plan.lines()[0].startswith("PyTorch >= 2.3")
    assert "sam2>=1.1 (built from source against Slicer's PyTorch, CUDA extension off)" in plan.lines()
    with pytest.raises(ValueError, match="unknown module 'Other'"):
        dependencies.install_plan("Other")


def test_versions_compare_by_release_number():
    assert dependencies._version_key("2.3.1+cu121") >= dependencies._version_key("2.3")
    assert dependencies._version_key("1.1.0.dev0") >= dependencies._version_key("1.1")
    assert dependencies._version_key("0.9.10") < dependencies._version_key("0.10")


# --- defect 2: the Slicer version --------------------------------------------------------------
def test_slicer_older_than_5_10_is_refused_with_one_clear_line():
    assert compatibility.unsupported_reason((5, 10), (3, 12)) is None
    assert compatibility.unsupported_reason((5, 11), (3, 12, 10)) is None
    reason = compatibility.unsupported_reason((5, 8), (3, 9, 10))
    assert reason.startswith("VolumetricSAM needs 3D Slicer 5.10 or later (with Python 3.10 or newer); "
                             "this is Slicer 5.8 with Python 3.9")
    assert compatibility.unsupported_reason((5, 10), (3, 9)) is not None


@pytest.mark.parametrize("module", MODULES)
def test_the_version_check_runs_before_the_module_imports_anything_else(module):
    """On Slicer 5.8 (Python 3.9) the engine cannot even be imported: the check must come first,
    in code that Python 3.9 parses."""
    tree = ast.parse((ROOT / module / f"{module}.py").read_text(), feature_version=(3, 9))
    statements = [node for node in tree.body if not isinstance(node, ast.Expr) or not isinstance(
        node.value, ast.Constant)]
    first, call = statements[0], statements[1]
    assert ast.unparse(first) == "from VolumetricSAMLib.compatibility import require_supported_slicer"
    assert ast.unparse(call) == f"require_supported_slicer({module!r})"
    for path in (SHARED / "compatibility.py", SHARED / "__init__.py"):
        ast.parse(path.read_text(), feature_version=(3, 7))


def test_the_engine_parses_on_the_python_it_requires():
    """pyproject says Python >= 3.10 (Slicer 5.10 ships 3.12): nothing newer may be used."""
    for path in (ROOT / "volsam").rglob("*.py"):
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 10))


# --- defect 4: keys ---------------------------------------------------------------------------
def test_no_shortcut_is_a_key_slicer_binds_in_its_views():
    ours = {keys for keys, _, _ in shortcuts.SHORTCUTS}
    clashes = {keys for keys in ours if keys in shortcuts.SLICER_VIEW_KEYS or keys.lower() in shortcuts.SLICER_VIEW_KEYS}
    assert clashes == shortcuts.SHARED_WITH_SEGMENT_EDITOR  # undo and redo, as Segment Editor binds them
    assert "R" not in ours and "r" in shortcuts.SLICER_VIEW_KEYS
    # Segment Editor's unmodified letters and the markups toolbar's chords are Slicer's too.
    assert {"z", "y", "q", "w", "i", "Ctrl+Shift+A", "Ctrl+Shift+T", "Ctrl+Shift+Space"} <= shortcuts.SLICER_VIEW_KEYS
    widget = ast.parse((SHARED / "widget.py").read_text())
    methods = {node.name for node in ast.walk(widget) if isinstance(node, ast.FunctionDef)}
    assert {action for _, _, action in shortcuts.SHORTCUTS} <= methods


def _function(tree: ast.AST, name: str) -> ast.FunctionDef:
    return next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == name)


def _calls(function: ast.FunctionDef) -> list[str]:
    return [ast.unparse(node) for node in ast.walk(function) if isinstance(node, ast.Call)]


def test_the_embedded_segment_editor_shows_no_undo_of_its_own():
    """One history: the module's undo covers Segment Editor strokes; the editor's own undo/redo
    (qMRMLSegmentEditorWidget::setUndoEnabled hides its group box) would be a second one."""
    source = (SHARED / "widget.py").read_text()
    setup = _function(ast.parse(source), "setup")
    assert "editor.setUndoEnabled(False)" in _calls(setup)
    assert any(ast.unparse(node) == "editor = self.ui.segmentEditorWidget" for node in ast.walk(setup)
               if isinstance(node, ast.Assign))
    assert "qMRMLSegmentEditorWidget.cxx line 2235" in " ".join(source.split())


def test_leaving_the_module_and_closing_the_scene_release_the_editor_as_slicer_does():
    """Modules/Scripted/SegmentEditor/SegmentEditor.py lines 134-142."""
    source = (SHARED / "widget.py").read_text()
    tree = ast.parse(source)
    exit_calls, close_calls = _calls(_function(tree, "exit")), _calls(_function(tree, "onSceneStartClose"))
    assert {"editor.setActiveEffect(None)", "editor.removeViewObservations()"} <= set(exit_calls)
    assert {"editor.setSegmentationNode(None)", "editor.removeViewObservations()"} <= set(close_calls)
    assert source.count("SegmentEditor.py lines 134-142") >= 2


# --- defect 7: the self-tests ------------------------------------------------------------------
@pytest.mark.parametrize("module", MODULES)
def test_self_tests_never_skip(module):
    """``skipTest`` inside ``runTest`` shows as an error under "Reload and Test"."""
    assert "skipTest" not in (ROOT / module / f"{module}.py").read_text()


def test_all_model_work_runs_on_one_persistent_daemon_thread():
    import threading

    model_thread = worker.ModelWorker("test-model")
    try:
        idents = {model_thread.submit(threading.get_ident).result(timeout=10) for _ in range(5)}
        assert len(idents) == 1 and threading.get_ident() not in idents and model_thread.thread.daemon
        failing = model_thread.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(timeout=10)
        assert model_thread.submit(threading.get_ident).result(timeout=10) in idents  # it survives errors
    finally:
        model_thread.shutdown()


def test_progress_dialog_only_after_two_seconds():
    now = [100.0]
    delay = worker.DelayedProgress(clock=lambda: now[0])
    assert delay.delay_s == 2.0 and not delay.dialog_due()
    delay.start()
    now[0] += 1.9
    assert not delay.dialog_due()
    now[0] += 0.2
    assert delay.dialog_due()
    delay.stop()
    assert not delay.dialog_due() and not delay.running


def test_job_progress_is_shared_safely_and_cancellable():
    progress = worker.JobProgress("Propagating")
    progress.update(3, 10)
    assert progress.snapshot() == ("Propagating", 3, 10)
    progress.cancel.set()
    assert progress.cancel.is_set()


def test_device_choices_name_devices_or_say_what_is_missing():
    from volsam.devices import resolve_device

    assert [choices.device_name(c) for c in choices.DEVICE_CHOICES] == ["auto", "cuda", "mps", "cpu"]
    with pytest.raises(ValueError, match="unknown device 'TPU'"):
        choices.device_name("TPU")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device(choices.device_name("CUDA"))


def test_own_adapter_checkpoint_loads_and_a_partial_one_asks_for_sam(tmp_path, monkeypatch):
    from volsam.methods import get_method
    from volsam.models.sam3d_adapter import build_sam3d_adapter
    from volsam.models.sam3d_adapter.checkpoints import save_checkpoint
    from volsam.weights.download import WeightsNeeded

    monkeypatch.setenv("VOLSAM_CACHE_DIR", str(tmp_path / "cache"))
    method = get_method("sam3d-adapter")
    model = build_sam3d_adapter("tiny").eval()
    whole = save_checkpoint(model, tmp_path / "tiny.safetensors")
    loaded = method.load_model(choices.adapter_weights(choices.ADAPTER_OWN, whole), "cpu")
    assert loaded.source == "tiny.safetensors"

    partial = save_checkpoint(model, tmp_path / "partial.safetensors", include_sam=False)
    with pytest.raises(WeightsNeeded) as needed:
        method.load_model(choices.adapter_weights(choices.ADAPTER_OWN, partial), "cpu")
    assert needed.value.entry.key == "sam-vit-b" and "frozen image encoder" in needed.value.reason


def test_missing_files_and_stock_sam2_are_explained(tmp_path, monkeypatch):
    from volsam.methods import get_method
    from volsam.weights.download import WeightsNeeded

    monkeypatch.setenv("VOLSAM_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="choose the 3DSAM-adapter checkpoint file first"):
        choices.adapter_weights(choices.ADAPTER_RELEASED, "")
    with pytest.raises(ValueError, match="file not found"):
        choices.adapter_weights(choices.ADAPTER_OWN, tmp_path / "x.pt")
    assert choices.slice_direction(choices.FOLLOW_VIEW) == ("axial", True)
    assert choices.slice_direction("Coronal") == ("coronal", False)
    pytest.importorskip("sam2", reason="the sam2 package is needed to build SAM2-3dMed")
    with pytest.raises(WeightsNeeded) as needed:
        get_method("sam2-3dmed").load_model(choices.sam2_weights(choices.SAM2_STOCK, size="small"), "cpu")
    assert needed.value.entry.filename == "sam2.1_hiera_small.pt" and needed.value.entry.sha256 is None
    assert choices.sam2_entry("small") is needed.value.entry
