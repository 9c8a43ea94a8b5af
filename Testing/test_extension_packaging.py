"""The extension's packaging: CMake metadata, the Extensions Index catalog entry, installed files.

The CMake files are parsed as text (no CMake or Slicer build here). Checked: the metadata and
``VolumetricSAM.json`` agree; the icon and screenshot URLs point at files in this repository;
each module is built with ``slicerMacroBuildScriptedModule(... WITH_GENERIC_TESTS)``; and every
Python file the modules import, followed through ``volsam`` and ``VolumetricSAMLib`` (imports
inside functions included), is listed for installation exactly once.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("SAMAdapt3D", "SAM2Volume")
HOMEPAGE = "https://github.com/volumetric-sam/SlicerVolumetricSAM"
RAW_PREFIX = "https://raw.githubusercontent.com/volumetric-sam/SlicerVolumetricSAM/main/"
LOCAL_PACKAGES = ("volsam", "VolumetricSAMLib")
CATALOG_KEYS = {"$schema", "build_dependencies", "build_subdirectory", "category", "scm_revision", "scm_type",
                "scm_url", "tier"}


def cmake_commands(path: Path) -> list[tuple[str, list[str]]]:
    """(command, arguments) of a CMake file; comments dropped, ${VAR} of earlier set()s expanded."""
    text = "\n".join(line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
                     for line in path.read_text().splitlines())
    variables: dict[str, list[str]] = {}
    commands = []
    for name, body in re.findall(r"(\w+)\s*\(([^()]*)\)", text):
        arguments = []
        for token in shlex.split(body, posix=True):
            expanded = re.sub(r"\$\{(\w+)\}", lambda m: ";".join(variables.get(m.group(1), [m.group(0)])), token)
            arguments.extend(part for part in expanded.split(";") if part)
        if name == "set" and arguments:
            variables[arguments[0]] = arguments[1:]
        commands.append((name, arguments))
    return commands


def set_values(path: Path) -> dict[str, list[str]]:
    return {args[0]: args[1:] for name, args in cmake_commands(path) if name == "set" and args}


def metadata() -> dict[str, str]:
    values = set_values(ROOT / "CMakeLists.txt")
    return {key: " ".join(value) for key, value in values.items() if key.startswith("EXTENSION_")}


def installed_python_files() -> list[str]:
    """Every .py listed for installation, relative to the repository root, with repeats."""
    listed = []
    for name, args in cmake_commands(ROOT / "CMakeLists.txt"):
        if name == "ctkMacroCompilePythonScript":
            scripts = args[args.index("SCRIPTS") + 1:args.index("RESOURCES")]
            listed += scripts
    for module in MODULES:
        for name, args in cmake_commands(ROOT / module / "CMakeLists.txt"):
            if name == "slicerMacroBuildScriptedModule":
                scripts = args[args.index("SCRIPTS") + 1:args.index("RESOURCES")]
                listed += [f"{module}/{script}" for script in scripts]
    return listed


# --- the import walk ----------------------------------------------------------------------------
def _module_source(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def _imported_names(path: Path) -> set[str]:
    package = list(path.relative_to(ROOT).parent.parts)
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # may be submodules
    return names


def imported_files() -> set[str]:
    """The module files and every local file they import, at any depth."""
    todo = [ROOT / module / f"{module}.py" for module in MODULES]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_names(path):
            parts = name.split(".")
            if parts[0] not in LOCAL_PACKAGES:
                continue
            for end in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
                source = _module_source(".".join(parts[:end]))
                if source is not None:
                    todo.append(source)
    return {str(path.relative_to(ROOT)) for path in seen}


# --- tests --------------------------------------------------------------------------------------
def test_metadata_is_complete():
    meta = metadata()
    assert meta["EXTENSION_HOMEPAGE"] == HOMEPAGE
    assert meta["EXTENSION_CONTRIBUTORS"]
    description = meta["EXTENSION_DESCRIPTION"]
    assert description.endswith(".") and description.count(". ") == 0 and len(description) < 250  # one sentence
    assert meta["EXTENSION_DEPENDS"] == "PyTorch"
    assert meta["EXTENSION_ICONURL"].startswith(RAW_PREFIX)
    assert meta["EXTENSION_SCREENSHOTURLS"]
    assert not ROOT.joinpath("CMakeLists.txt").read_text().count("project(Slicer")  # name must not start "Slicer"
    assert (ROOT / "LICENSE").is_file()


def test_icon_and_screenshot_urls_point_at_files_here():
    meta = metadata()
    urls = [meta["EXTENSION_ICONURL"], *meta["EXTENSION_SCREENSHOTURLS"].split()]
    for url in urls:
        assert url.startswith(RAW_PREFIX), url
        assert (ROOT / url[len(RAW_PREFIX):]).is_file(), f"{url} names a file that is not in the repository"
    from PIL import Image

    with Image.open(ROOT / meta["EXTENSION_ICONURL"][len(RAW_PREFIX):]) as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)


def test_catalog_entry_agrees_with_the_cmake_metadata():
    catalog = json.loads((ROOT / "VolumetricSAM.json").read_text())
    meta = metadata()
    assert set(catalog) <= CATALOG_KEYS and {"$schema", "category", "scm_url"} <= set(catalog)
    assert re.fullmatch(r"https://raw\.githubusercontent\.com/Slicer/Slicer/main/Schemas/"
                        r"slicer-extension-catalog-entry-schema-v1\.0\.\d\.json#", catalog["$schema"])
    assert catalog["category"] == meta["EXTENSION_CATEGORY"]
    assert catalog["scm_url"].removesuffix(".git") == meta["EXTENSION_HOMEPAGE"]
    assert sorted(catalog["build_dependencies"]) == sorted(meta["EXTENSION_DEPENDS"].split())
    assert catalog.get("build_subdirectory", ".") == "."


def test_each_module_is_a_scripted_module_with_generic_tests():
    top = cmake_commands(ROOT / "CMakeLists.txt")
    assert [args[0] for name, args in top if name == "add_subdirectory"] == list(MODULES)
    for module in MODULES:
        commands = cmake_commands(ROOT / module / "CMakeLists.txt")
        (build,) = [args for name, args in commands if name == "slicerMacroBuildScriptedModule"]
        assert build[build.index("NAME") + 1] == module and "WITH_GENERIC_TESTS" in build
        resources = build[build.index("RESOURCES") + 1:build.index("WITH_GENERIC_TESTS")]
        assert sorted(resources) == sorted([f"Resources/Icons/{module}.png", f"Resources/UI/{module}.ui"])
        for resource in resources:
            assert (ROOT / module / resource).is_file()
        assert ("slicer_add_python_unittest", ["SCRIPT", f"{module}.py"]) in commands


def test_every_python_file_the_modules_import_is_installed_once():
    listed = installed_python_files()
    duplicates = sorted({path for path in listed if listed.count(path) > 1})
    assert not duplicates, f"listed more than once: {duplicates}"
    missing_on_disk = sorted(path for path in listed if not (ROOT / path).is_file())
    assert not missing_on_disk, f"listed but not in the repository: {missing_on_disk}"
    needed = imported_files()
    not_installed = sorted(needed - set(listed))
    assert not not_installed, f"imported by the modules but not installed: {not_installed}"
    assert {"volsam/mrml/segments.py", "volsam/weights/download.py", "VolumetricSAMLib/widget.py",
            "volsam/sessions/adapter_session.py", "volsam/sessions/propagation_session.py"} <= needed


@pytest.mark.parametrize("path", ["CMakeLists.txt", *[f"{m}/CMakeLists.txt" for m in MODULES]])
def test_cmake_files_have_balanced_parentheses(path):
    text = "\n".join(line.split("#", 1)[0] for line in (ROOT / path).read_text().splitlines())
    depth = 0
    for character in text:
        depth += {"(": 1, ")": -1}.get(character, 0)
        assert depth >= 0
    assert depth == 0


def test_readme_shows_the_screenshot_and_the_extension_walk_through():
    docs = (ROOT / "README.md").read_text()
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", docs):
        assert (ROOT / image).is_file(), image
    for heading in ("### Installing", "### First run", "### Walk-through: SAMAdapt3D", "### Walk-through: SAM2Volume"):
        assert heading in docs
    assert "Resources/Screenshots/VolumetricSAM-phantom.png" in docs
