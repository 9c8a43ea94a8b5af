"""``volsam segment --model sam3d-adapter``: clicks on a volume -> a mask, through the session.

The CLI has parsed the clicks into RAS points and checked that they lie inside the image; this
module loads the model named by ``--weights`` and runs an :class:`AdapterSession`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Where ``--weights demo`` looks for a demo model of this method (shipped with the package).
DEMO_MODELS = Path(__file__).resolve().parents[2] / "demo_models"
DEMO_PATTERN = "sam3d_adapter*.safetensors"


def demo_weights() -> Path:
    found = sorted(DEMO_MODELS.glob(DEMO_PATTERN))
    if not found:
        raise ValueError(f"no 3DSAM-adapter demo model is installed (looked for {DEMO_PATTERN} in {DEMO_MODELS}); "
                         "pass --weights with a released 3DSAM-adapter .pth.tar or a volsam checkpoint")
    return found[-1]


def load_for_args(args, device):
    """The model named by ``args.weights`` ("demo" or a file) and ``args.sam_checkpoint``."""
    from .checkpoints import load_model

    weights = getattr(args, "weights", None)
    sam = getattr(args, "sam_checkpoint", None)
    if not weights and not sam:
        raise ValueError("sam3d-adapter needs --weights (a released .pth.tar, a volsam checkpoint or 'demo')")
    if weights == "demo":
        weights = demo_weights()
    if not weights:
        logger.warning("only a SAM checkpoint was given: adapters and decoder are untrained, the mask is meaningless")
        weights, sam = sam, None
    return load_model(Path(weights), device=device, sam=Path(sam) if sam else None)


def segment(volume, positives, negatives, box, args, device) -> np.ndarray:
    """uint8 mask (k, j, i) of ``volume`` from RAS clicks (lists of (3,) arrays)."""
    from ...sessions.adapter_session import AdapterSession, AdapterSessionOptions

    if box is not None:
        raise ValueError("sam3d-adapter takes point prompts only; --box is for sam2-3dmed")
    if not positives:
        raise ValueError("sam3d-adapter needs at least one positive --point")
    options = AdapterSessionOptions(mode=getattr(args, "mode", None) or "interactive",
                                    preset=getattr(args, "preset", None) or "ct",
                                    precision=getattr(args, "precision", None) or "auto")
    model = load_for_args(args, device)
    session = AdapterSession(model, device, options)
    session.set_volume(volume)
    session.add_points(positives, negatives)
    return session.result.copy()
