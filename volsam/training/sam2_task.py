"""Training SAM2-3dMed on clips of slices (spec P1-P7, D4-D7).

A clip of D consecutive slices runs through the stock ``SAM2Base`` as its video training does: the frozen image encoder on every slice (without gradients), then slice by slice
``_track_step`` (memory attention over the earlier slices' memories, the prompt encoder and the
mask decoder with the BD branch fused in), and the memory encoder on each prediction. The
first slice carries the prompt (the object's centre click, or its ground-truth mask); the
others are tracked. Losses: see :mod:`.losses`. SRPP reads each slice's memory-conditioned
feature map (D4), ordered by slice index so that its targets are the signed slice offsets
whichever way the clip ran.

Where the object is. SAM2 decides per slice whether the object is there with an object-score
head and replaces the masks of a slice it judges empty by a constant. Trained from scratch on
the few thousand clips a CPU affords, that head did not learn to read the image (its output
stayed constant), which either stopped propagation at the prompted slice or never stopped it.
Its IoU head, which picks one of three candidate masks, stayed constant as well. Here the
masks themselves learn the object's absence (every slice of a clip is scored, an empty target
past the object's end), all three candidates learn the same mask (a lesion is no ambiguous
prompt), the object-score head is trained to keep its gate open, and propagation ends where
the masks do (the tracker stops after K empty slices). The loss reads the decoder's masks
before that gate, so that a closed gate cannot cut their gradient.

Reading the memory. SAM2's memory attention normalises the slice it segments but not the
memories it reads, and a network trained from scratch let its memories grow (RMS about 1000 in
the demo model up to this stage): the attention's softmax saturated, the gradient through it
vanished, and the model learnt to segment each slice without its memory (zeroing the memory
changed its held-out Dice by 0.001; ``bench/sam2_memory_use.py`` measures this). A
memory-scale loss (:func:`~.losses.memory_scale_loss`) holds the memory features and object
pointers near the attention's range, and ``--object-copies`` pastes a copy of the object beside
it so that only the memory tells the two apart.

Optimisation (D7): AdamW with weight decay 0.01; lr 1e-4 for the trained SAM2 parts (``--lr``),
1e-3 for the SRPP and BD heads (or ``--lr`` if higher); cosine schedule after a linear warm-up over the first 5 % of the steps;
gradient norm clipped to 1.0. ``--train-encoder`` adds the image encoder to the SAM2 group
(for networks trained from scratch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cache import CachedCases
from .config import TrainingConfig
from .losses import (
    BOUNDARY_WEIGHT,
    IOU_WEIGHT,
    MEMORY_SCALE_WEIGHT,
    OBJECT_SCORE_WEIGHT,
    SRPP_WEIGHT,
    binary_segmentation_loss,
    hard_dice,
    mask_iou,
    memory_scale_loss,
)
from .samples import ClipSampling, SizeBalancedLesions, sam2_clip_sample
from .task import OptimizerGroup, TrainingTask, checkpoint_forward

SAM2_LEARNING_RATE = 1e-4  # spec D7: trained SAM2 parts
SAM2_HEAD_LEARNING_RATE = 1e-3  # spec D7: the new heads (SRPP, BD)

VALIDATION_SEED = 12345
WEIGHT_DECAY = 0.01
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def clip_frames(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """(D, rows, cols) slices in [0, 1] -> (D, 3, S, S) model inputs, as
    :class:`volsam.models.sam2_3dmed.frames.SliceFrames` makes them."""
    unit = images.float().clamp(0.0, 1.0)[:, None]
    if tuple(unit.shape[-2:]) != (image_size, image_size):
        unit = F.interpolate(unit, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=unit.device)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD, device=unit.device)[None, :, None, None]
    return (unit.expand(-1, 3, -1, -1) - mean) / std


def clip_masks(masks: torch.Tensor, image_size: int) -> torch.Tensor:
    """(D, rows, cols) binary masks -> (D, 1, S, S) at the model's input size (as the tracker
    resizes a mask prompt)."""
    masks = masks.float()[:, None]
    if tuple(masks.shape[-2:]) != (image_size, image_size):
        masks = F.interpolate(masks, size=(image_size, image_size), mode="bilinear", align_corners=False,
                              antialias=True)
    return (masks >= 0.5).float()


class Sam2ClipForward(nn.Module):
    """One clip -> (total loss, {part: value}, predicted high-resolution masks (D, 1, S, S))."""

    def __init__(self, model, train_encoder: bool):
        super().__init__()
        self.model = model
        self.train_encoder = train_encoder

    def forward(self, frames: torch.Tensor, masks: torch.Tensor, click_xy: torch.Tensor | None,
                mask_prompt: bool, slice_order_reversed: bool, corrective_click: bool = False,
                prefer_negative: bool = False, correction_slice: int | None = None,
                correction_prefers_negative: bool = False):
        sam2 = self.model.sam2
        # SAM2 replaces the masks of a slice it judges empty by a constant (-1024) before they
        # leave _forward_sam_heads, which cuts the masks' gradient exactly where a network
        # trained from scratch still misjudges: it would never learn to track. The loss reads
        # the decoder's own masks instead; memory and outputs keep SAM2's behaviour.
        decoder_masks = []
        hook = sam2.sam_mask_decoder.register_forward_hook(
            lambda module, inputs, outputs: decoder_masks.append(outputs[0]))
        try:
            return self._clip(sam2, frames, masks, click_xy, mask_prompt, slice_order_reversed, decoder_masks,
                              corrective_click, prefer_negative, correction_slice, correction_prefers_negative)
        finally:
            hook.remove()

    def _clip(self, sam2, frames, masks, click_xy, mask_prompt, slice_order_reversed, decoder_masks,
              corrective_click=False, prefer_negative=False, correction_slice=None,
              correction_prefers_negative=False):
        from ..models.sam2_3dmed.boundary import balanced_boundary_loss, boundary_target
        from ..models.sam2_3dmed.srpp import srpp_loss

        if self.train_encoder:
            backbone = sam2.image_encoder(frames)
        else:
            with torch.no_grad():
                backbone = sam2.image_encoder(frames)
        fpn = list(backbone["backbone_fpn"])
        if sam2.use_high_res_features_in_sam:  # as SAM2Base.forward_image (these convolutions train)
            fpn[0] = sam2.sam_mask_decoder.conv_s0(fpn[0])
            fpn[1] = sam2.sam_mask_decoder.conv_s1(fpn[1])
        _, vision_feats, vision_pos, feat_sizes = sam2._prepare_backbone_features(
            {"backbone_fpn": fpn, "vision_pos_enc": backbone["vision_pos_enc"]})
        depth = frames.shape[0]
        output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        seg, iou, gate, boundary, conditioned, predictions, memory = [], [], [], [], [], [], []
        for t in range(depth):
            feats = [x[:, t:t + 1] for x in vision_feats]
            pos = [x[:, t:t + 1] for x in vision_pos]
            point_inputs = mask_inputs = previous_logits = None
            if t == 0 and mask_prompt:
                mask_inputs = masks[:1]
            elif t == 0:
                point_inputs = {"point_coords": click_xy.reshape(1, 1, 2).float(),
                                "point_labels": torch.ones(1, 1, dtype=torch.int32, device=frames.device)}
                if corrective_click:
                    point_inputs = _with_corrective_click(sam2, feats, pos, feat_sizes, point_inputs, masks[0, 0],
                                                          depth, prefer_negative)
            elif t == correction_slice:
                point_inputs, previous_logits = _tracked_correction(sam2, t, feats, pos, feat_sizes, output_dict,
                                                                    masks[t, 0], depth, correction_prefers_negative)
            current, outputs, _, pix_feat = sam2._track_step(t, t == 0, feats, pos, feat_sizes, point_inputs,
                                                             mask_inputs, output_dict, depth, False, previous_logits)
            boundary_logits = self.model.boundary.latest_boundary_logits
            _, high_multi, ious, low_res, high_res, obj_ptr, object_score = outputs
            current.update(pred_masks=low_res, pred_masks_high_res=high_res, obj_ptr=obj_ptr)
            sam2._encode_memory_in_output(feats, feat_sizes, point_inputs, True, high_res, object_score, current)
            if t < depth - 1:  # what the slices after this one read
                memory.append(memory_scale_loss(current["maskmem_features"]) + memory_scale_loss(obj_ptr))
            # A corrected slice conditions the slices after it, as a confirmed slice does in the session.
            prompted = t == 0 or point_inputs is not None
            output_dict["cond_frame_outputs" if prompted else "non_cond_frame_outputs"][t] = current
            conditioned.append(pix_feat)
            predictions.append(high_res.detach())
            if mask_inputs is not None:
                continue  # the ground-truth mask is the output there: nothing to learn
            target = masks[t:t + 1]
            ungated = F.interpolate(decoder_masks[-1].float(), size=high_multi.shape[-2:], mode="bilinear",
                                    align_corners=False)
            # Every candidate mask learns the object (a lesion is no ambiguous prompt), and its
            # absence too (an empty mask past its end): that is what propagation's early stop
            # reads. The presence gate is trained open (see the module docstring).
            seg.append(binary_segmentation_loss(ungated, target).mean())
            iou.append(F.mse_loss(ious.float(), mask_iou(ungated.detach(), target), reduction="none").mean(1).sum())
            score = object_score.float().reshape(-1)
            gate.append(F.binary_cross_entropy_with_logits(score, torch.ones_like(score)))
            if boundary_logits is not None:
                size = boundary_logits.shape[-2:]
                low_target = (F.interpolate(target, size=size, mode="area") >= 0.5).float()
                boundary.append(balanced_boundary_loss(boundary_logits.float(), boundary_target(low_target)))
        features = torch.stack(conditioned, dim=1)  # (1, D, C, H, W) in processing order
        if slice_order_reversed:
            features = features.flip(1)
        losses = {"seg": torch.stack(seg).mean(), "srpp": srpp_loss(self.model.srpp(features)),
                  "iou": torch.stack(iou).mean(), "object": torch.stack(gate).mean(),
                  "boundary": torch.stack(boundary).mean() if boundary else features.sum() * 0,
                  "memory": torch.stack(memory).mean() if memory else features.sum() * 0}
        total = (losses["seg"] + SRPP_WEIGHT * losses["srpp"] + BOUNDARY_WEIGHT * losses["boundary"]
                 + IOU_WEIGHT * losses["iou"] + OBJECT_SCORE_WEIGHT * losses["object"]
                 + MEMORY_SCALE_WEIGHT * losses["memory"])
        return total, {k: float(v.detach()) for k, v in losses.items()}, torch.cat(predictions)


def _with_corrective_click(sam2, feats, pos, feat_sizes, point_inputs: dict, target: torch.Tensor,
                           depth: int, prefer_negative: bool = False) -> dict:
    """The prompted slice's clicks plus the iterative protocol's next click on the model's first
    answer (label 0 in a false positive; there whenever it has one with ``prefer_negative``),
    as SAM2's own training samples correction points."""
    with torch.no_grad():
        _, outputs, _, _ = sam2._track_step(0, True, feats, pos, feat_sizes, point_inputs, None,
                                            {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}, depth,
                                            False, None)
    click = _corrective_point(outputs[4], target, prefer_negative)
    if click is None:
        return point_inputs
    return {key: torch.cat([point_inputs[key], click[key]], dim=1) for key in ("point_coords", "point_labels")}


def _tracked_correction(sam2, t: int, feats, pos, feat_sizes, output_dict: dict, target: torch.Tensor, depth: int,
                        prefer_negative: bool) -> tuple[dict | None, torch.Tensor | None]:
    """The iterative protocol's click on the model's answer on tracked slice ``t`` (read with the
    memory of the slices before it), and that answer as mask logits, as the session feeds a
    propagated slice's mask with a click on it; (None, None) when the answer needs none."""
    from ..models.sam2_3dmed.tracker import MASK_LOGIT_BIAS, MASK_LOGIT_SCALE

    with torch.no_grad():
        _, outputs, _, _ = sam2._track_step(t, False, feats, pos, feat_sizes, None, None, output_dict, depth,
                                            False, None)
    click = _corrective_point(outputs[4], target, prefer_negative)
    if click is None:
        return None, None
    previous = (outputs[3] > 0).float() * MASK_LOGIT_SCALE + MASK_LOGIT_BIAS
    return click, previous


def _corrective_point(high_res_logits: torch.Tensor, target: torch.Tensor, prefer_negative: bool) -> dict | None:
    """The iterative protocol's next click on an answer (high-resolution logits (1, 1, S, S))
    against ``target`` (S, S), as one SAM2 point prompt; None when the answer needs none."""
    from ..clicks import training_corrective_click

    # As a one-slice volume: the click helpers label regions in 3D.
    answer = (high_res_logits[0] > 0).cpu().numpy()
    click = training_corrective_click(answer, (target[None] > 0.5).cpu().numpy(), prefer_negative)
    if click is None:
        return None
    _, row, col = click.kji
    device = target.device
    return {"point_coords": torch.tensor([[[float(col), float(row)]]], device=device),
            "point_labels": torch.tensor([[int(click.positive)]], dtype=torch.int32, device=device)}


class Sam2Task(TrainingTask):
    schedule = "step_cosine"
    validation_unit = "clip"

    def __init__(self, config: TrainingConfig, train_cases: CachedCases, validation_cases: CachedCases,
                 sampling: ClipSampling, device):
        from ..models.sam2_3dmed.build import build_model
        from ..models.sam2_3dmed.checkpoint import load_sam2_checkpoint

        self.config = config
        # A clip starts on a slice showing the object: cases without it cannot be prompted.
        self.train_cases = train_cases
        self.train_indices = [i for i in range(len(train_cases)) if train_cases[i].has_foreground]
        self.validation_cases = [validation_cases[i] for i in range(len(validation_cases))
                                 if validation_cases[i].has_foreground]
        self.sampling = sampling
        self.balanced_lesions = (SizeBalancedLesions(train_cases, self.train_indices)
                                 if config.lesion_sampling == "size" else None)
        torch.manual_seed(config.seed)
        model = build_model(config.sam2_model_config())
        if config.sam2_checkpoint is not None:
            load_sam2_checkpoint(model, config.sam2_checkpoint)
        model.freeze_image_encoder()
        if config.train_encoder:
            for parameter in model.parameters():
                parameter.requires_grad_(True)
        self.model = model.to(device).train()
        self.training_module = Sam2ClipForward(self.model, config.train_encoder)
        self.image_size = int(model.image_size)

    @property
    def contents(self) -> str:
        """Checkpoints hold the whole model when the encoder was trained (or never pretrained)."""
        whole = self.config.train_encoder or self.config.config_name in self.config.defaults.from_scratch
        return "whole_model" if whole else "trained_parts"

    def optimizer_groups(self) -> list[OptimizerGroup]:
        rate = self.config.learning_rate or SAM2_LEARNING_RATE
        # The new heads train at 1e-3 (D7), or at the base rate when --lr sets a higher one.
        head_rate = max(SAM2_HEAD_LEARNING_RATE, rate)
        sam2 = [p for p in self.model.sam2.parameters() if p.requires_grad]
        heads = list(self.model.boundary.parameters()) + list(self.model.srpp.parameters())
        return [OptimizerGroup("sam2", sam2, rate, WEIGHT_DECAY), OptimizerGroup("heads", heads, head_rate, WEIGHT_DECAY)]

    def clip_groups(self) -> list[list]:
        return [[p for p in self.model.parameters() if p.requires_grad]]

    def enable_activation_checkpointing(self) -> None:
        sam2 = self.model.sam2
        checkpoint_forward(sam2.memory_attention.layers)
        if self.config.train_encoder:
            checkpoint_forward(sam2.image_encoder.trunk.blocks)

    def training_sample(self, case_index: int, rng: np.random.Generator) -> dict:
        if self.balanced_lesions is not None:  # the item only counts the epoch's draws
            case_index, lesion_index = self.balanced_lesions.draw(rng)
            return sam2_clip_sample(self.train_cases[case_index], self.sampling, rng, lesion_index=lesion_index)
        return sam2_clip_sample(self.train_cases[self.train_indices[case_index]], self.sampling, rng)

    @property
    def training_items(self) -> int:
        return len(self.train_indices)

    def _run(self, module, sample: dict, device):
        rows, cols = sample["images"].shape[1:]
        frames = clip_frames(torch.from_numpy(np.ascontiguousarray(sample["images"])).to(device), self.image_size)
        masks = clip_masks(torch.from_numpy(np.ascontiguousarray(sample["masks"])).to(device), self.image_size)
        x, y = sample["click_xy"]
        click = torch.tensor([x / cols * self.image_size, y / rows * self.image_size], device=device)
        return module(frames, masks, click, bool(sample["mask_prompt"]), sample["direction"] < 0,
                      bool(sample.get("corrective_click", False)), bool(sample.get("prefer_negative", False)),
                      sample.get("correction_slice"), bool(sample.get("correction_prefers_negative", False))), masks

    def loss(self, module, sample: dict, device):
        (total, parts, _), _ = self._run(module, sample, device)
        return total, {"loss": float(total.detach()), **parts}

    def validation_sample(self, index: int, case) -> dict:
        return sam2_clip_sample(case, self.sampling, np.random.default_rng([VALIDATION_SEED, index]),
                                direction=1 if index % 2 == 0 else -1, mask_prompt=False)

    def validation_scores(self, sample: dict, device) -> tuple[float, float]:
        (_, parts, predicted), masks = self._run(self.training_module, sample, device)
        return parts["seg"], hard_dice(predicted > 0, masks > 0)

    def save(self, path: Path, provenance: dict) -> Path:
        from ..models.sam2_3dmed.checkpoint import save_checkpoint

        return save_checkpoint(self.model, path, self.contents, provenance)

    def load_weights(self, path: Path) -> None:
        from ..models.sam2_3dmed.checkpoint import read_checkpoint

        _, state = read_checkpoint(path)
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected or (self.contents == "whole_model" and missing):
            raise ValueError(f"{path} does not fit this run's model ({len(missing)} missing, "
                             f"{len(unexpected)} unexpected tensors)")
