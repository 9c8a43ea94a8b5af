"""The SAM2-3dMed network: a stock SAM2.1 with the BD branch fused into its mask path, plus the
SRPP head, composed by injection (see :func:`.build.build_model`)."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from .boundary import BoundaryBranch
from .config import SAM2ThreeDMedConfig
from .srpp import SliceRelativePositionHead

#: Parts kept frozen in training (spec P2): the Hiera image encoder with its FPN neck.
FROZEN_PREFIXES = ("sam2.image_encoder.",)


class SAM2ThreeDMed(nn.Module):
    """SAM2.1 (``sam2``) + boundary branch (``boundary``) + SRPP head (``srpp``).

    ``sam2`` is an unmodified ``sam2.modeling.sam2_base.SAM2Base`` whose parameter names are
    those of the official checkpoints; the boundary branch is fused into its mask decoder
    without adding parameters there (see :mod:`.boundary`). Inference goes through
    :class:`.tracker.SliceTracker`, which keeps the per-volume state outside the model.
    """

    def __init__(self, sam2, boundary: BoundaryBranch, srpp: SliceRelativePositionHead,
                 config: SAM2ThreeDMedConfig):
        super().__init__()
        self.sam2 = sam2
        self.boundary = boundary
        self.srpp = srpp
        self._config = config

    @property
    def config(self) -> SAM2ThreeDMedConfig:
        """The configuration, with the BD fusion switch as it is now."""
        return replace(self._config, boundary=replace(self._config.boundary,
                                                      fusion_enabled=self.boundary.fusion_enabled))

    def forward(self, *args, **kwargs):
        raise TypeError("SAM2ThreeDMed has no single forward pass; use "
                        "volsam.models.sam2_3dmed.tracker.SliceTracker for inference")

    @property
    def image_size(self) -> int:
        return int(self.sam2.image_size)

    @property
    def boundary_fusion_enabled(self) -> bool:
        return self.boundary.fusion_enabled

    @boundary_fusion_enabled.setter
    def boundary_fusion_enabled(self, enabled: bool) -> None:
        self.boundary.fusion_enabled = bool(enabled)

    def trained_parameter_names(self) -> list[str]:
        """State-dict keys of the parts SAM2-3dMed trains (everything but the image encoder)."""
        return [k for k in self.state_dict() if not k.startswith(FROZEN_PREFIXES)]

    def freeze_image_encoder(self) -> None:
        """Freeze the parts spec P2 keeps frozen (for training)."""
        for name, parameter in self.named_parameters():
            parameter.requires_grad_(not name.startswith(FROZEN_PREFIXES))
