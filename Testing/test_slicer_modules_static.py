"""The Slicer modules checked without Slicer: static checks, and their qt-free helpers run.

No Slicer application and no Qt exist here, and nothing fakes them: the module files and their
``.ui`` files are read as text. Checked: every file compiles; every widget the code looks up
exists in the ``.ui``; every parameter-node field has exactly one bound widget of a type that
can hold it; the torch-based packages are imported lazily; the four module classes and the
self-test exist. The qt-free parts of VolumetricSAMLib (dependency plan, model thread, model
choices) are run for real.
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
            "VolumetricSAMLib.worker, VolumetricSAMLib.models, volsam.mrml; bad = [m for m in ('qt', 'torch', "
            "'sam2', 'segment_anything') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the qt-free helpers, run -----------------------------------------------------------------
sys.path.insert(0, str(ROOT))
from VolumetricSAMLib import dependencies, models, worker  # noqa: E402


def test_dependency_lists_use_minimum_versions_and_never_slicer_packages():
    for packages in dependencies.MODULE_PACKAGES.values():
        for package in packages:
            assert package.requirement == f"{package.name}>={package.minimum}"
            assert package.name.lower() not in dependencies.SHIPPED_WITH_SLICER
    names = {p.name for p in dependencies.MODULE_PACKAGES["SAM2Volume"]}
    assert {"sam2", "hydra-core", "iopath", "pillow", "tqdm"} <= names
    assert "segment-anything" in {p.name for p in dependencies.MODULE_PACKAGES["SAMAdapt3D"]}
    sam2 = dependencies.SAM2
    assert set(sam2.pip_options) == {"--no-build-isolation", "--no-deps"}
    assert sam2.environment == {"SAM2_BUILD_CUDA": "0"}
    # sam2 comes last: its own dependencies must be there before it is built without them.
    assert dependencies.MODULE_PACKAGES["SAM2Volume"][-1] is sam2


def test_install_plan_lists_only_what_is_missing(monkeypatch):
    versions = {"torch": "2.5.1+cu121", "torchvision": "0.20.1", "safetensors": "0.4.5", "scipy": "1.9.0",
                "segment-anything": "1.0"}
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


def test_all_model_work_runs_on_one_persistent_thread():
    import threading

    model_thread = worker.ModelWorker("test-model")
    try:
        idents = {model_thread.submit(threading.get_ident).result(timeout=10) for _ in range(5)}
        assert len(idents) == 1 and threading.get_ident() not in idents
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


def test_device_choices_resolve_or_say_what_is_missing():
    assert models.is_cpu(models.resolve_device("CPU"))
    with pytest.raises(ValueError, match="unknown device 'TPU'"):
        models.resolve_device("TPU")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            models.resolve_device("CUDA")


def test_own_adapter_checkpoint_builds_a_session_and_a_partial_one_asks_for_sam(tmp_path, monkeypatch):
    import numpy as np

    from volsam.geometry import Volume
    from volsam.models.sam3d_adapter import build_sam3d_adapter
    from volsam.models.sam3d_adapter.checkpoints import save_checkpoint

    monkeypatch.setenv("VOLSAM_CACHE_DIR", str(tmp_path / "cache"))
    model = build_sam3d_adapter("tiny").eval()
    whole = save_checkpoint(model, tmp_path / "tiny.safetensors")
    choice = models.ModelChoice("sam3d-adapter", models.ADAPTER_OWN, str(whole), "kits", device="CPU")
    loaded = models.build_session(choice)
    assert loaded.undo_rules == models.ADAPTER_UNDO_RULES and models.is_cpu(loaded.device)
    models.open_volume(loaded, Volume(np.zeros((20, 24, 28), np.int16), np.eye(4)))
    assert loaded.session.preset.name == "kits"

    partial = save_checkpoint(model, tmp_path / "partial.safetensors", include_sam=False)
    with pytest.raises(models.WeightsNeeded) as needed:
        models.build_session(models.ModelChoice("sam3d-adapter", models.ADAPTER_OWN, str(partial), device="CPU"))
    assert needed.value.entry.key == "sam-vit-b" and "frozen image encoder" in needed.value.reason


def test_missing_files_and_stock_sam2_are_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("VOLSAM_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="choose the 3DSAM-adapter checkpoint file first"):
        models.build_session(models.ModelChoice("sam3d-adapter", models.ADAPTER_RELEASED, "", device="CPU"))
    with pytest.raises(ValueError, match="file not found"):
        models.build_session(models.ModelChoice("sam3d-adapter", models.ADAPTER_OWN, str(tmp_path / "x.pt"),
                                                device="CPU"))
    pytest.importorskip("sam2", reason="the sam2 package is needed to build SAM2-3dMed")
    with pytest.raises(models.WeightsNeeded) as needed:
        models.build_session(models.ModelChoice("sam2-3dmed", models.SAM2_STOCK, sam2_size="small", device="CPU"))
    assert needed.value.entry.filename == "sam2.1_hiera_small.pt" and needed.value.entry.sha256 is None
