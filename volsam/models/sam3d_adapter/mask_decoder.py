"""The multi-level 3D convolutional decoder (the official ``VIT_MLAHead_h``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .click_maps import CLICK_MAP_CHANNELS
from .config import MaskDecoderConfig


def _head(in_chans: int, out_chans: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_chans, out_chans, 3, padding=1, bias=False), nn.InstanceNorm3d(out_chans), nn.ReLU(),
        nn.Conv3d(out_chans, out_chans, 3, padding=1, bias=False), nn.InstanceNorm3d(out_chans), nn.ReLU())


class MultiLevelHeads(nn.Module):
    """One conv head per feature map (head2..head5 = neck taps 1..4), each upsampled x2 with
    align_corners=True."""

    def __init__(self, in_chans: int, head_chans: int) -> None:
        super().__init__()
        self.head2 = _head(in_chans, head_chans)
        self.head3 = _head(in_chans, head_chans)
        self.head4 = _head(in_chans, head_chans)
        self.head5 = _head(in_chans, head_chans)

    def heads(self) -> tuple[nn.Sequential, ...]:
        return self.head2, self.head3, self.head4, self.head5

    @staticmethod
    def run(head: nn.Sequential, feature: torch.Tensor) -> torch.Tensor:
        return F.interpolate(head(feature), scale_factor=2, mode="trilinear", align_corners=True)


@dataclass
class DecoderCache:
    """What a crop contributes to the decoder before any click: the first ``cls`` convolution
    applied to the three prompt-independent heads and the grey image (pre-activation)."""

    static_logits: torch.Tensor


class MultiLevelMaskDecoder(nn.Module):
    """F1..F4 (1, C, G, G, G) and the half-size grey crop -> (1, classes, 4G, 4G, 4G) logits,
    all in (H, W, D) order.

    Only head5 (on the prompt-refined F4) depends on the clicks. ``cls.0`` is linear in its
    513 input channels, so it is split: :meth:`prepare` convolves the prompt-independent
    channels once per crop and :meth:`decode` adds the head5 part per click. This is the same
    sum as the official concatenation, in another order. With ``config.click_maps`` the
    concatenation ends with the three click maps (:mod:`.click_maps`), added per click too.
    """

    def __init__(self, config: MaskDecoderConfig) -> None:
        super().__init__()
        self.config = config
        head = config.head_chans
        self.mlahead = MultiLevelHeads(config.in_chans, head)
        self.cls = nn.Sequential(
            nn.Conv3d(self.classifier_inputs(config), head, 3, padding=1, bias=False), nn.InstanceNorm3d(head),
            nn.ReLU(), nn.Conv3d(head, config.num_classes, 3, padding=1, bias=False))

    @staticmethod
    def classifier_inputs(config: MaskDecoderConfig) -> int:
        """Channels of the classifier's input: four heads, the grey crop, the click maps."""
        return 4 * config.head_chans + 1 + (CLICK_MAP_CHANNELS if config.click_maps else 0)

    def prepare(self, f1: torch.Tensor, f2: torch.Tensor, f3: torch.Tensor, grey: torch.Tensor) -> DecoderCache:
        head = self.config.head_chans
        weight = self.cls[0].weight
        static = F.conv3d(grey, weight[:, 4 * head:4 * head + 1], padding=1)
        for index, (module, feature) in enumerate(zip(self.mlahead.heads()[:3], (f1, f2, f3))):
            upsampled = MultiLevelHeads.run(module, feature)
            static = static + F.conv3d(upsampled, weight[:, index * head:(index + 1) * head], padding=1)
            del upsampled
        return DecoderCache(static)

    def decode(self, cache: DecoderCache, f4: torch.Tensor, click_maps: torch.Tensor | None = None) -> torch.Tensor:
        """``click_maps`` (1, 3, 2G, 2G, 2G): required exactly when the configuration reads them."""
        head = self.config.head_chans
        if (click_maps is not None) != self.config.click_maps:
            raise ValueError("this decoder " + ("reads click maps and needs them" if self.config.click_maps
                                                else "has no click-map channels"))
        upsampled = MultiLevelHeads.run(self.mlahead.head5, f4)
        x = cache.static_logits + F.conv3d(upsampled, self.cls[0].weight[:, 3 * head:4 * head], padding=1)
        del upsampled
        if click_maps is not None:
            x = x + F.conv3d(click_maps.to(x.dtype), self.cls[0].weight[:, 4 * head + 1:], padding=1)
        for layer in self.cls[1:]:
            x = layer(x)
        return F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=True)

    def forward(self, f1, f2, f3, f4, grey, click_maps=None) -> torch.Tensor:
        return self.decode(self.prepare(f1, f2, f3, grey), f4, click_maps)


def with_click_map_channels(decoder_state: dict, config: MaskDecoderConfig) -> dict:
    """A decoder state dict of a model without click maps, widened for ``config``'s: the new
    classifier inputs get zero weights, so the widened decoder gives exactly the old logits
    until training teaches it the maps (a fine-tuning start, ``volsam train --init``)."""
    key = "cls.0.weight"
    weight = decoder_state[key]
    wanted = MultiLevelMaskDecoder.classifier_inputs(config)
    if weight.shape[1] == wanted:
        return decoder_state
    if not config.click_maps or weight.shape[1] != wanted - CLICK_MAP_CHANNELS:
        raise ValueError(f"decoder classifier with {weight.shape[1]} inputs does not fit this configuration's {wanted}")
    extra = weight.new_zeros((weight.shape[0], CLICK_MAP_CHANNELS, *weight.shape[2:]))
    return {**decoder_state, key: torch.cat([weight, extra], dim=1)}
