"""The oldest Slicer the modules run on, checked when a module file is loaded.

Slicer 5.8 ships Python 3.9, on which the engine cannot run (it uses Python 3.10 features, and
``sam2`` requires Python 3.10); Slicer 5.10 and later ship Python 3.12. So each module file calls
:func:`require_supported_slicer` before it imports anything else of the extension, and an older
Slicer shows one clear line in its error log instead of a traceback deep inside the engine.

This file must stay parseable by Python 3.6 (no annotations syntax newer than that).
"""

import sys

MINIMUM_SLICER = (5, 10)
MINIMUM_PYTHON = (3, 10)


def unsupported_reason(slicer_version, python_version):
    """Why this Slicer cannot run the modules, or None if it can; versions as (major, minor)."""
    slicer_version, python_version = tuple(slicer_version[:2]), tuple(python_version[:2])
    if slicer_version >= MINIMUM_SLICER and python_version >= MINIMUM_PYTHON:
        return None
    return ("VolumetricSAM needs 3D Slicer {}.{} or later (with Python {}.{} or newer); this is Slicer {}.{} "
            "with Python {}.{}. Install a newer Slicer from https://download.slicer.org".format(
                *MINIMUM_SLICER, *MINIMUM_PYTHON, *slicer_version, *python_version))


def require_supported_slicer(module_name):
    """Raise a one-line RuntimeError when the running Slicer is too old for ``module_name``."""
    import slicer

    app = getattr(slicer, "app", None)
    version = (int(app.majorVersion), int(app.minorVersion)) if app is not None else MINIMUM_SLICER
    reason = unsupported_reason(version, sys.version_info)
    if reason is not None:
        raise RuntimeError("{}: {}".format(module_name, reason))
