"""Model and weights choices of the two modules, and building a session from them (qt-free).

:func:`build_session` runs on the model thread: loading weights and building a model take
seconds. It never downloads: when a choice needs a file from the weights catalog that is not in
the cache yet, it raises :class:`WeightsNeeded`; the widget then shows the file's licence, asks,
downloads it (:mod:`volsam.weights.download`) and builds again. The released 3DSAM-adapter
weights are never downloaded: the user picks the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from volsam.mrml import SessionUndoRules
from volsam.weights.download import CATALOG, WeightsFile, verified_file

DEVICE_CHOICES = ("Auto", "CUDA", "MPS", "CPU")
CPU_WARNING = ("Running on the CPU: every click takes seconds (a propagation minutes). "
               "A CUDA GPU or Apple MPS is much faster.")

# SAMAdapt3D ---------------------------------------------------------------------------------
ADAPTER_DEMO = "Demo model (bundled)"
ADAPTER_RELEASED = "3DSAM-adapter release (file you downloaded)"
ADAPTER_OWN = "Own 3DSAM-adapter checkpoint (file)"
ADAPTER_MODELS = (ADAPTER_DEMO, ADAPTER_RELEASED, ADAPTER_OWN)
#: Intensity presets: the four datasets of the released weights, and generic CT.
ADAPTER_PRESETS = ("ct", "kits", "lits", "pancreas", "colon")
#: The 3DSAM-adapter session makes every click and every reset one undo step.
ADAPTER_UNDO_RULES = SessionUndoRules(unchanged_prompts=True, reset=True)

# SAM2Volume ---------------------------------------------------------------------------------
SAM2_DEMO = "Demo model (bundled)"
SAM2_OWN = "Own SAM2-3dMed checkpoint (file)"
SAM2_STOCK = "Stock SAM 2.1 without 3dMed heads (downloaded from Meta)"
SAM2_MODELS = (SAM2_DEMO, SAM2_OWN, SAM2_STOCK)
SAM2_SIZES = ("tiny", "small", "base_plus", "large")
#: The propagation session, too, makes every prompt, propagation and reset one undo step.
PROPAGATION_UNDO_RULES = SessionUndoRules(unchanged_prompts=True, reset=True)
FOLLOW_VIEW = "Follow the view I prompt in"
SLICE_DIRECTIONS = (FOLLOW_VIEW, "Axial", "Coronal", "Sagittal")


class WeightsNeeded(Exception):
    """A catalog file must be downloaded (after the user agrees to its licence) first."""

    def __init__(self, entry: WeightsFile, reason: str):
        super().__init__(f"{entry.filename} is needed: {reason}")
        self.entry = entry
        self.reason = reason


@dataclass(frozen=True)
class ModelChoice:
    """What the user chose in the module's Model section."""

    method: str  # "sam3d-adapter" or "sam2-3dmed"
    model: str
    weights_file: str = ""
    preset: str = "ct"
    sam2_size: str = "tiny"
    device: str = "Auto"


@dataclass
class LoadedModel:
    """A session ready for :meth:`open_volume`, and how it counts undo steps."""

    choice: ModelChoice
    session: Any
    undo_rules: SessionUndoRules
    device: Any
    description: str


def resolve_device(choice: str):
    """The torch device for a device choice; a missing CUDA or MPS is a clear ValueError."""
    from volsam.devices import resolve_device as resolve

    if choice not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {choice!r}; expected one of {', '.join(DEVICE_CHOICES)}")
    return resolve(choice.lower())


def is_cpu(device) -> bool:
    return getattr(device, "type", str(device)) == "cpu"


def _user_file(text: str, what: str) -> Path:
    path = Path(text).expanduser() if text and text != "." else None
    if path is None:
        raise ValueError(f"choose the {what} file first")
    if not path.is_file():
        raise ValueError(f"{what} file not found: {path}")
    return path


def build_session(choice: ModelChoice, weights_dir: Path | None = None) -> LoadedModel:
    """Load the chosen model on the chosen device and wrap it in its session (model thread)."""
    device = resolve_device(choice.device)
    if choice.method == "sam3d-adapter":
        return _adapter_session(choice, device, weights_dir)
    if choice.method == "sam2-3dmed":
        return _propagation_session(choice, device, weights_dir)
    raise ValueError(f"unknown method {choice.method!r}")


def _adapter_session(choice: ModelChoice, device, weights_dir) -> LoadedModel:
    from volsam.methods import get_method
    from volsam.models.sam3d_adapter.checkpoints import load_model
    from volsam.sessions.adapter_session import AdapterSession, AdapterSessionOptions
    from volsam.weights.loading import CheckpointError

    if choice.model == ADAPTER_DEMO:
        path = get_method(choice.method).demo_weights()
    elif choice.model in (ADAPTER_RELEASED, ADAPTER_OWN):
        path = _user_file(choice.weights_file, "3DSAM-adapter checkpoint")
    else:
        raise ValueError(f"unknown model choice {choice.model!r}")
    try:
        model = load_model(path, device=device)
    except CheckpointError as error:
        # A checkpoint saved without SAM's frozen encoder tensors names SAM ViT-B as the
        # missing piece; any other problem with the file is the user's to see.
        if "SAM ViT-B" not in str(error):
            raise
        entry = CATALOG["sam-vit-b"]
        found = verified_file(entry, weights_dir)
        if found is None:
            raise WeightsNeeded(entry, "this checkpoint holds only the tuned parts of 3DSAM-adapter; SAM ViT-B "
                                       "supplies the frozen image encoder") from None
        model = load_model(path, device=device, sam=found.path)
    session = AdapterSession(model, device, AdapterSessionOptions(preset=choice.preset))
    return LoadedModel(choice, session, ADAPTER_UNDO_RULES, device, f"3DSAM-adapter from {path.name} on {device}")


def sam2_entry(size: str) -> WeightsFile:
    if size not in SAM2_SIZES:
        raise ValueError(f"unknown SAM 2.1 size {size!r}; expected one of {', '.join(SAM2_SIZES)}")
    return CATALOG["sam2.1-" + size.replace("_", "-")]


def _propagation_session(choice: ModelChoice, device, weights_dir) -> LoadedModel:
    from volsam.methods import get_method
    from volsam.models.sam2_3dmed.checkpoint import load_model, read_checkpoint
    from volsam.sessions.propagation_session import PropagationSession

    weights = None
    size = choice.sam2_size
    if choice.model == SAM2_DEMO:
        weights = get_method(choice.method).demo_weights()
    elif choice.model == SAM2_OWN:
        weights = _user_file(choice.weights_file, "SAM2-3dMed checkpoint")
    elif choice.model != SAM2_STOCK:
        raise ValueError(f"unknown model choice {choice.model!r}")
    needs_sam2 = weights is None
    if weights is not None:
        header, _ = read_checkpoint(weights)
        needs_sam2 = header.contents == "trained_parts"
        size = header.config.architecture.variant
    sam2_checkpoint = None
    if needs_sam2:
        entry = sam2_entry(size)
        found = verified_file(entry, weights_dir)
        if found is None:
            reason = ("the SAM 2.1 image encoder is not in this checkpoint" if weights is not None
                      else "the stock model is Meta's SAM 2.1")
            raise WeightsNeeded(entry, reason)
        sam2_checkpoint = found.path
    model = load_model(weights=weights, sam2_checkpoint=sam2_checkpoint,
                       variant=None if weights is not None else size, device=device)
    source = weights.name if weights is not None else f"SAM 2.1 {size}"
    return LoadedModel(choice, PropagationSession(model), PROPAGATION_UNDO_RULES, device,
                       f"SAM2-3dMed from {source} on {device}")


def open_volume(loaded: LoadedModel, volume, slice_direction: str | None = None) -> None:
    """Give the session its volume (model thread: this may embed the image)."""
    if loaded.choice.method == "sam2-3dmed":
        from volsam.sessions.propagation_session import PropagationSession, PropagationSessionConfig

        direction = "axial" if slice_direction in (None, FOLLOW_VIEW) else slice_direction.lower()
        loaded.session = PropagationSession(loaded.session.tracker.model,
                                            PropagationSessionConfig(slice_direction=direction))
    loaded.session.open_volume(volume)


def range_boundary_slices(num_slices: int, confirmed, first: int, last: int) -> list[int]:
    """Slices to confirm as empty so that propagation stays within ``first..last``.

    Propagation never crosses a confirmed slice, so an empty confirmed slice just outside each
    end of the range stops it there; writes into the segment are limited to the range, so these
    empty slices never reach it.
    """
    if not 0 <= first <= last < num_slices:
        raise ValueError(f"the slice range {first}..{last} must lie within 0..{num_slices - 1}")
    return [index for index in (first - 1, last + 1) if 0 <= index < num_slices and index not in set(confirmed)]
