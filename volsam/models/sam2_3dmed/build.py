"""Building SAM2-3dMed from the ``sam2`` package's own SAM2.1 configs, with explicit overrides.

The package's ``build_sam2*`` functions compose configs through a process-wide Hydra search
path and take overrides as ``++model.x=y`` strings. Here the package's YAML file is read
directly with OmegaConf, the sizes of a :class:`~.config.SAM2Architecture` are written into it
key by key, and ``hydra.utils.instantiate`` builds the stock ``SAM2Base`` from it: no Hydra
global state is read or changed by this module (importing ``sam2`` itself still registers its
config module with Hydra, which the package does on import).
"""

from __future__ import annotations

import importlib.resources
from typing import TYPE_CHECKING, Any

from .config import SAM2_VARIANTS, DecoderPostprocessing, SAM2Architecture, SAM2ThreeDMedConfig

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base

    from .model import SAM2ThreeDMed


def sam2_model_settings(architecture: SAM2Architecture,
                        postprocessing: DecoderPostprocessing | None = None) -> dict[str, Any]:
    """The ``model`` section of the package's SAM2.1 config with this architecture's overrides,
    as a plain nested dict (``_target_`` keys included) ready for ``hydra.utils.instantiate``."""
    from omegaconf import OmegaConf

    postprocessing = postprocessing or DecoderPostprocessing()
    path = importlib.resources.files("sam2") / "configs" / "sam2.1" / SAM2_VARIANTS[architecture.variant]
    model = OmegaConf.load(str(path)).model
    a = architecture
    overrides: dict[str, Any] = {
        "image_size": a.image_size,
        # RoPE tables in memory attention are sized for the stride-16 feature map.
        "memory_attention.layer.self_attention.feat_sizes": [a.feature_size, a.feature_size],
        "memory_attention.layer.cross_attention.feat_sizes": [a.feature_size, a.feature_size],
        "binarize_mask_from_pts_for_mem_enc": postprocessing.binarize_mask_from_pts_for_mem_enc,
        "sam_mask_decoder_extra_args": {
            "dynamic_multimask_via_stability": postprocessing.dynamic_multimask_via_stability,
            "dynamic_multimask_stability_delta": postprocessing.dynamic_multimask_stability_delta,
            "dynamic_multimask_stability_thresh": postprocessing.dynamic_multimask_stability_thresh,
        },
    }
    trunk = {"embed_dim": a.trunk_embed_dim, "num_heads": a.trunk_num_heads, "stages": a.trunk_stages,
             "global_att_blocks": a.trunk_global_att_blocks, "window_spec": a.trunk_window_spec,
             "window_pos_embed_bkg_spatial_size": a.trunk_window_pos_embed_bkg_spatial_size}
    for key, value in trunk.items():
        if value is not None:
            overrides[f"image_encoder.trunk.{key}"] = list(value) if isinstance(value, tuple) else value
    if a.trunk_embed_dim is not None:
        # Hiera doubles the width at each of its three stage shifts; the neck lists the
        # stages from the coarsest.
        e = a.trunk_embed_dim
        overrides["image_encoder.neck.backbone_channel_list"] = [8 * e, 4 * e, 2 * e, e]
    if a.hidden_dim is not None:
        h = a.hidden_dim
        overrides.update({
            "image_encoder.neck.d_model": h,
            "image_encoder.neck.position_encoding.num_pos_feats": h,
            "memory_attention.d_model": h,
            "memory_attention.layer.d_model": h,
            "memory_attention.layer.self_attention.embedding_dim": h,
            "memory_attention.layer.cross_attention.embedding_dim": h,
            "memory_encoder.in_dim": h,
            "memory_encoder.mask_downsampler.embed_dim": h,
            "memory_encoder.fuser.layer.dim": h,
        })
    if a.memory_dim is not None:
        overrides.update({
            "memory_encoder.out_dim": a.memory_dim,
            "memory_encoder.position_encoding.num_pos_feats": a.memory_dim,
            "memory_attention.layer.cross_attention.kv_in_dim": a.memory_dim,
        })
    if a.memory_attention_layers is not None:
        overrides["memory_attention.num_layers"] = a.memory_attention_layers
    if a.memory_attention_feedforward is not None:
        overrides["memory_attention.layer.dim_feedforward"] = a.memory_attention_feedforward
    if a.num_maskmem is not None:
        overrides["num_maskmem"] = a.num_maskmem
    for key, value in overrides.items():
        OmegaConf.update(model, key, value, merge=False, force_add=True)
    return OmegaConf.to_container(model, resolve=True)


def build_sam2_base(architecture: SAM2Architecture,
                    postprocessing: DecoderPostprocessing | None = None) -> SAM2Base:
    """A stock ``sam2.modeling.sam2_base.SAM2Base`` of this architecture, randomly initialised,
    in eval mode on the CPU."""
    from hydra.utils import instantiate

    settings = sam2_model_settings(architecture, postprocessing)
    if settings.get("_target_") != "sam2.modeling.sam2_base.SAM2Base":
        raise ValueError(f"the sam2 package's config for {architecture.variant!r} builds "
                         f"{settings.get('_target_')!r}; expected sam2.modeling.sam2_base.SAM2Base")
    return instantiate(settings, _recursive_=True).eval()


def build_model(config: SAM2ThreeDMedConfig) -> SAM2ThreeDMed:
    """A randomly initialised SAM2-3dMed (SAM2.1 + BD branch fused into the mask path + SRPP),
    in eval mode on the CPU. Load weights with :mod:`.checkpoint`."""
    from .boundary import BoundaryBranch, attach_boundary_fusion
    from .model import SAM2ThreeDMed
    from .srpp import SliceRelativePositionHead

    sam2_base = build_sam2_base(config.architecture, config.postprocessing)
    decoder = sam2_base.sam_mask_decoder
    boundary = BoundaryBranch(channels=decoder.transformer_dim // 8, token_grid=config.boundary.token_grid)
    boundary.fusion_enabled = config.boundary.fusion_enabled
    attach_boundary_fusion(decoder, boundary)
    srpp = SliceRelativePositionHead(feature_dim=sam2_base.hidden_dim, dim=config.srpp.dim,
                                     layers=config.srpp.layers, heads=config.srpp.heads,
                                     mlp_hidden=config.srpp.mlp_hidden)
    return SAM2ThreeDMed(sam2_base, boundary, srpp, config).eval()
