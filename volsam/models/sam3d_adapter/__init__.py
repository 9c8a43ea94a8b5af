"""3DSAM-adapter (Gong et al., Medical Image Analysis 2024): SAM ViT-B made volumetric with
spatial adapters, a point-sampling prompt encoder and a multi-level 3D decoder.

Specification: ``shared/spec/3dsam-adapter.md``; checkpoint layout: ``3dsam-adapter-state-dict.tsv``.
"""

from .build import build_sam3d_adapter, sam3d_adapter_registry
from .config import (
    CONFIGS,
    TINY,
    VIT_B,
    ImageEncoderConfig,
    MaskDecoderConfig,
    PromptEncoderConfig,
    Sam3DAdapterConfig,
    get_config,
)
from .freezing import apply_official_freezing, is_trainable
from .sam3d_adapter import CropEmbedding, Sam3DAdapter

__all__ = [
    "CONFIGS", "TINY", "VIT_B", "CropEmbedding", "ImageEncoderConfig", "MaskDecoderConfig", "PromptEncoderConfig",
    "Sam3DAdapter", "Sam3DAdapterConfig", "apply_official_freezing", "build_sam3d_adapter", "get_config",
    "is_trainable", "sam3d_adapter_registry",
]
