"""Export of a 3DSAM-adapter checkpoint of this project to the official release layout.

The official scripts read a ``torch.save``d dict with ``encoder_dict``, ``feature_dict`` (the
four prompt encoders) and ``decoder_dict``, plus ``epoch``, ``best_val_loss`` and the three
optimizer states (spec section 2). The run's optimizer states are included when the run's
``resume.pt`` is beside the checkpoint (their parameter order is the official one: the trainable
tensors of each part in module order), else they are empty.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def official_release(model, epoch: int = 0, best_val_loss: float = math.nan, optimizers=None) -> dict:
    """The release dict of a model (any configuration; the official code builds only vit_b)."""
    from ..models.sam3d_adapter.checkpoints import official_sections

    encoder_opt, feature_opt, decoder_opt = optimizers if optimizers is not None else ({}, {}, {})
    return {"epoch": int(epoch), "best_val_loss": float(best_val_loss), **official_sections(model),
            "encoder_opt": encoder_opt, "feature_opt": feature_opt, "decoder_opt": decoder_opt}


def export_official(checkpoint: str | os.PathLike, path: str | os.PathLike,
                    sam: str | os.PathLike | None = None) -> Path:
    """Write ``checkpoint`` (a project checkpoint of the vit_b configuration) as a release file;
    ``sam``: the SAM ViT-B checkpoint, for checkpoints saved without SAM's frozen tensors."""
    import torch

    from ..models.sam3d_adapter.checkpoints import from_checkpoint, project_parts
    from ..weights.loading import load_checkpoint

    checkpoint, path = Path(checkpoint), Path(path)
    model = from_checkpoint(checkpoint, sam=sam)
    if model.config.name != "vit_b":
        raise ValueError(f"{checkpoint}: the official layout exists for the vit_b configuration only, this model is "
                         f"{model.config.name!r}")
    _, _, provenance = project_parts(load_checkpoint(checkpoint))
    optimizers = None
    resume = checkpoint.parent / "resume.pt"
    if resume.is_file():
        state = torch.load(resume, map_location="cpu", weights_only=True)
        if len(state.get("optimizers", [])) == 3:
            optimizers = state["optimizers"]
    release = official_release(model, provenance.get("epoch", 0),
                               provenance.get("validation", {}).get("dice_loss", math.nan), optimizers)
    torch.save(release, path)
    return path
