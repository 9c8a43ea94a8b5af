"""What the modules' Model sections offer, turned into registry calls (qt-free).

The Slicer modules (and the browser app) show these choices; :func:`adapter_weights`,
:func:`sam2_weights` and :func:`device_name` turn the user's picks into the
:class:`volsam.methods.WeightsChoice` and device string that
:meth:`InteractionController.initialize <volsam.mrml.controller.InteractionController.initialize>`
takes. Every choice takes frozen parts from the verified download cache (``from_cache``): a
missing Meta file becomes a :class:`~volsam.weights.download.WeightsNeeded` that the front end
asks the user about. The released 3DSAM-adapter weights are never downloaded: the user picks
the file.
"""

from __future__ import annotations

from pathlib import Path

from ..methods import WeightsChoice

DEVICE_CHOICES = ("Auto", "CUDA", "MPS", "CPU")

# SAMAdapt3D ---------------------------------------------------------------------------------
ADAPTER_DEMO = "Demo model (bundled)"
ADAPTER_RELEASED = "3DSAM-adapter release (file you downloaded)"
ADAPTER_OWN = "Own 3DSAM-adapter checkpoint (file)"
ADAPTER_MODELS = (ADAPTER_DEMO, ADAPTER_RELEASED, ADAPTER_OWN)
#: Intensity presets: the four datasets of the released weights, and generic CT.
ADAPTER_PRESETS = ("ct", "kits", "lits", "pancreas", "colon")

# SAM2Volume ---------------------------------------------------------------------------------
SAM2_DEMO = "Demo model (bundled)"
SAM2_OWN = "Own SAM2-3dMed checkpoint (file)"
SAM2_STOCK = "Stock SAM 2.1 without 3dMed heads (downloaded from Meta)"
SAM2_MODELS = (SAM2_DEMO, SAM2_OWN, SAM2_STOCK)
SAM2_SIZES = ("tiny", "small", "base_plus", "large")
FOLLOW_VIEW = "Follow the view I prompt in"
SLICE_DIRECTIONS = (FOLLOW_VIEW, "Axial", "Coronal", "Sagittal")


def device_name(choice: str) -> str:
    """The device string (:func:`volsam.devices.resolve_device`) of a device choice."""
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {choice!r}; expected one of {', '.join(DEVICE_CHOICES)}")
    return choice.lower()


def _user_file(text, what: str) -> str:
    path = Path(str(text)).expanduser() if text and str(text) != "." else None
    if path is None:
        raise ValueError(f"choose the {what} file first")
    if not path.is_file():
        raise ValueError(f"{what} file not found: {path}")
    return str(path)


def adapter_weights(model: str, weights_file=None) -> WeightsChoice:
    if model == ADAPTER_DEMO:
        return WeightsChoice("demo", from_cache=True)
    if model in (ADAPTER_RELEASED, ADAPTER_OWN):
        return WeightsChoice(_user_file(weights_file, "3DSAM-adapter checkpoint"), from_cache=True)
    raise ValueError(f"unknown model choice {model!r}; expected one of {', '.join(ADAPTER_MODELS)}")


def sam2_weights(model: str, weights_file=None, size: str = "tiny") -> WeightsChoice:
    if size not in SAM2_SIZES:
        raise ValueError(f"unknown SAM 2.1 size {size!r}; expected one of {', '.join(SAM2_SIZES)}")
    if model == SAM2_DEMO:
        return WeightsChoice("demo", from_cache=True)
    if model == SAM2_OWN:
        return WeightsChoice(_user_file(weights_file, "SAM2-3dMed checkpoint"), from_cache=True)
    if model == SAM2_STOCK:
        return WeightsChoice(None, variant=size, from_cache=True)
    raise ValueError(f"unknown model choice {model!r}; expected one of {', '.join(SAM2_MODELS)}")


def slice_direction(choice: str) -> tuple[str, bool]:
    """(the session's slice direction, whether to follow the view prompted in) of a choice."""
    if choice not in SLICE_DIRECTIONS:
        raise ValueError(f"unknown slice direction {choice!r}; expected one of {', '.join(SLICE_DIRECTIONS)}")
    return ("axial", True) if choice == FOLLOW_VIEW else (choice.lower(), False)


def sam2_entry(size: str):
    """The download catalog's entry of a SAM 2.1 size."""
    from ..weights.download import CATALOG

    if size not in SAM2_SIZES:
        raise ValueError(f"unknown SAM 2.1 size {size!r}; expected one of {', '.join(SAM2_SIZES)}")
    return CATALOG["sam2.1-" + size.replace("_", "-")]
