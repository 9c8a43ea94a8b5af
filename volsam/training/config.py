"""What a training run is, as one dataclass, and the model configurations it can start from.

Model configurations by name:

* 3DSAM-adapter: ``vit_b`` (the paper's model, initialised from SAM ViT-B), ``tiny`` (the
  package's structural test model, crop 32) and ``tiny-demo`` (the demo model: crop 64, four
  blocks of width 64, labelled clicks), both trained from scratch.
* SAM2-3dMed: the SAM2.1 sizes ``tiny``, ``small``, ``base_plus``, ``large`` (the frozen image
  encoder comes from an official SAM2.1 checkpoint), ``tiny-test`` (a test network at 64 px) and
  ``tiny-demo`` (the demo network at 192 px), trained from scratch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from ..methods import get_method, method_names

MODELS = method_names()
#: How a training sample's lesion is chosen: "case" (each training case once per epoch, each of
#: its lesions equally often) or "size" (:class:`volsam.training.samples.SizeBalancedLesions`).
LESION_SAMPLINGS = ("case", "size")



def adapter_configs() -> dict:
    from ..models.sam3d_adapter.config import (
        CONFIGS,
        ImageEncoderConfig,
        MaskDecoderConfig,
        PromptEncoderConfig,
        Sam3DAdapterConfig,
    )

    demo = Sam3DAdapterConfig(
        name="tiny-demo",
        image_encoder=ImageEncoderConfig(
            crop_size=64, embed_dim=64, depth=4, num_heads=4, window_size=4, pos_embed_size=32,
            window_rel_pos_length=7, global_rel_pos_length=15, global_attn_indexes=(1, 3),
            neck_taps=(0, 1, 2, 3), out_chans=48, adapter_dim=24),
        # Labelled clicks: the demo model learns to segment the clicked lesion, not its neighbours.
        prompt_encoder=PromptEncoderConfig(embed_dim=48, num_heads=4, mlp_dim=192, num_pos_feats=16,
                                           point_label_embedding=True),
        # 32 decoder channels, not fewer: the bias-free decoder says "lesion" by switching every
        # channel off (probability exactly 0.5), and with 16 channels it stalls there. Click
        # maps: without them its negative clicks stayed inert (see click_maps.py).
        mask_decoder=MaskDecoderConfig(in_chans=48, head_chans=32, click_maps=True),
    ).validate()
    return {**CONFIGS, "tiny-demo": demo}


def sam2_configs() -> dict:
    from ..models.sam2_3dmed.config import (
        SAM2_VARIANTS,
        SAM2Architecture,
        SAM2ThreeDMedConfig,
        SRPPConfig,
        tiny_test_config,
    )

    configs = {name: SAM2ThreeDMedConfig(SAM2Architecture(variant=name, image_size=512)) for name in SAM2_VARIANTS}
    configs["tiny-test"] = tiny_test_config(image_size=64)
    configs["tiny-demo"] = SAM2ThreeDMedConfig(
        architecture=SAM2Architecture(
            variant="tiny", image_size=192, trunk_embed_dim=16, trunk_num_heads=1, trunk_stages=(1, 1, 2, 1),
            trunk_global_att_blocks=(3,), hidden_dim=64, memory_dim=32, memory_attention_layers=1,
            memory_attention_feedforward=128),
        srpp=SRPPConfig(dim=32, layers=1, heads=2, mlp_hidden=32))
    return configs


@dataclass(frozen=True)
class TrainingConfig:
    """One training run (``volsam train`` options; see its ``--help`` for each field)."""

    model: str
    data: Path
    label: str
    out: Path
    config: str | None = None  # model configuration name; default vit_b / tiny
    sam_checkpoint: Path | None = None
    sam2_checkpoint: Path | None = None
    init: Path | None = None  # a checkpoint of this project (same configuration) to start from
    epochs: int | None = None
    steps: int | None = None
    crop: int | None = None
    batch_size: int = 1
    amp: bool = False
    grad_checkpoint: bool = False
    resume: bool = False
    train_encoder: bool = False
    split_file: Path | None = None
    fold: int = 0
    spacing_mm: float = 1.0
    preset: str = "auto"
    augmentation: str | None = None  # zoom3d / inplane / robust / none; default from the preset
    click_protocol: str = "3dsam"
    lesion_sampling: str = "case"  # see LESION_SAMPLINGS
    reverse_contrast: float = 0.0  # share of samples whose lesion contrast is reversed
    object_copies: float = 0.0  # share of sam2-3dmed clips with a copy of the object beside it
    clip_length: int = 8
    window: str | None = None  # SAM2 intensity window; default from the modality
    learning_rate: float | None = None
    seed: int = 0
    workers: int = 1
    device: str = "auto"
    cache_dir: Path | None = None
    max_validation_cases: int | None = None
    export_official: bool = False
    progress: bool = True
    command: str = ""  # the command line, recorded in checkpoints

    def __post_init__(self):
        for name in ("data", "out", "sam_checkpoint", "sam2_checkpoint", "init", "split_file", "cache_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))

    def validate(self) -> TrainingConfig:
        """Option checks that need no data and no method's recipe (those:
        :func:`volsam.training.recipes.checked`); one clear ValueError each."""
        if self.model not in MODELS:
            raise ValueError(f"--model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.epochs is not None and self.steps is not None:
            raise ValueError("give --epochs or --steps, not both")
        for name in ("epochs", "steps", "batch_size", "clip_length"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")
        if self.lesion_sampling not in LESION_SAMPLINGS:
            raise ValueError(f"--lesion-sampling must be one of {', '.join(LESION_SAMPLINGS)}, "
                             f"got {self.lesion_sampling!r}")
        if self.lesion_sampling == "size" and self.model == "sam3d-adapter" and self.click_protocol == "3dsam":
            raise ValueError("--lesion-sampling size draws lesions; the 3dsam clicks draw crops around any "
                             "foreground voxel (use --clicks lesion or iterative)")
        if not (math.isfinite(self.reverse_contrast) and 0 <= self.reverse_contrast <= 1):
            raise ValueError(f"--reverse-contrast must be a share in [0, 1], got {self.reverse_contrast}")
        if not (math.isfinite(self.object_copies) and 0 <= self.object_copies <= 1):
            raise ValueError(f"--object-copies must be a share in [0, 1], got {self.object_copies}")
        if self.object_copies and self.model != "sam2-3dmed":
            raise ValueError("--object-copies applies to sam2-3dmed clips (the adapter reads no memory)")
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")
        if not (math.isfinite(self.spacing_mm) and self.spacing_mm > 0):
            raise ValueError(f"--spacing must be a positive number of mm, got {self.spacing_mm}")
        if self.learning_rate is not None and not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"--lr must be a finite number > 0, got {self.learning_rate}")
        if self.init is not None and not self.init.is_file():
            raise ValueError(f"--init {self.init}: no such file")
        names = self.defaults.config_names
        if self.config_name not in names:
            raise ValueError(f"--config {self.config_name!r} is not a {self.model} configuration; expected one of "
                             f"{', '.join(names)}")
        return self

    @property
    def defaults(self):
        """The method's configurations and defaults (:class:`volsam.methods.TrainingDefaults`)."""
        return get_method(self.model).training

    @property
    def config_name(self) -> str:
        if self.config is not None:
            return self.config
        return self.defaults.default_config

    def adapter_model_config(self):
        """The 3DSAM-adapter configuration, with ``--crop`` applied to from-scratch configs."""
        config = adapter_configs()[self.config_name]
        crop = self.crop
        if crop is None or crop == config.crop_size:
            return config
        if self.config_name not in self.defaults.from_scratch:
            raise ValueError(f"--crop {crop}: the {self.config_name} configuration works on {config.crop_size}^3 crops "
                             "only (its position tables come from SAM); crops of other sizes need a configuration "
                             "trained from scratch")
        encoder = config.image_encoder
        grid = crop * encoder.upsample_factor // encoder.patch_size
        if crop * encoder.upsample_factor % encoder.patch_size or grid % encoder.window_size:
            raise ValueError(f"--crop {crop} does not fit {self.config_name}: it must be a multiple of "
                             f"{encoder.patch_size * encoder.window_size // encoder.upsample_factor}")
        image_encoder = dataclasses.replace(encoder, crop_size=crop, pos_embed_size=2 * grid)
        return dataclasses.replace(config, image_encoder=image_encoder).validate()

    def sam2_model_config(self):
        return sam2_configs()[self.config_name]

    @property
    def run_epochs(self) -> int | None:
        if self.steps is not None:
            return None
        return self.epochs if self.epochs is not None else self.defaults.default_epochs
