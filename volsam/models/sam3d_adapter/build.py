"""Building 3DSAM-adapter models: a registry of named configurations and one builder."""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial

import torch

from .config import CONFIGS, Sam3DAdapterConfig, get_config
from .freezing import apply_official_freezing
from .image_encoder import ImageEncoderViT3d
from .mask_decoder import MultiLevelMaskDecoder
from .prompt_encoder import PointPromptEncoder
from .sam3d_adapter import Sam3DAdapter


def build_sam3d_adapter(config: Sam3DAdapterConfig | str = "vit_b", patch_path: str = "folded",
                        device: torch.device | str | None = None) -> Sam3DAdapter:
    """A freshly initialised model (PyTorch default inits, as the official training starts)
    with the official freezing applied. ``device="meta"`` builds the structure without memory."""
    if isinstance(config, str):
        config = get_config(config)
    config.validate()
    with torch.device(device) if device is not None else nullcontext():
        image_encoder = ImageEncoderViT3d(config.image_encoder, patch_path=patch_path)
        prompt_encoders = [PointPromptEncoder(config.prompt_encoder, config.crop_size)
                           for _ in range(config.prompt_encoder.count)]
        mask_decoder = MultiLevelMaskDecoder(config.mask_decoder)
        model = Sam3DAdapter(image_encoder, prompt_encoders, mask_decoder, config)
    return apply_official_freezing(model)


#: Named variants: ``sam3d_adapter_registry["vit_b"]()`` builds the paper's model.
sam3d_adapter_registry = {name: partial(build_sam3d_adapter, config) for name, config in CONFIGS.items()}
