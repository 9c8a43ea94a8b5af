"""Training 3DSAM-adapter (spec sections 7-9).

Freezing is the official rule (:func:`volsam.models.sam3d_adapter.apply_official_freezing`)
unless ``--train-encoder`` makes every tensor trainable (demo models trained from scratch).
Three AdamW optimizers (lr 4e-4, betas 0.9/0.999, eps 1e-8, no weight decay) step the trainable
encoder tensors, all four prompt encoders and the decoder; the learning rate falls linearly to
1 % over the run, once per epoch; gradient norms are clipped to 1.0 separately for the encoder,
the decoder and the prompt encoder in use.

The training forward is the model's, with the decoder's first ``cls`` convolution run on the
concatenated maps as the official code does (the package splits it into five convolutions,
which is the same sum but several times slower to train on a CPU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cache import CachedCases
from .config import TrainingConfig
from .losses import adapter_loss, foreground_dice_loss, hard_dice
from .samples import (
    AdapterSampling,
    SizeBalancedLesions,
    adapter_training_sample,
    adapter_validation_sample,
)
from .task import OptimizerGroup, TrainingTask, checkpoint_forward

ADAPTER_LEARNING_RATE = 4e-4  # spec section 9, all three optimizers

#: Seed of the fixed validation crops and clicks (the same every epoch, so epochs compare).
VALIDATION_SEED = 12345
#: ``--clicks iterative``: the share of samples that get the iterative protocol's corrective
#: click (positive in the largest miss, negative in the largest false positive of the model's
#: own prediction from the other clicks), so that clicks, negative ones above all, learn to
#: correct the mistakes the model makes rather than random far-away voxels.
CORRECTIVE_CLICK_PROBABILITY = 0.6


def points_dwh(points_kji: torch.Tensor) -> torch.Tensor:
    """Crop voxel (k, j, i) = (D, H, W) -> the model's click order [d, w, h]."""
    return points_kji[..., [0, 2, 1]]


class AdapterTrainingForward(nn.Module):
    """crop (1, 1, D, H, W), clicks (N, 3) in [d, w, h] and labels (N,) -> logits (1, 2, D, H, W)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, crop: torch.Tensor, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        from ..models.sam3d_adapter.mask_decoder import MultiLevelHeads

        model = self.model
        features = model.image_encoder(crop)
        refined = model.prompt_encoder(features[3], points, labels if model.has_point_labels else None)
        decoder = model.mask_decoder
        maps = [MultiLevelHeads.run(head, feature)
                for head, feature in zip(decoder.mlahead.heads(), (*features[:3], refined))]
        grey = F.interpolate(crop[:, :1].permute(0, 1, 3, 4, 2), scale_factor=0.5, mode="trilinear",
                             align_corners=False)
        inputs = [*maps, grey.to(maps[0].dtype)]
        clicks = model.click_maps(points, labels)
        if clicks is not None:
            inputs.append(clicks.to(maps[0].dtype))
        logits = decoder.cls(torch.cat(inputs, dim=1))
        logits = F.interpolate(logits, scale_factor=2, mode="trilinear", align_corners=True)
        return logits.permute(0, 1, 4, 2, 3)


class AdapterTask(TrainingTask):
    schedule = "epoch_linear"

    def __init__(self, config: TrainingConfig, train_cases: CachedCases, validation_cases: CachedCases,
                 sampling: AdapterSampling, device):
        from ..models.sam3d_adapter import build_sam3d_adapter
        from ..models.sam3d_adapter.checkpoints import from_sam

        self.config = config
        self.train_cases = train_cases
        self.validation_cases = validation_cases
        self.sampling = sampling
        model_config = config.adapter_model_config()
        if model_config.crop_size != sampling.crop_size:
            raise ValueError(f"crop size {sampling.crop_size} does not match the model's {model_config.crop_size}")
        torch.manual_seed(config.seed)
        if config.sam_checkpoint is not None:
            model = from_sam(config.sam_checkpoint, model_config)
        else:
            model = build_sam3d_adapter(model_config)
        if config.train_encoder:
            for parameter in model.parameters():
                parameter.requires_grad_(True)
        self.model = model.to(device)
        self.training_module = AdapterTrainingForward(self.model)
        self.balanced_lesions = (SizeBalancedLesions(train_cases, range(len(train_cases)))
                                 if config.lesion_sampling == "size" else None)

    # --- optimisation -----------------------------------------------------------------------------
    def optimizer_groups(self) -> list[OptimizerGroup]:
        rate = self.config.learning_rate or ADAPTER_LEARNING_RATE
        model = self.model
        encoder = [p for p in model.image_encoder.parameters() if p.requires_grad]
        return [OptimizerGroup("encoder", encoder, rate),
                OptimizerGroup("prompt_encoders", list(model.prompt_encoders.parameters()), rate),
                OptimizerGroup("decoder", list(model.mask_decoder.parameters()), rate)]

    def clip_groups(self) -> list[list]:
        model = self.model
        return [[p for p in model.image_encoder.parameters() if p.requires_grad],
                list(model.mask_decoder.parameters()), list(model.prompt_encoder.parameters())]

    def enable_activation_checkpointing(self) -> None:
        checkpoint_forward(self.model.image_encoder.blocks)
        checkpoint_forward(self.model.mask_decoder.mlahead.heads())

    # --- samples and loss --------------------------------------------------------------------------
    def training_sample(self, case_index: int, rng: np.random.Generator) -> dict:
        if self.balanced_lesions is not None:  # the item only counts the epoch's draws
            case_index, lesion_index = self.balanced_lesions.draw(rng)
            return adapter_training_sample(self.train_cases[case_index], self.sampling, rng, lesion_index)
        return adapter_training_sample(self.train_cases[case_index], self.sampling, rng)

    @property
    def training_items(self) -> int:
        return len(self.train_cases)

    @staticmethod
    def _tensors(sample: dict, device):
        crop = torch.from_numpy(np.ascontiguousarray(sample["image"]))[None, None].to(device)
        target = torch.from_numpy(np.ascontiguousarray(sample["target"])).long()[None].to(device)
        points = points_dwh(torch.from_numpy(np.asarray(sample["points_kji"])).float()).to(device)
        labels = torch.from_numpy(np.asarray(sample["positive"])).long().to(device)
        return crop, target, points, labels

    def loss(self, module, sample: dict, device):
        crop, target, points, labels = self._tensors(sample, device)
        if self.sampling.click_protocol == "iterative" and self._rng.random() < CORRECTIVE_CLICK_PROBABILITY:
            points, labels = self._with_corrective_click(module, crop, target, points, labels, self._rng)
        logits = module(crop, points, labels)
        loss = adapter_loss(logits, target)
        return loss, {"loss": float(loss.detach())}

    @property
    def _rng(self) -> np.random.Generator:
        if getattr(self, "_corrective_rng", None) is None:
            self._corrective_rng = np.random.default_rng([self.config.seed, 15])
        return self._corrective_rng

    @staticmethod
    def _with_corrective_click(module, crop, target, points, labels, rng: np.random.Generator):
        """The clicks plus a corrective click on the model's current prediction: negative in its
        false positive when it has one (mostly), else the iterative protocol's next click."""
        from ..clicks import NEGATIVE_CLICK_PREFERENCE, training_corrective_click

        with torch.no_grad():
            prediction = module(crop, points, labels).argmax(1)[0].cpu().numpy()
        click = training_corrective_click(prediction, target[0].cpu().numpy(),
                                          prefer_negative=rng.random() < NEGATIVE_CLICK_PREFERENCE)
        if click is None:
            return points, labels
        point = points_dwh(torch.tensor([click.kji], dtype=points.dtype, device=points.device))
        label = torch.tensor([int(click.positive)], dtype=labels.dtype, device=labels.device)
        return torch.cat([points, point]), torch.cat([labels, label])

    # --- validation ------------------------------------------------------------------------------
    def validation_sample(self, index: int, case) -> dict:
        return adapter_validation_sample(case, self.sampling, np.random.default_rng([VALIDATION_SEED, index]))

    def validation_scores(self, sample: dict, device) -> tuple[float, float]:
        crop, target, points, labels = self._tensors(sample, device)
        logits = self.training_module(crop, points, labels).float()
        return float(foreground_dice_loss(logits, target).mean()), hard_dice(logits.argmax(1), target)

    # --- checkpoints -------------------------------------------------------------------------------
    @property
    def _keeps_sam_frozen(self) -> bool:
        """Fine-tuning from SAM with its tensors frozen: checkpoints leave them out (about 350 MB
        for ViT-B) and loading takes them from the SAM checkpoint again."""
        return self.config.sam_checkpoint is not None and not self.config.train_encoder

    def save(self, path: Path, provenance: dict) -> Path:
        from ..models.sam3d_adapter.checkpoints import save_checkpoint

        return save_checkpoint(self.model, path, provenance, include_sam=not self._keeps_sam_frozen)

    def load_weights(self, path: Path) -> None:
        from ..models.sam3d_adapter.checkpoints import from_checkpoint
        from ..models.sam3d_adapter.mask_decoder import with_click_map_channels

        loaded = from_checkpoint(path, device=next(self.model.parameters()).device,
                                 sam=self.config.sam_checkpoint if self._keeps_sam_frozen else None)
        # A model without click maps starts one with them (zero weights on the maps: same logits).
        decoder = with_click_map_channels(loaded.mask_decoder.state_dict(), self.model.config.mask_decoder)
        self.model.load_state_dict({**loaded.state_dict(), **{f"mask_decoder.{k}": v for k, v in decoder.items()}},
                                   strict=True)

    def after_training(self, out: Path) -> None:
        if self.config.export_official:
            from .export import export_official

            for name in ("last", "best"):
                source = out / f"{name}.safetensors"
                if source.is_file():
                    export_official(source, out / f"{name}.pth.tar", sam=self.config.sam_checkpoint)
