"""Configurations of SAM2-3dMed as plain dataclasses (no torch, no Hydra).

A :class:`SAM2ThreeDMedConfig` names everything needed to rebuild a model: which SAM2.1
configuration shipped with the ``sam2`` package it starts from, the sizes it overrides (so a
tiny custom network trained from scratch is data, not code), and the two SAM2-3dMed heads.
It is stored as JSON beside or inside every checkpoint of this project.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: SAM2.1 sizes -> config file shipped in the ``sam2`` package (``sam2/configs/sam2.1/``)
SAM2_VARIANTS = {
    "tiny": "sam2.1_hiera_t.yaml",
    "small": "sam2.1_hiera_s.yaml",
    "base_plus": "sam2.1_hiera_b+.yaml",
    "large": "sam2.1_hiera_l.yaml",
}


def _check_positive(name: str, value, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _int_tuple(name: str, value, length: int | None = None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        values = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a list of integers, got {value!r}") from None
    if length is not None and len(values) != length:
        raise ValueError(f"{name} must have {length} values, got {len(values)} ({list(values)})")
    return values


@dataclass(frozen=True)
class SAM2Architecture:
    """A SAM2.1 configuration from the ``sam2`` package plus explicit size overrides.

    Every ``None`` keeps the value of the package's config file for ``variant``. The trunk
    fields are those of ``sam2.modeling.backbones.hieradet.Hiera``; ``hidden_dim`` is the width
    shared by the FPN neck, memory attention and the SAM heads; ``memory_dim`` the width of the
    memory encoder's output.
    """

    variant: str = "tiny"
    image_size: int = 512
    trunk_embed_dim: int | None = None
    trunk_num_heads: int | None = None
    trunk_stages: tuple[int, ...] | None = None
    trunk_global_att_blocks: tuple[int, ...] | None = None
    trunk_window_spec: tuple[int, ...] | None = None
    trunk_window_pos_embed_bkg_spatial_size: tuple[int, int] | None = None
    hidden_dim: int | None = None
    memory_dim: int | None = None
    memory_attention_layers: int | None = None
    memory_attention_feedforward: int | None = None
    num_maskmem: int | None = None

    def __post_init__(self):
        if self.variant not in SAM2_VARIANTS:
            raise ValueError(f"unknown SAM2.1 variant {self.variant!r}; expected one of "
                             f"{', '.join(SAM2_VARIANTS)}")
        for name in ("image_size", "trunk_embed_dim", "trunk_num_heads", "hidden_dim", "memory_dim",
                     "memory_attention_layers", "memory_attention_feedforward", "num_maskmem"):
            _check_positive(name, getattr(self, name))
        object.__setattr__(self, "trunk_stages", _int_tuple("trunk_stages", self.trunk_stages, 4))
        object.__setattr__(self, "trunk_global_att_blocks",
                           _int_tuple("trunk_global_att_blocks", self.trunk_global_att_blocks))
        object.__setattr__(self, "trunk_window_spec",
                           _int_tuple("trunk_window_spec", self.trunk_window_spec, 4))
        object.__setattr__(self, "trunk_window_pos_embed_bkg_spatial_size",
                           _int_tuple("trunk_window_pos_embed_bkg_spatial_size",
                                      self.trunk_window_pos_embed_bkg_spatial_size, 2))
        # The trunk downsamples by 32 in total, and the windowed positional embedding of the
        # first stage (stride 4) must tile the feature map.
        if self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32 (the trunk's total stride), "
                             f"got {self.image_size}")
        if self.trunk_stages is not None and self.trunk_global_att_blocks is not None:
            depth = sum(self.trunk_stages)
            if any(not 0 <= b < depth for b in self.trunk_global_att_blocks):
                raise ValueError(f"trunk_global_att_blocks {list(self.trunk_global_att_blocks)} must "
                                 f"index blocks 0..{depth - 1} of trunk_stages {list(self.trunk_stages)}")
        if self.trunk_window_spec is not None and (self.image_size // 4) % self.trunk_window_spec[0]:
            raise ValueError(f"image_size / 4 = {self.image_size // 4} must be a multiple of the first "
                             f"window size {self.trunk_window_spec[0]}")
        if self.hidden_dim is not None and self.hidden_dim % 16:
            # The SAM decoder's 8 heads work on hidden_dim / 2 channels in cross-attention.
            raise ValueError(f"hidden_dim must be a multiple of 16, got {self.hidden_dim}")
        hidden = self.hidden_dim or 256
        memory = self.memory_dim or 64
        if hidden % memory:
            # Object pointers (hidden_dim wide) are split into memory_dim-wide tokens.
            raise ValueError(f"hidden_dim ({hidden}) must be a multiple of memory_dim ({memory})")

    @property
    def feature_size(self) -> int:
        """Side of the stride-16 feature map the mask decoder and memory attention work on."""
        return self.image_size // 16


@dataclass(frozen=True)
class BoundaryConfig:
    """The boundary-detection (BD) branch beside the mask decoder (spec D5).

    ``token_grid``: side of the pooled token grid of the single-head cross-attention.
    ``fusion_enabled``: whether the branch's output is added into the mask path; off, the mask
    path is exactly SAM2.1's.
    """

    token_grid: int = 32
    fusion_enabled: bool = True

    def __post_init__(self):
        _check_positive("token_grid", self.token_grid, allow_none=False)


@dataclass(frozen=True)
class SRPPConfig:
    """The slice relative position prediction head (spec P4, D4); used in training only."""

    dim: int = 128
    layers: int = 2
    heads: int = 4
    mlp_hidden: int = 128

    def __post_init__(self):
        for name in ("dim", "layers", "heads", "mlp_hidden"):
            _check_positive(name, getattr(self, name), allow_none=False)
        if self.dim % self.heads:
            raise ValueError(f"SRPP dim ({self.dim}) must be a multiple of its heads ({self.heads})")


@dataclass(frozen=True)
class DecoderPostprocessing:
    """Inference settings of SAM2's mask decoder and memory, as the ``sam2`` package's
    ``build_sam2_video_predictor(apply_postprocessing=True)`` sets them."""

    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    binarize_mask_from_pts_for_mem_enc: bool = True


@dataclass(frozen=True)
class SAM2ThreeDMedConfig:
    """Everything needed to rebuild a SAM2-3dMed network."""

    architecture: SAM2Architecture = field(default_factory=SAM2Architecture)
    boundary: BoundaryConfig = field(default_factory=BoundaryConfig)
    srpp: SRPPConfig = field(default_factory=SRPPConfig)
    postprocessing: DecoderPostprocessing = field(default_factory=DecoderPostprocessing)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAM2ThreeDMedConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a newer or foreign file)."""
        if not isinstance(data, dict):
            raise ValueError(f"a SAM2-3dMed model config must be a JSON object, got {type(data).__name__}")
        parts = {"architecture": SAM2Architecture, "boundary": BoundaryConfig, "srpp": SRPPConfig,
                 "postprocessing": DecoderPostprocessing}
        unknown = set(data) - set(parts)
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)} in a SAM2-3dMed model config; expected "
                             f"{sorted(parts)}")
        values = {}
        for key, part in parts.items():
            section = data.get(key, {})
            if not isinstance(section, dict):
                raise ValueError(f"model config section {key!r} must be a JSON object, got {section!r}")
            names = {f.name for f in fields(part)}
            unknown = set(section) - names
            if unknown:
                raise ValueError(f"unknown keys {sorted(unknown)} in model config section {key!r}; "
                                 f"expected some of {sorted(names)}")
            values[key] = part(**section)
        return cls(**values)


def tiny_test_config(image_size: int = 128) -> SAM2ThreeDMedConfig:
    """A very small custom configuration (about 1.4 M parameters, 5.5 MB in float32) for tests
    and for demo models trained from scratch."""
    return SAM2ThreeDMedConfig(
        architecture=SAM2Architecture(
            variant="tiny", image_size=image_size, trunk_embed_dim=16, trunk_num_heads=1,
            trunk_stages=(1, 1, 2, 1), trunk_global_att_blocks=(3,), hidden_dim=64, memory_dim=32,
            memory_attention_layers=1, memory_attention_feedforward=128),
        srpp=SRPPConfig(dim=32, layers=1, heads=2, mlp_hidden=32))
