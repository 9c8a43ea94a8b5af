"""Which SAM2 a state dict is, from its keys and shapes alone (no torch needed).

Official checkpoints are told apart by key and shape: the Hiera trunk's width (the channels
of its positional embedding) and number of blocks give the size; ``no_obj_embed_spatial`` and
``obj_ptr_tpos_proj`` mark SAM 2.1 against the first SAM 2 release.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

#: (trunk width, number of Hiera blocks) -> SAM2.1 size
HIERA_SIZES = {(96, 12): "tiny", (96, 16): "small", (112, 24): "base_plus", (144, 48): "large"}
_SAM2_1_MARKERS = ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight")
_BLOCK_KEY = re.compile(r"^image_encoder\.trunk\.blocks\.(\d+)\.")


@dataclass(frozen=True)
class SAM2Detection:
    """What a SAM2 state dict is: generation "2" or "2.1" and size (None: not an official size)."""

    generation: str
    variant: str | None
    trunk_width: int
    trunk_blocks: int

    @property
    def name(self) -> str:
        prefix = "sam2.1" if self.generation == "2.1" else "sam2"
        return f"{prefix}-{self.variant}" if self.variant else f"{prefix}-custom"


def detect_sam2_state_dict(shapes: Mapping[str, tuple[int, ...]]) -> SAM2Detection | None:
    """Recognise a SAM2 state dict from its key -> shape map."""
    pos_embed = shapes.get("image_encoder.trunk.pos_embed")
    if pos_embed is None or len(pos_embed) != 4 or "memory_attention.norm.weight" not in shapes:
        return None
    blocks = {int(m.group(1)) for m in map(_BLOCK_KEY.match, shapes) if m}
    if not blocks:
        return None
    width, depth = int(pos_embed[1]), max(blocks) + 1
    generation = "2.1" if all(m in shapes for m in _SAM2_1_MARKERS) else "2"
    return SAM2Detection(generation, HIERA_SIZES.get((width, depth)), width, depth)
