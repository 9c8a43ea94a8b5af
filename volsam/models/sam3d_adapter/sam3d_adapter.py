"""3DSAM-adapter: image encoder, prompt encoders and mask decoder composed."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .click_maps import click_maps
from .config import Sam3DAdapterConfig
from .image_encoder import ImageEncoderViT3d
from .mask_decoder import DecoderCache, MultiLevelMaskDecoder
from .prompt_encoder import PointPromptEncoder


@dataclass
class CropEmbedding:
    """Everything one crop needs before clicks: the last neck map F4 (before the prompt
    encoder refines it) and the decoder's prompt-independent part (which holds what F1..F3
    contribute). Computed once per crop, reused by every click."""

    image_features: torch.Tensor
    decoder_cache: DecoderCache


class Sam3DAdapter(nn.Module):
    """Click-promptable volumetric segmenter (Gong et al., MedIA 2024).

    Crops are (1, C, D, H, W) tensors of ``config.crop_size``^3 voxels at 1 mm (z-scored CT;
    C = 3 equal channels as in the official code, or 1). Clicks are (N, 3) crop voxel
    coordinates in the order [d, w, h]. Logits are (1, 2, D, H, W): background, tumour.

    Four prompt encoders are held because the official checkpoints store four; only
    ``config.prompt_encoder.used_index`` runs.
    """

    def __init__(self, image_encoder: ImageEncoderViT3d, prompt_encoders: list[PointPromptEncoder],
                 mask_decoder: MultiLevelMaskDecoder, config: Sam3DAdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = image_encoder
        self.prompt_encoders = nn.ModuleList(prompt_encoders)
        self.mask_decoder = mask_decoder

    @property
    def prompt_encoder(self) -> PointPromptEncoder:
        return self.prompt_encoders[self.config.prompt_encoder.used_index]

    @property
    def has_point_labels(self) -> bool:
        return self.config.prompt_encoder.point_label_embedding

    def embed(self, crop: torch.Tensor) -> CropEmbedding:
        """Run the image encoder and the decoder's prompt-independent part on one crop."""
        features = self.image_encoder(crop)
        # Grey crop in (H, W, D), halved: trilinear x0.5, align_corners=False (a 2x2x2 mean).
        grey = crop[:, :1].permute(0, 1, 3, 4, 2)
        grey = F.interpolate(grey, scale_factor=0.5, mode="trilinear", align_corners=False)
        cache = self.mask_decoder.prepare(features[0], features[1], features[2], grey.to(features[0].dtype))
        return CropEmbedding(features[3], cache)

    def predict(self, embedding: CropEmbedding, points_dwh: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (1, classes, D, H, W) for clicks on an embedded crop."""
        refined = self.prompt_encoder(embedding.image_features, points_dwh, labels)
        logits = self.mask_decoder.decode(embedding.decoder_cache, refined, self.click_maps(points_dwh, labels))
        return logits.permute(0, 1, 4, 2, 3)

    def click_maps(self, points_dwh: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        """The decoder's click maps (:mod:`.click_maps`) on its half-crop grid, where the
        configuration reads them; None otherwise."""
        if not self.config.mask_decoder.click_maps:
            return None
        size = self.config.crop_size
        return click_maps(points_dwh, labels if self.has_point_labels else None, size // 2, size)

    def forward(self, crop: torch.Tensor, points_dwh: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.predict(self.embed(crop), points_dwh, labels)
