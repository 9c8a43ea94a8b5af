"""The models behind the evaluation protocols, through the same sessions users click in.

A predictor is opened on a volume (a fresh session: no clicks, empty mask) and given clicks,
which add to the earlier ones; it returns the current mask on the volume's grid:

* 3DSAM-adapter: an :class:`~volsam.sessions.adapter_session.AdapterSession`, in its ``paper``
  mode for the random and centre protocols (one crop around all clicks, the official test) and
  in its ``interactive`` mode for the iterative protocol (each click refines the open crops).
  The random protocol is the paper's own and keeps the whole mask; the others keep the clicked
  object (``AdapterSessionOptions.keep_connected``), as users get it.
* SAM2-3dMed: a :class:`~volsam.sessions.propagation_session.PropagationSession`: each click
  is a prompt on its slice, followed by a propagation in both directions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..clicks import SimulatedClick

MODELS = ("sam3d-adapter", "sam2-3dmed")
#: The adapter session's mode per protocol: the official single crop around the clicks, except
#: for iterative correction, where each click refines the open crops.
ADAPTER_MODES = {"random": "paper", "center": "paper", "iterative": "interactive"}


@dataclass(frozen=True)
class PredictorOptions:
    """Model choice and the inference settings that evaluation exposes."""

    model: str
    weights: str | None = None  # "demo", a project checkpoint or a release file
    sam_checkpoint: Path | None = None
    sam2_checkpoint: Path | None = None
    device: str = "auto"
    preset: str | None = None  # sam3d-adapter intensity preset (default: the checkpoint's, else ct)
    adapter_mode: str | None = None  # sam3d-adapter session mode (default: see ADAPTER_MODES)
    axis: str = "axial"  # sam2-3dmed slice direction


class AdapterPredictor:
    def __init__(self, model, device, preset: str, mode: str, keep_connected: bool = True):
        from ..sessions.adapter_session import AdapterSessionOptions

        self.model, self.device = model, device
        self.options = AdapterSessionOptions(mode=mode, preset=preset, keep_connected=keep_connected)
        self.session = None

    def open(self, volume) -> None:
        from ..sessions.adapter_session import AdapterSession

        self.volume = volume
        self.session = AdapterSession(self.model, self.device, self.options)
        self.session.set_volume(volume)

    def add_clicks(self, clicks: list[SimulatedClick]) -> np.ndarray:
        ras = [self.volume.ijk_to_ras_points(np.array(c.kji[::-1], float)) for c in clicks]
        positives = [p for p, c in zip(ras, clicks) if c.positive]
        negatives = [p for p, c in zip(ras, clicks) if not c.positive]
        self.session.add_points(positives, negatives)
        return self.session.result.copy()


class PropagationPredictor:
    def __init__(self, model, axis: str):
        self.model = model
        self.axis = axis

    def open(self, volume) -> None:
        from ..models.sam2_3dmed.frames import IntensityConfig
        from ..models.sam2_3dmed.runner import guess_modality
        from ..sessions.propagation_session import (
            PropagationSession,
            PropagationSessionConfig,
        )

        self.volume = volume
        intensity = IntensityConfig(modality=guess_modality(volume.array))
        self.session = PropagationSession(self.model, PropagationSessionConfig(slice_direction=self.axis,
                                                                               intensity=intensity))
        self.session.set_volume(volume)
        self.buffer = np.zeros(volume.shape_kji, dtype=np.uint8)
        self.session.set_target_buffer(self.buffer)

    def add_clicks(self, clicks: list[SimulatedClick]) -> np.ndarray:
        for click in clicks:
            self.session.add_point(np.array(click.kji[::-1], float), positive=click.positive, space="ijk")
        self.session.propagate()
        return self.buffer.copy()


def checkpoint_provenance(options: PredictorOptions) -> dict:
    """The provenance recorded in a project checkpoint (training label, preprocessing), or {}."""
    path = resolve_weights(options)
    if path is None or not Path(path).is_file():
        return {}
    from ..weights.loading import load_checkpoint

    try:
        loaded = load_checkpoint(Path(path))
    except ValueError:
        return {}
    if options.model == "sam3d-adapter":
        from ..models.sam3d_adapter.checkpoints import project_parts

        try:
            return project_parts(loaded)[2]
        except ValueError:
            return {}
    from ..models.sam2_3dmed.checkpoint import header_of

    try:
        header = header_of(loaded)
    except ValueError:
        return {}
    return dict(header.provenance) if header is not None else {}


def resolve_weights(options: PredictorOptions) -> Path | None:
    if options.weights is None:
        return None
    if options.weights != "demo":
        return Path(options.weights)
    if options.model == "sam3d-adapter":
        from ..models.sam3d_adapter.runner import demo_weights

        return demo_weights()
    from ..models.sam2_3dmed.runner import resolve_weights as sam2_weights

    return sam2_weights("demo")


def load_predictor(options: PredictorOptions, protocol: str):
    """A predictor for ``protocol`` with the model loaded once (reused for every case)."""
    from ..devices import resolve_device

    device = resolve_device(options.device)
    if options.model == "sam3d-adapter":
        from ..models.sam3d_adapter.checkpoints import load_model

        path = resolve_weights(options)
        if path is None:
            raise ValueError("sam3d-adapter evaluation needs --weights (a released .pth.tar, a volsam checkpoint or "
                             "'demo')")
        provenance = checkpoint_provenance(options)
        preprocessing = provenance.get("preprocessing") or {}
        if float(preprocessing.get("spacing_mm", 1.0)) != 1.0:
            raise ValueError(f"{path} was trained on volumes resampled to {preprocessing['spacing_mm']:g} mm; the "
                             "3DSAM-adapter session works at 1 mm, so it cannot be evaluated faithfully")
        preset = options.preset or _checkpoint_preset(provenance)
        if preset is None and preprocessing.get("intensity"):
            raise ValueError(f"{path} was trained with intensity constants that match no preset "
                             f"({preprocessing['intensity']}); pass --preset to evaluate it anyway")
        model = load_model(path, device=device, sam=options.sam_checkpoint)
        preset = preset or "ct"
        return AdapterPredictor(model, device, preset, options.adapter_mode or ADAPTER_MODES[protocol],
                                keep_connected=protocol != "random")
    if options.model == "sam2-3dmed":
        from ..models.sam2_3dmed.checkpoint import load_model

        weights = resolve_weights(options)
        if weights is None and options.sam2_checkpoint is None:
            raise ValueError("sam2-3dmed evaluation needs --weights (a SAM2-3dMed checkpoint or 'demo') and/or "
                             "--sam2-checkpoint")
        model = load_model(weights=weights, sam2_checkpoint=options.sam2_checkpoint, device=device)
        return PropagationPredictor(model, options.axis)
    raise ValueError(f"--model must be one of {', '.join(MODELS)}, got {options.model!r}")


def _checkpoint_preset(provenance: dict) -> str | None:
    """The session preset matching a checkpoint's training intensities, if it is one of them."""
    from ..models.sam3d_adapter.presets import PRESETS

    intensity = (provenance.get("preprocessing") or {}).get("intensity")
    if not intensity:
        return None
    for name, preset in PRESETS.items():
        if np.allclose([preset.clip_low, preset.clip_high, preset.mean, preset.std],
                       [intensity["clip_low"], intensity["clip_high"], intensity["mean"], intensity["std"]]):
            return name
    return None
