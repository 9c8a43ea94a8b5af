"""The official freezing rule: which tensors 3DSAM-adapter trains.

In the image encoder only the new and the normalisation tensors train: ``depth_embed``,
``slice_embed``, every block's ``norm1``/``norm2``/``adapter`` and ``attn.rel_pos_d``, and the
necks. SAM's patch embedding, position table, attention and MLP weights, its ``rel_pos_h``/
``rel_pos_w`` tables and the ``attn.lr`` scalars stay frozen. The four prompt encoders and the
decoder train entirely (a project-only point-label embedding, when present, trains too).
"""

from __future__ import annotations

import re

from torch import nn

_TRAINABLE_ENCODER_KEY = re.compile(
    r"^(depth_embed|slice_embed\..+|blocks\.\d+\.(norm1|norm2|adapter)\..+|blocks\.\d+\.attn\.rel_pos_d|neck_3d\..+)$")


def is_trainable_encoder_key(key: str) -> bool:
    """For a key of the image encoder's state dict (``encoder_dict``)."""
    return bool(_TRAINABLE_ENCODER_KEY.match(key))


def is_trainable(model_key: str) -> bool:
    """For a parameter name of the whole :class:`Sam3DAdapter`."""
    if model_key.startswith("image_encoder."):
        return is_trainable_encoder_key(model_key[len("image_encoder."):])
    return model_key.startswith(("prompt_encoders.", "mask_decoder."))


def apply_official_freezing(model: nn.Module) -> nn.Module:
    """Set ``requires_grad`` on every parameter of a Sam3DAdapter by the official rule."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(is_trainable(name))
    return model
