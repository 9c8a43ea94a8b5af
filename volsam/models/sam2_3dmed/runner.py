"""``volsam segment --model sam2-3dmed``: prompts on one slice -> a 3D mask by propagation.

The CLI (:mod:`volsam.cli.segment`) parses the prompts and reads the image; this runner loads
the model, prompts the slice that holds the prompts and propagates in both directions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...geometry import Volume

#: Where a packaged SAM2-3dMed demo model (a whole-model checkpoint) is looked for.
DEMO_WEIGHTS = Path(__file__).resolve().parents[2] / "demo_models" / "sam2_3dmed_demo.safetensors"
#: Below this 1st-percentile value an image is taken as CT in Hounsfield units (air is -1000).
CT_AIR_THRESHOLD = -500.0


def guess_modality(array: np.ndarray) -> str:
    """"ct" when the darkest voxels look like air in HU, else "unknown" (percentile clipping)."""
    flat = np.asarray(array).reshape(-1)
    sample = flat[:: max(1, flat.size // 1_000_000)]
    return "ct" if float(np.percentile(sample, 1)) <= CT_AIR_THRESHOLD else "unknown"


def resolve_weights(weights: str | None) -> Path | None:
    if not weights:
        return None
    if weights == "demo":
        if not DEMO_WEIGHTS.is_file():
            raise ValueError(f"the SAM2-3dMed demo model is not in this installation (expected {DEMO_WEIGHTS}); "
                             "give --weights PATH to a SAM2-3dMed checkpoint, or --sam2-checkpoint with an "
                             "official SAM2.1 checkpoint")
        return DEMO_WEIGHTS
    return Path(weights)


def segment(volume: Volume, positives, negatives, box, args, device) -> np.ndarray:
    """Segment ``volume`` from RAS prompts; returns a uint8 (k, j, i) mask of ``volume``'s shape.

    ``positives``/``negatives``: lists of RAS points (3,); ``box``: None or two RAS corners
    (2, 3) on one slice. ``args`` may carry ``weights`` ("demo" or a path), ``sam2_checkpoint``,
    ``config`` (tiny | small | base_plus | large), ``axis`` (axial | coronal | sagittal),
    ``modality`` (ct | mr | unknown) and ``window`` (a CT preset); missing ones are None.
    """
    from ...sessions.propagation_session import PropagationSession, PropagationSessionConfig
    from .checkpoint import load_model
    from .frames import IntensityConfig

    weights = resolve_weights(getattr(args, "weights", None))
    sam2_checkpoint = getattr(args, "sam2_checkpoint", None)
    if weights is None and sam2_checkpoint is None:
        raise ValueError("SAM2-3dMed needs weights: --weights (a SAM2-3dMed checkpoint, or 'demo') and/or "
                         "--sam2-checkpoint (an official SAM2.1 checkpoint)")
    model = load_model(weights=weights, sam2_checkpoint=sam2_checkpoint, variant=getattr(args, "config", None),
                       device=device)
    modality = getattr(args, "modality", None) or guess_modality(volume.array)
    intensity = IntensityConfig(modality=modality, ct_window=getattr(args, "window", None) or "soft_tissue")
    session = PropagationSession(model, PropagationSessionConfig(
        slice_direction=getattr(args, "axis", None) or "axial", intensity=intensity))
    session.set_volume(volume)
    buffer = np.zeros(volume.shape_kji, dtype=np.uint8)
    session.set_target_buffer(buffer)
    points = [np.asarray(p, dtype=np.float64) for p in (*positives, *negatives)]
    flags = [True] * len(positives) + [False] * len(negatives)
    session.add_prompt(points=points, positive=flags, box=None if box is None else np.asarray(box, float),
                       space="ras")
    session.propagate()
    return buffer
