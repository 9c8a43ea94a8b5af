"""Naming what a loaded checkpoint is, for error messages and reports (no torch needed).

Kinds: ``sam-vit-b``, ``sam-vit-l``, ``sam-vit-h`` (Meta's SAM state dicts), ``sam2`` (a
``{"model": state_dict}`` file of SAM 2 / 2.1; the SAM2 package's detector names its size),
``sam3d-adapter-official`` (a 3DSAM-adapter release), ``sam3d-adapter`` (this project's format)
and ``unknown``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SAM_EMBED_DIMS = {768: "sam-vit-b", 1024: "sam-vit-l", 1280: "sam-vit-h"}
PROJECT_SAM3D_FORMAT = "volsam.sam3d_adapter"
OFFICIAL_SAM3D_SECTIONS = ("encoder_dict", "feature_dict", "decoder_dict")
_WHOLE_MODEL_PREFIXES = ("image_encoder.", "prompt_encoders.", "mask_decoder.")

KIND_DESCRIPTIONS = {
    "sam-vit-b": "a SAM ViT-B checkpoint",
    "sam-vit-l": "a SAM ViT-L checkpoint",
    "sam-vit-h": "a SAM ViT-H checkpoint",
    "sam2": "a SAM 2 checkpoint ({'model': state_dict})",
    "sam3d-adapter-official": "a 3DSAM-adapter release checkpoint",
    "sam3d-adapter": "a volsam 3DSAM-adapter checkpoint",
    "unknown": "a file of unknown layout",
}


def sam_kind(state: Any) -> str | None:
    """``sam-vit-b/l/h`` for a SAM (v1) whole-model state dict, else None."""
    if not isinstance(state, Mapping):
        return None
    weight = state.get("image_encoder.patch_embed.proj.weight")
    if weight is None or not hasattr(weight, "shape") or not any(k.startswith("mask_decoder.") for k in state):
        return None
    return SAM_EMBED_DIMS.get(int(weight.shape[0]), None)


def is_sam2(content: Any) -> bool:
    model = content.get("model") if isinstance(content, Mapping) else None
    return isinstance(model, Mapping) and any(
        str(k).startswith(("image_encoder.trunk.", "sam_mask_decoder.", "memory_attention.")) for k in model)


def classify(content: Any, metadata: Mapping | None = None, sidecar: Mapping | None = None) -> str:
    """The kind of a loaded checkpoint (see the module docstring)."""
    metadata, sidecar = metadata or {}, sidecar or {}
    if isinstance(content, Mapping):
        if all(section in content for section in OFFICIAL_SAM3D_SECTIONS):
            return "sam3d-adapter-official"
        if PROJECT_SAM3D_FORMAT in (content.get("format"), metadata.get("format"), sidecar.get("format")):
            return "sam3d-adapter"
        if is_sam2(content):
            return "sam2"
        kind = sam_kind(content)
        if kind:
            return kind
        keys = [k for k in content if isinstance(k, str)]
        if keys and len(keys) == len(content) and all(k.startswith(_WHOLE_MODEL_PREFIXES) for k in keys) \
                and any(k.startswith("image_encoder.blocks.") for k in keys) and "config" in sidecar:
            return "sam3d-adapter"
    return "unknown"


def describe_kind(kind: str) -> str:
    return KIND_DESCRIPTIONS.get(kind, kind)
