"""Training losses of both models.

3DSAM-adapter (spec section 9): Dice-CE on two-class logits: softmax, Dice on the foreground
channel only with 1e-5 smoothing in numerator and denominator, cross-entropy over both classes
(mean over voxels); total 0.5 Dice + 0.5 CE (MONAI ``DiceCELoss(include_background=False,
to_onehot_y=True, softmax=True, smooth_nr=1e-5, smooth_dr=1e-5)`` with both weights 0.5).

SAM2-3dMed (spec P6, P7, D5, D6): L = L_seg + 0.01 L_srpp + 0.1 L_bd with L_seg = 0.5 Dice +
0.5 BCE per frame, averaged over the clip; the SRPP and BD losses are the model package's
(:func:`~volsam.models.sam2_3dmed.srpp.srpp_loss`,
:func:`~volsam.models.sam2_3dmed.boundary.balanced_boundary_loss`). SAM2's own heads that pick
among its three candidate masks and gate a slice's masks are trained too (IoU prediction by
mean squared error against the candidates' real IoU; the object-score gate by binary
cross-entropy); :mod:`.sam2_task` explains why every candidate is scored and how the gate is
trained for a network trained from scratch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ADAPTER_DICE_SMOOTH = 1e-5
SAM2_DICE_SMOOTH = 1.0
SRPP_WEIGHT = 0.01  # spec P7
BOUNDARY_WEIGHT = 0.1  # spec P7
IOU_WEIGHT = 1.0
OBJECT_SCORE_WEIGHT = 1.0
MEMORY_SCALE_WEIGHT = 1.0
#: The root-mean-square a memory (the memory encoder's features, an object pointer) may reach
#: before the memory-scale loss holds it back.
MEMORY_RMS_LIMIT = 4.0


def foreground_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = ADAPTER_DICE_SMOOTH
                         ) -> torch.Tensor:
    """Per-sample soft Dice loss of the foreground class: logits (B, 2, ...), target (B, ...)."""
    probability = torch.softmax(logits.float(), dim=1)[:, 1]
    target = target.float()
    dims = tuple(range(1, target.dim()))
    intersection = (probability * target).sum(dims)
    denominator = probability.sum(dims) + target.sum(dims)
    return 1.0 - (2.0 * intersection + smooth) / (denominator + smooth)


def adapter_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.5 foreground Dice + 0.5 cross-entropy; logits (B, 2, D, H, W), target (B, D, H, W)."""
    dice = foreground_dice_loss(logits, target).mean()
    cross_entropy = F.cross_entropy(logits.float(), target.long())
    return 0.5 * dice + 0.5 * cross_entropy


def hard_dice(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Dice of binary masks (1.0 when both are empty)."""
    prediction, target = prediction.bool(), target.bool()
    total = int(prediction.sum()) + int(target.sum())
    return 1.0 if total == 0 else 2.0 * int((prediction & target).sum()) / total


def binary_segmentation_loss(mask_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-mask 0.5 Dice + 0.5 BCE: mask_logits (B, M, H, W), target (B, 1, H, W) -> (B, M).

    Logits are clamped to +-20 first: SAM2 writes -1024 into the masks of a slice it judges
    empty, which carries no gradient but would swamp the reported loss."""
    logits = mask_logits.float().clamp(-20.0, 20.0)
    target = target.float().expand_as(logits)
    probability = logits.sigmoid()
    intersection = (probability * target).sum((-2, -1))
    denominator = probability.sum((-2, -1)) + target.sum((-2, -1))
    dice = 1.0 - (2.0 * intersection + SAM2_DICE_SMOOTH) / (denominator + SAM2_DICE_SMOOTH)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((-2, -1))
    return 0.5 * dice + 0.5 * bce


def memory_scale_loss(memory: torch.Tensor) -> torch.Tensor:
    """How far a memory's root-mean-square lies above MEMORY_RMS_LIMIT, in log units squared
    (0 at or below it).

    SAM2's memory attention normalises the slice it segments but not the memories it reads, so
    their scale sets the attention's logits. A network trained from scratch let them grow (RMS
    about 1000 in the demo model), which saturates the softmax: attention picks one memory
    token whatever the content, the gradient through it vanishes, and the model learns to
    segment each slice without its memory. In log units the pull is the same at any scale."""
    rms = memory.float().pow(2).mean().add(1e-12).sqrt()
    return F.relu(torch.log(rms / MEMORY_RMS_LIMIT)).pow(2)


def mask_iou(mask_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of each thresholded mask with the target: (B, M, H, W), (B, 1, H, W) -> (B, M)."""
    prediction = mask_logits > 0
    target = target.bool().expand_as(prediction)
    intersection = (prediction & target).sum((-2, -1)).float()
    union = (prediction | target).sum((-2, -1)).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))
