"""The boundary-detection (BD) branch and its fusion into SAM2's mask path (spec P5, P6, D5).

SAM2's mask decoder upscales the image embedding to the output resolution (``output_upscaling``,
ending in an activation) and then takes its product with one hypernetwork vector per mask
token. The BD branch works on that upscaled embedding: it predicts a boundary logit map, lets
its boundary features attend to the embedding with one head at a pooled 32 x 32 token grid,
and adds the result back to the embedding before the product. The fusion is attached by
wrapping the decoder's last upscaling activation (:class:`BoundaryFusedActivation`), which has
no parameters, so the decoder keeps exactly the stock parameter names and official SAM2.1
checkpoints load into it unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BoundaryBranch(nn.Module):
    """Boundary logits plus a residual for the mask embedding, from the upscaled embedding.

    Input: the decoder's upscaled embedding ``(B, C, H, W)`` (H, W = image size / 4).
    Output: the fused embedding (same shape) and boundary logits ``(B, 1, H, W)``.

    The output projection starts at zero, so an untrained branch leaves the mask path exactly
    as SAM2.1's: loading only an official checkpoint gives the stock model.
    """

    def __init__(self, channels: int, token_grid: int = 32):
        super().__init__()
        self.channels = channels
        self.token_grid = token_grid
        #: whether :class:`BoundaryFusedActivation` adds the branch into the mask path
        self.fusion_enabled = True
        #: boundary logits of the last forward pass in training mode, for the BD loss
        self.latest_boundary_logits: torch.Tensor | None = None
        # Depthwise-separable 3 x 3 convolutions: the branch runs on every slice at a quarter
        # of the input resolution, where full 3 x 3 convolutions would cost about as much as
        # a tenth of the Hiera-tiny encoder.
        self.boundary_features = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=channels),
            nn.Conv2d(channels, channels, kernel_size=1),
            nn.GroupNorm(1, channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=channels),
            nn.Conv2d(channels, channels, kernel_size=1),
        )
        self.query = nn.Linear(channels, channels)
        self.key = nn.Linear(channels, channels)
        self.value = nn.Linear(channels, channels)
        self.boundary_logits = nn.Conv2d(channels, 1, kernel_size=1)
        self.fusion_projection = nn.Conv2d(channels, channels, kernel_size=1)
        nn.init.zeros_(self.fusion_projection.weight)
        nn.init.zeros_(self.fusion_projection.bias)

    def forward(self, upscaled: torch.Tensor, with_boundary_map: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fused embedding and boundary logits (None unless ``with_boundary_map``: inference
        needs only the fusion)."""
        b, c, h, w = upscaled.shape
        boundary = self.boundary_features(upscaled)
        grid = (min(self.token_grid, h), min(self.token_grid, w))
        # (B, C, g, g) -> (B, g*g, C) token sequences
        boundary_tokens = F.adaptive_avg_pool2d(boundary, grid).flatten(2).transpose(1, 2)
        slice_tokens = F.adaptive_avg_pool2d(upscaled, grid).flatten(2).transpose(1, 2)
        # softmax(Q_bd K^T / sqrt(d)) V: boundary queries read the slice features (spec P5)
        attended = F.scaled_dot_product_attention(
            self.query(boundary_tokens), self.key(slice_tokens), self.value(slice_tokens))
        attended = attended.transpose(1, 2).reshape(b, c, *grid)
        # The 1 x 1 projection is applied before upsampling: both are linear and bilinear
        # weights sum to one, so this equals projecting at full resolution, at 1/16 the cost.
        fused = upscaled + F.interpolate(self.fusion_projection(attended), size=(h, w), mode="bilinear",
                                         align_corners=False)
        boundary_logits = None
        if with_boundary_map:
            attended_full = F.interpolate(attended, size=(h, w), mode="bilinear", align_corners=False)
            boundary_logits = self.boundary_logits(boundary + attended_full)
        return fused, boundary_logits


class BoundaryFusedActivation(nn.Module):
    """Stands in for the last activation of SAM2's ``output_upscaling``: the activation, then
    the BD fusion when the branch's ``fusion_enabled`` is set.

    The branch is held by a plain reference (not a registered submodule) so that its
    parameters appear once, under the owning model's ``boundary.`` prefix.
    """

    def __init__(self, activation: nn.Module, branch: BoundaryBranch):
        super().__init__()
        self.activation = activation
        self._branch = [branch]  # a list hides it from nn.Module registration

    @property
    def branch(self) -> BoundaryBranch:
        return self._branch[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(x)
        branch = self.branch
        if not branch.fusion_enabled:
            branch.latest_boundary_logits = None
            return x
        # The boundary map is made only while training (the BD loss reads it); at inference
        # it is not shown, and only the fusion matters.
        fused, branch.latest_boundary_logits = branch(x, with_boundary_map=branch.training)
        return fused


def attach_boundary_fusion(decoder: nn.Module, branch: BoundaryBranch) -> None:
    """Fuse ``branch`` into a ``sam2`` ``MaskDecoder``'s mask path, in place."""
    upscaling = decoder.output_upscaling
    if not isinstance(upscaling, nn.Sequential) or len(upscaling) != 5:
        raise ValueError("expected the sam2 MaskDecoder's output_upscaling to be a Sequential of 5 "
                         f"modules (conv, norm, act, conv, act), got {upscaling!r}")
    last = upscaling[4]
    if isinstance(last, BoundaryFusedActivation):
        raise ValueError("this mask decoder already has a boundary branch attached")
    upscaling[4] = BoundaryFusedActivation(last, branch)


def boundary_target(mask: torch.Tensor) -> torch.Tensor:
    """Boundary ground truth (spec D5): the morphological gradient of a binary mask
    ``(B, 1, H, W)``, dilation XOR erosion with a 3 x 3 cross, as a float map."""
    if mask.dim() != 4 or mask.size(1) != 1:
        raise ValueError(f"boundary_target expects masks of shape (B, 1, H, W), got {tuple(mask.shape)}")
    m = (mask > 0).float()
    cross = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]], device=m.device)
    hits = F.conv2d(F.pad(m, (1, 1, 1, 1)), cross.view(1, 1, 3, 3))
    dilated = hits > 0
    eroded = hits >= 5  # all five cross pixels are inside (outside the image counts as outside)
    return (dilated ^ eroded).float()


def balanced_boundary_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Class-balanced binary cross-entropy (spec P6): boundary pixels weighted by the
    non-boundary fraction and non-boundary pixels by the boundary fraction, per image."""
    if logits.shape != target.shape:
        raise ValueError(f"boundary logits {tuple(logits.shape)} and target {tuple(target.shape)} "
                         "must have the same shape")
    target = target.float()
    dims = tuple(range(1, target.dim()))
    boundary_fraction = target.mean(dim=dims, keepdim=True)
    weights = target * (1 - boundary_fraction) + (1 - target) * boundary_fraction
    loss = F.binary_cross_entropy_with_logits(logits, target, weight=weights, reduction="none")
    return loss.mean()

