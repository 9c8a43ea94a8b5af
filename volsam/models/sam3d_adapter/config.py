"""Configurations of 3DSAM-adapter as data.

``VIT_B`` is the paper's model (SAM ViT-B image encoder, 128^3 crops); ``TINY`` keeps every
structural feature (shifted even blocks, "global" blocks with longer relative tables that are
resampled, four neck taps, four prompt encoders, the multi-level decoder) at sizes that run in
milliseconds, for tests.

Geometry that the official code hard-wires and that the configuration therefore derives:
the crop is upsampled ``upsample_factor`` times, cut into ``patch_size`` patches in-slice and
``patch_size`` slices deep, so one token covers ``patch_size / upsample_factor`` crop voxels per
axis and the token grid is ``crop_size * upsample_factor / patch_size`` per axis (32 for the
paper). SAM's absolute position table is average-pooled 2x2 to that grid, and the decoder
works at half the crop size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ImageEncoderConfig:
    crop_size: int = 128
    upsample_factor: int = 4
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    window_size: int = 8
    #: Side of SAM's stored absolute position table (1024 / 16); pooled 2x2 at every forward.
    pos_embed_size: int = 64
    #: Rows of the relative tables of windowed SAM blocks (2 * 14 - 1) and of global ones (2 * 64 - 1).
    window_rel_pos_length: int = 27
    global_rel_pos_length: int = 127
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    #: Blocks after which a neck turns the tokens into a feature map (the last must be depth - 1).
    neck_taps: tuple[int, ...] = (2, 5, 8, 11)
    out_chans: int = 256
    adapter_dim: int = 384
    layer_norm_eps: float = 1e-6

    @property
    def token_grid(self) -> int:
        return self.crop_size * self.upsample_factor // self.patch_size

    @property
    def voxels_per_token(self) -> int:
        return self.patch_size // self.upsample_factor

    @property
    def shift_size(self) -> int:
        return self.window_size // 2

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def rel_pos_length(self, block_index: int) -> int:
        if block_index in self.global_attn_indexes:
            return self.global_rel_pos_length
        return self.window_rel_pos_length

    def validate(self) -> None:
        if self.crop_size * self.upsample_factor % self.patch_size:
            raise ValueError(f"crop_size * upsample_factor ({self.crop_size * self.upsample_factor}) must be "
                             f"a multiple of patch_size ({self.patch_size})")
        if self.patch_size % self.upsample_factor:
            raise ValueError(f"patch_size ({self.patch_size}) must be a multiple of upsample_factor "
                             f"({self.upsample_factor}) so that a token covers whole crop voxels")
        if self.token_grid % self.window_size:
            raise ValueError(f"the token grid ({self.token_grid}) must be a multiple of window_size "
                             f"({self.window_size}): the shift mask is built for an unpadded grid")
        if self.pos_embed_size != 2 * self.token_grid:
            raise ValueError(f"pos_embed_size ({self.pos_embed_size}) must be twice the token grid "
                             f"({self.token_grid}): the table is average-pooled 2x2")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        if len(self.neck_taps) != 4 or self.neck_taps[-1] != self.depth - 1:
            raise ValueError(f"neck_taps must name 4 blocks, the last being depth - 1 = {self.depth - 1}, "
                             f"got {self.neck_taps}")
        if list(self.neck_taps) != sorted(set(self.neck_taps)) or self.neck_taps[0] < 0:
            raise ValueError(f"neck_taps must be increasing block indices, got {self.neck_taps}")


@dataclass(frozen=True)
class PromptEncoderConfig:
    embed_dim: int = 256
    num_heads: int = 8
    mlp_dim: int = 2048
    depth: int = 2
    num_global_tokens: int = 10
    attention_downsample_rate: int = 2
    num_pos_feats: int = 128
    #: How many prompt encoders the checkpoint holds (the official code builds four) and which one runs.
    count: int = 4
    used_index: int = 3
    #: A learned positive/negative embedding added to point tokens. The official model has none
    #: (its clicks carry no label); only models fine-tuned by this project may enable it.
    point_label_embedding: bool = False

    def validate(self) -> None:
        if not 0 <= self.used_index < self.count:
            raise ValueError(f"used_index {self.used_index} must be in [0, {self.count})")
        internal = self.embed_dim // self.attention_downsample_rate
        if self.embed_dim % self.num_heads or internal % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide embed_dim ({self.embed_dim}) "
                             f"and embed_dim / attention_downsample_rate ({internal})")


@dataclass(frozen=True)
class MaskDecoderConfig:
    """``click_maps``: the classifier also reads maps of where the clicks are
    (:mod:`.click_maps`); not in the official layout, an option for configurations trained
    from scratch."""

    in_chans: int = 256
    head_chans: int = 128
    num_classes: int = 2
    click_maps: bool = False


@dataclass(frozen=True)
class Sam3DAdapterConfig:
    name: str = "vit_b"
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    prompt_encoder: PromptEncoderConfig = field(default_factory=PromptEncoderConfig)
    mask_decoder: MaskDecoderConfig = field(default_factory=MaskDecoderConfig)

    def validate(self) -> Sam3DAdapterConfig:
        self.image_encoder.validate()
        self.prompt_encoder.validate()
        if self.prompt_encoder.embed_dim != self.image_encoder.out_chans:
            raise ValueError(f"prompt_encoder.embed_dim ({self.prompt_encoder.embed_dim}) must equal "
                             f"image_encoder.out_chans ({self.image_encoder.out_chans})")
        if self.mask_decoder.in_chans != self.image_encoder.out_chans:
            raise ValueError(f"mask_decoder.in_chans ({self.mask_decoder.in_chans}) must equal "
                             f"image_encoder.out_chans ({self.image_encoder.out_chans})")
        return self

    @property
    def crop_size(self) -> int:
        return self.image_encoder.crop_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Sam3DAdapterConfig:
        if not isinstance(data, dict):
            kind = type(data).__name__
            raise ValueError(f"a 3DSAM-adapter configuration must be a JSON object, got {kind}")  # noqa: TRY004
        parts = {"image_encoder": ImageEncoderConfig, "prompt_encoder": PromptEncoderConfig,
                 "mask_decoder": MaskDecoderConfig}
        unknown = set(data) - set(parts) - {"name"}
        if unknown:
            raise ValueError(f"unknown 3DSAM-adapter configuration keys {sorted(unknown)}; "
                             f"expected name, {', '.join(parts)}")
        kwargs = {"name": str(data.get("name", "custom"))}
        for key, part in parts.items():
            values = dict(data.get(key, {}))
            names = {f.name for f in dataclasses.fields(part)}
            if set(values) - names:
                raise ValueError(f"unknown {key} configuration keys {sorted(set(values) - names)}")
            for f in dataclasses.fields(part):  # JSON turns tuples into lists
                if f.name in values and isinstance(values[f.name], list):
                    values[f.name] = tuple(values[f.name])
            kwargs[key] = part(**values)
        return cls(**kwargs).validate()


VIT_B = Sam3DAdapterConfig().validate()

TINY = Sam3DAdapterConfig(
    name="tiny",
    image_encoder=ImageEncoderConfig(
        crop_size=32, embed_dim=32, depth=4, num_heads=2, window_size=4, pos_embed_size=16,
        # Neither length is 2 * window - 1 = 7, so the resampling of the tables is exercised.
        window_rel_pos_length=9, global_rel_pos_length=15, global_attn_indexes=(1, 3),
        neck_taps=(0, 1, 2, 3), out_chans=16, adapter_dim=16),
    prompt_encoder=PromptEncoderConfig(embed_dim=16, num_heads=2, mlp_dim=32, num_pos_feats=8),
    mask_decoder=MaskDecoderConfig(in_chans=16, head_chans=8),
).validate()

CONFIGS: dict[str, Sam3DAdapterConfig] = {"vit_b": VIT_B, "tiny": TINY}


def get_config(name: str) -> Sam3DAdapterConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown 3DSAM-adapter configuration {name!r}; expected one of "
                         f"{', '.join(CONFIGS)}") from None
