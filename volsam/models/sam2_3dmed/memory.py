"""The memory SAM2 reads while propagating, kept bounded (spec D9).

SAM2's memory attention reads, for the slice being segmented: the memories of the conditioning
(user-confirmed) slices, the memories of the last ``num_maskmem - 1`` slices in the direction
of travel, and the object pointers of the last ``max_obj_ptrs_in_encoder - 1`` of them. The
stock video predictor keeps every frame's output in an untyped dict that grows with the video;
here only what can still be read is kept: a fixed-length queue whose older entries keep just
their pointer. :func:`sam2_memory_view` hands these to ``SAM2Base``'s own memory reader in the
dict layout it expects, built fresh for each slice and then dropped.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import torch

V = TypeVar("V")


@dataclass(frozen=True)
class SliceMemory:
    """What the model reads of one segmented slice.

    ``features``: the memory encoder's output (1, mem_dim, h, w), stored in bfloat16 as the
    ``sam2`` video predictor stores it; None once the slice is too far back to be read.
    ``object_pointer``: (1, hidden_dim).
    """

    slice_index: int
    object_pointer: torch.Tensor
    features: torch.Tensor | None


class TravelMemory:
    """Memories of the slices most recently segmented in one direction, oldest first."""

    def __init__(self, feature_slices: int, pointer_slices: int):
        if feature_slices < 0 or pointer_slices < 0:
            raise ValueError(f"memory sizes must be >= 0, got {feature_slices} and {pointer_slices}")
        self.feature_slices = feature_slices
        self._entries: deque[SliceMemory] = deque(maxlen=max(feature_slices, pointer_slices, 1))

    def add(self, memory: SliceMemory) -> None:
        self._entries.append(memory)
        if len(self._entries) > self.feature_slices:
            # The entry that just left the feature window is read for its pointer only.
            stale = -1 - self.feature_slices
            self._entries[stale] = replace(self._entries[stale], features=None)

    def __iter__(self) -> Iterator[SliceMemory]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def sam2_memory_view(conditioning: Mapping[int, SliceMemory], recent: Iterable[SliceMemory],
                     position_encoding: list[torch.Tensor] | None) -> dict[str, dict[int, dict[str, Any]]]:
    """The ``output_dict`` layout ``SAM2Base._prepare_memory_conditioned_features`` reads."""

    def entry(memory: SliceMemory) -> dict[str, Any]:
        return {"maskmem_features": memory.features, "maskmem_pos_enc": position_encoding,
                "obj_ptr": memory.object_pointer}

    return {"cond_frame_outputs": {t: entry(conditioning[t]) for t in sorted(conditioning)},
            "non_cond_frame_outputs": {m.slice_index: entry(m) for m in recent}}


class BoundedCache(Generic[V]):
    """A least-recently-used map holding at most ``capacity`` entries."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"cache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[int, V] = OrderedDict()

    def get(self, key: int) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: int, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
