"""Python packages the modules need, and their one-time installation inside Slicer.

Nothing is installed at import time or when a module opens: the modules call
:func:`ensure_installed` when the user first presses Initialize, on the main thread (pip on
another thread has crashed Slicer on macOS). One confirmation lists everything that will be
installed. Then:

* PyTorch through the PyTorch extension's ``PyTorchUtils`` (it picks the build for the
  computer's GPU), with minimum versions;
* ordinary packages through ``slicer.packaging.pip_ensure`` (Slicer 5.11 and later) or
  ``slicer.util.pip_install`` (earlier), with minimum versions, never pins;
* ``sam2``, which is published as source only and whose build would otherwise pull a second
  PyTorch: without build isolation (it builds against Slicer's PyTorch), without dependencies
  (its own light dependencies are listed here explicitly) and with its CUDA extension off
  (``SAM2_BUILD_CUDA=0``; the extension only speeds up an optional post-processing step).

What Slicer itself ships (numpy, SimpleITK, requests, VTK) is never listed, so it is never
reinstalled; a listed package that is already there at a good version is skipped.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

MINIMUM_TORCH = "2.3"
MINIMUM_TORCHVISION = "0.18"


@dataclass(frozen=True)
class PythonPackage:
    """One distribution to install: ``name>=minimum``, plus pip options and environment
    variables its installation needs."""

    name: str
    minimum: str
    pip_options: tuple[str, ...] = ()
    environment: dict = field(default_factory=dict)

    @property
    def requirement(self) -> str:
        return f"{self.name}>={self.minimum}"

    @property
    def needs_special_install(self) -> bool:
        return bool(self.pip_options or self.environment)


SAFETENSORS = PythonPackage("safetensors", "0.4")
SCIPY = PythonPackage("scipy", "1.10")
SAM2 = PythonPackage("sam2", "1.1", ("--no-build-isolation", "--no-deps"), {"SAM2_BUILD_CUDA": "0"})
SAM2_OWN_DEPENDENCIES = (PythonPackage("hydra-core", "1.3.2"), PythonPackage("iopath", "0.1.10"),
                         PythonPackage("pillow", "9.4"), PythonPackage("tqdm", "4.66"))

#: What each module needs besides PyTorch (which the PyTorch extension installs). SAMAdapt3D
#: builds SAM's image encoder itself (volsam.models.sam3d_adapter), so ``segment-anything``,
#: which nothing imports, is not installed.
MODULE_PACKAGES: dict[str, tuple[PythonPackage, ...]] = {
    "SAMAdapt3D": (SAFETENSORS, SCIPY),
    "SAM2Volume": (SAFETENSORS, SCIPY, *SAM2_OWN_DEPENDENCIES, SAM2),
}

#: Shipped with Slicer: must never appear above (a reinstall can break Slicer).
SHIPPED_WITH_SLICER = ("numpy", "simpleitk", "requests", "vtk", "torch", "torchvision")


def _version_key(text: str) -> tuple:
    """A comparable key for version strings like 2.3.1+cu121 or 1.1.0.dev0 (release part only)."""
    release = re.match(r"\d+(\.\d+)*", text.strip())
    if release is None:
        return ()
    parts = [int(p) for p in release.group(0).split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def is_satisfied(name: str, minimum: str) -> bool:
    version = installed_version(name)
    return version is not None and _version_key(version) >= _version_key(minimum)


def missing_packages(packages: Iterable[PythonPackage]) -> list[PythonPackage]:
    """The packages not installed at their minimum version, in installation order."""
    return [package for package in packages if not is_satisfied(package.name, package.minimum)]


def torch_missing() -> bool:
    return not (is_satisfied("torch", MINIMUM_TORCH) and is_satisfied("torchvision", MINIMUM_TORCHVISION))


@dataclass(frozen=True)
class InstallPlan:
    """What :func:`ensure_installed` would install for one module."""

    module: str
    torch: bool
    packages: tuple[PythonPackage, ...]

    @property
    def empty(self) -> bool:
        return not self.torch and not self.packages

    def lines(self) -> list[str]:
        """One line per item, for the confirmation dialog."""
        lines = []
        if self.torch:
            lines.append(f"PyTorch >= {MINIMUM_TORCH} and torchvision >= {MINIMUM_TORCHVISION} "
                         "(through the PyTorch extension; about 1 to 3 GB)")
        for package in self.packages:
            note = " (built from source against Slicer's PyTorch, CUDA extension off)" if package is SAM2 else ""
            lines.append(package.requirement + note)
        return lines


def install_plan(module: str) -> InstallPlan:
    if module not in MODULE_PACKAGES:
        raise ValueError(f"unknown module {module!r}; expected one of {', '.join(MODULE_PACKAGES)}")
    return InstallPlan(module, torch_missing(), tuple(missing_packages(MODULE_PACKAGES[module])))


def ensure_installed(module: str) -> bool:
    """Install what ``module`` needs, after one confirmation (Slicer main thread only).

    Returns True when everything is there; False when the user declined. Raises RuntimeError
    with a one-line reason when an installation fails.
    """
    import slicer

    plan = install_plan(module)
    if plan.empty:
        return True
    if not slicer.util.confirmOkCancelDisplay(
            f"{module} needs Python packages that are not installed yet. Installing them needs a network "
            "connection and may take several minutes; Slicer may ask to restart afterwards. Install now?",
            f"{module}: install Python packages", detailedText="\n".join(plan.lines())):
        return False
    if plan.torch:
        _install_torch()
    plain = [p for p in plan.packages if not p.needs_special_install]
    if plain:
        _pip_install_plain(plain, module)
    for package in (p for p in plan.packages if p.needs_special_install):
        _pip_install_special(package)
    importlib.invalidate_caches()
    still_missing = missing_packages(plan.packages)
    if still_missing or torch_missing():
        names = ", ".join([p.requirement for p in still_missing] + (["torch"] if torch_missing() else []))
        raise RuntimeError(f"installation finished but {names} is still missing; see the Python console for pip's output")
    return True


def _install_torch() -> None:
    try:
        import PyTorchUtils
    except ModuleNotFoundError:
        raise RuntimeError("the PyTorch extension is needed to install PyTorch: install it from the "
                           "Extensions Manager and restart Slicer") from None
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
        askConfirmation=False, torchVersionRequirement=f">={MINIMUM_TORCH}",
        torchvisionVersionRequirement=f">={MINIMUM_TORCHVISION}")
    if torch is None:
        raise RuntimeError("PyTorch was not installed; install it with the PyTorch Utils module and try again")


def _pip_install_plain(packages: list[PythonPackage], module: str) -> None:
    import slicer

    slicer_packaging = getattr(slicer, "packaging", None)
    if slicer_packaging is not None and hasattr(slicer_packaging, "pip_ensure"):  # Slicer 5.11 and later
        from packaging.requirements import Requirement

        slicer_packaging.pip_ensure([Requirement(p.requirement) for p in packages], prompt_install=False,
                             requester=module)
    else:
        slicer.util.pip_install([p.requirement for p in packages])


def _pip_install_special(package: PythonPackage) -> None:
    import slicer

    saved = {name: os.environ.get(name) for name in package.environment}
    os.environ.update(package.environment)  # pip runs in a child process that inherits these
    try:
        slicer.util.pip_install([*package.pip_options, package.requirement])
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
