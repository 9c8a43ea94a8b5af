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

#: The adapter session's mode per protocol: the official single crop around the clicks, except
#: for iterative correction, where each click refines the open crops.
ADAPTER_MODES = {"random": "paper", "center": "paper", "iterative": "interactive"}


@dataclass(frozen=True)
class PredictorOptions:
    """Model choice and the inference settings that evaluation exposes."""

    model: str  # a method of volsam.methods
    weights: str | None = None  # "demo", a project checkpoint or a release file
    sam_checkpoint: Path | None = None
    sam2_checkpoint: Path | None = None
    device: str = "auto"
    preset: str | None = None  # sam3d-adapter intensity preset (default: the checkpoint's, else ct)
    adapter_mode: str | None = None  # sam3d-adapter session mode (default: see ADAPTER_MODES)
    axis: str = "axial"  # sam2-3dmed slice direction

    @property
    def weights_choice(self):
        from ..methods import WeightsChoice

        return WeightsChoice(weights=self.weights, sam_checkpoint=_text(self.sam_checkpoint),
                             sam2_checkpoint=_text(self.sam2_checkpoint))


def _text(path) -> str | None:
    return None if path is None else str(path)


class SessionPredictor:
    """A fresh session per volume; each batch of clicks adds to the earlier ones and is
    followed by the method's run (a propagation for SAM2-3dMed)."""

    def __init__(self, method, loaded, settings):
        self.method, self.loaded, self.settings = method, loaded, settings
        self.session = None

    def open(self, volume) -> None:
        self.volume = volume
        if self.session is not None:
            self.session.close()
        self.session = self.method.open_session(self.loaded, self.settings)
        self.session.open_volume(volume)

    def add_clicks(self, clicks: list[SimulatedClick]) -> np.ndarray:
        if self.method.propagates:  # each click is a prompt on its own slice
            for click in clicks:
                self.session.add_point(np.array(click.kji[::-1], float), positive=click.positive, space="ijk")
        else:
            positives = [np.array(c.kji[::-1], float) for c in clicks if c.positive]
            negatives = [np.array(c.kji[::-1], float) for c in clicks if not c.positive]
            self.session.add_points(positives, negatives, space="ijk")
        self.session.run()
        return self.session.result.copy()


def checkpoint_provenance(options: PredictorOptions) -> dict:
    """The provenance recorded in a project checkpoint (training label, preprocessing), or {}."""
    from ..methods import get_method

    try:
        return get_method(options.model).provenance(options.weights_choice)
    except ValueError:
        return {}


def load_predictor(options: PredictorOptions, protocol: str) -> SessionPredictor:
    """A predictor for ``protocol`` with the model loaded once (reused for every case)."""
    from ..devices import resolve_device
    from ..methods import SessionSettings, get_method

    method = get_method(options.model)
    device = resolve_device(options.device)
    # The random protocol is the paper's own and keeps the whole mask; the others keep the
    # clicked object, as users get it.
    settings = method.checkpoint_settings(options.weights_choice, SessionSettings(
        preset=options.preset, mode=options.adapter_mode or ADAPTER_MODES[protocol],
        keep_connected=protocol != "random", slice_direction=options.axis))
    return SessionPredictor(method, method.load_model(options.weights_choice, device), settings)
