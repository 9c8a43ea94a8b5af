"""The 3DSAM-adapter click session: one open volume, clicks in RAS mm, a mask with undo/redo.

Crops. The model sees 128^3 crops at 1 mm (the configuration's crop size), resampled from the
volume's own grid onto a grid aligned with the volume's voxel axes (any spacing, direction,
flips), intensities clipped and z-scored with a dataset preset; the probability is mapped back
onto the volume grid trilinearly and thresholded at 0.5.

Two modes:

* ``interactive`` (default). The first positive click opens a crop centred on it. Later clicks
  inside an open crop reuse its cached encoder output and run only the prompt encoder and the
  decoder (the crop does not move). A positive click outside every crop opens a new crop
  centred on it; its result is merged: inside its own extent the crop that predicted last
  wins, elsewhere the masks add up. Beyond the paper: when a crop's mask reaches a crop face
  that lies inside the volume, a neighbouring crop is opened, seeded with positive clicks on
  that face's mask voxels, and its mask is added (union) - up to ``max_growth_crops`` per click.
* ``paper``. The official protocol: one crop centred on the middle of the clicks' bounding box
  on the 1 mm grid (floor((min + max) / 2) per axis), all clicks given to the model, nothing
  outside that crop. Evaluation uses this mode.

Negative clicks. The released model has no label for clicks. With such a model a negative click
is applied by a rule: the model is prompted with the positive clicks of the crop, then every
predicted voxel that is closer (in mm) to a negative click than to every positive click of the
crop is removed. A model fine-tuned with a point-label embedding (config flag) instead gets the
negative clicks with label 0, and the rule is not used; the demo model also reads maps of where
the clicks are (``click_maps``; the label embedding alone carries no position and stayed inert).

On the device. The volume is put on the model's device once, when it is opened; the crop
sampling, the intensity preset, the network, the negative-click rule, the map back onto the
volume grid, the threshold and the kept-object step run there, and only the crop's box of the
mask (uint8) comes back to the host (through pinned memory on CUDA). The negative-click rule's
distance maps are kept per crop and extended click by click, so a refinement click costs the
same whatever the number of clicks before it. On the CPU the same code runs on CPU tensors.

Undo and redo are multi-level: every click (with the crops it opened) or reset is one step of
:class:`~volsam.sessions.history.MaskHistory`, which keeps the mask patches compressed and the
click state snapshotted with them.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..devices import to_device
from ..geometry import Box, Volume, union_boxes
from ..models.sam3d_adapter.crops import (
    KEEP_METHODS,
    CropGrid,
    NearestClick,
    apply_negative_rule,
    inside_axes,
    keep_clicked_parts,
    outer_and,
    sample_trilinear,
    spread_points,
)
from ..prompts import point_prompt
from .base import check_target_buffer
from .history import MaskHistory
from .protocol import Session

logger = logging.getLogger(__name__)

MODES = ("interactive", "paper")


@dataclass(frozen=True)
class AdapterSessionOptions:
    mode: str = "interactive"
    #: Intensity preset (``kits``, ``lits``, ``pancreas``, ``colon`` or ``ct``).
    preset: str = "ct"
    #: Neighbouring crops opened per click when the mask reaches a crop face (interactive mode).
    max_growth_crops: int = 2
    #: Mask voxels a crop face must hold before a neighbouring crop is opened.
    growth_min_voxels: int = 20
    #: Positive clicks seeding a neighbouring crop (spread over the face's mask voxels).
    growth_seeds: int = 10
    #: Encoder outputs kept (each about 160 MB at 128^3 in float32).
    max_cached_crops: int = 3
    #: "auto" (bf16/fp16 autocast on CUDA, float32 elsewhere), "float32", "bfloat16", "float16".
    precision: str = "auto"
    threshold: float = 0.5
    #: Keep only the clicked object: each crop's mask keeps its connected parts that hold one of
    #: its positive clicks (all parts if none does). Off for the paper's own protocol, whose
    #: target may be several unclicked pieces.
    keep_connected: bool = True
    #: How the kept object is found (``volsam.models.sam3d_adapter.crops.KEEP_METHODS``):
    #: "auto" labels on the host on CPU and flood-fills on the device elsewhere.
    keep_method: str = "auto"

    def __post_init__(self):
        if self.keep_method not in KEEP_METHODS:
            raise ValueError(f"keep_method must be one of {', '.join(KEEP_METHODS)}, got {self.keep_method!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.max_growth_crops < 0 or self.max_cached_crops < 1 or self.growth_seeds < 1:
            raise ValueError("max_growth_crops must be >= 0, max_cached_crops and growth_seeds >= 1")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold}")


@dataclass(frozen=True)
class Click:
    """A click: its continuous volume index (i, j, k), converted once from the user's
    coordinates, and its role."""

    ijk: tuple[float, float, float]
    positive: bool


@dataclass(frozen=True)
class CropState:
    """One crop: its centre (continuous volume ijk), the positive clicks that seed it (volume
    ijk) and how it was opened ("click" or "growth", which decides how its mask merges)."""

    center_ijk: tuple[float, float, float]
    seeds: tuple[tuple[float, float, float], ...]
    origin: str = "click"

    @property
    def key(self) -> tuple[float, float, float]:
        return tuple(round(v, 4) for v in self.center_ijk)


@dataclass
class _CropCache:
    """What a crop keeps on the device between clicks: the encoder output and, once a negative
    click has come, the nearest-click distance maps of the negative-click rule."""

    embedding: object
    nearest_positive: NearestClick | None = None
    nearest_negative: NearestClick | None = None


@dataclass(frozen=True)
class AdapterPrompts:
    """What undo/redo restores besides the mask."""

    clicks: tuple[Click, ...] = ()
    crops: tuple[CropState, ...] = ()


class AdapterSession(Session):
    """Click-to-3D segmentation of one volume with a 3DSAM-adapter model.

    Typical use::

        session = AdapterSession(model, device="cuda")
        session.open_volume(volume)                  # optionally with a caller-owned buffer
        box = session.add_point(ras, positive=True)  # changed (k, j, i) box or None
        session.undo(); session.redo(); session.reset()
        mask = session.result
    """

    method = "sam3d-adapter"
    capabilities = frozenset({"points"})

    def __init__(self, model=None, device="cpu", options: AdapterSessionOptions | None = None,
                 predictor=None) -> None:
        """``model``: a :class:`~volsam.models.sam3d_adapter.Sam3DAdapter` (moved to ``device``);
        or ``predictor``: anything with the predictor's ``crop_size``/``embed``/``predict``
        (``predict`` may return a numpy array or a tensor; without a ``device`` the session
        works on the CPU)."""
        from ..models.sam3d_adapter.predictor import Sam3DAdapterPredictor
        from ..models.sam3d_adapter.presets import get_preset

        self.options = options or AdapterSessionOptions()
        self.preset = get_preset(self.options.preset)
        if predictor is None and model is None:
            raise ValueError("give a model or a predictor")
        self.predictor = predictor or Sam3DAdapterPredictor(model, device, self.options.precision)
        self.crop_size = int(self.predictor.crop_size)
        self.uses_labels = bool(getattr(self.predictor.model, "has_point_labels", False))
        self.device = torch.device(getattr(self.predictor, "device", "cpu"))
        self._volume: Volume | None = None
        self._volume_tensor: torch.Tensor | None = None
        self._pinned: torch.Tensor | None = None
        self._history: MaskHistory | None = None
        self._prompts = AdapterPrompts()
        self._embeddings: OrderedDict = OrderedDict()

    def warmup(self) -> None:
        """Click once on a blank volume in a throwaway session sharing this one's model, so
        that the first real click pays for neither kernel selection and loading nor allocator
        warm-up, in the network or in the voxel work around it (costs one encoder pass; this
        session's volume, prompts and history are not touched)."""
        size = self.crop_size
        # A threshold below every probability, so that the kept-object step has a mask to walk.
        scratch = AdapterSession(predictor=self.predictor, options=replace(self.options, threshold=1e-9))
        scratch.open_volume(Volume.from_spacing(np.zeros((size,) * 3, np.float32)))
        scratch.add_point((size / 2,) * 3, space="ijk")
        scratch.close()

    # --- volume and buffer -----------------------------------------------------------------------
    def open_volume(self, volume: Volume, target_buffer: np.ndarray | None = None) -> None:
        """Open a volume (HU intensities, (k, j, i)); clears clicks, history and cached crops."""
        if not isinstance(volume, Volume):
            raise ValueError(f"expected a volsam.geometry.Volume, got {type(volume).__name__}")  # noqa: TRY004
        buffer = np.zeros(volume.shape_kji, np.uint8) if target_buffer is None else target_buffer
        check_target_buffer(buffer, volume)
        self._volume = volume
        self._embeddings.clear()
        self._volume_tensor = None  # the old volume's device memory goes before the new one comes
        # Integer CT and float32 keep their dtype; each sampled block becomes float32 on the device.
        self._volume_tensor = to_device(volume.array, self.device)
        self._history = MaskHistory(buffer)
        self._prompts = AdapterPrompts()

    def set_target_buffer(self, buffer: np.ndarray) -> None:
        """Write results into ``buffer`` (uint8, the volume's (k, j, i) shape) from now on;
        prompts and history start over (cached crop embeddings are kept)."""
        volume = self._require_volume()
        check_target_buffer(buffer, volume)
        self._history = MaskHistory(buffer)
        self._prompts = AdapterPrompts()

    def close(self) -> None:
        """Forget the volume and the cached crop embeddings (device memory)."""
        super().close()
        self._volume = None
        self._volume_tensor = None
        self._pinned = None
        self._embeddings.clear()

    @property
    def prompts(self) -> AdapterPrompts:
        """The clicks and crops so far (what undo and redo restore with the mask)."""
        return self._prompts

    @property
    def crop_boxes(self) -> list[Box]:
        """Volume boxes of the open crops, oldest first (for display)."""
        return [self._grid(crop).volume_box(self._volume.shape_kji) for crop in self._prompts.crops]

    # --- prompts ----------------------------------------------------------------------------------
    def add_points(self, positives=(), negatives=(), *, space: str = "ras", view_normal=None) -> Box | None:
        """Add several clicks as one undo step: positives first; the interactive mode takes them
        one by one, the paper mode predicts once with all of them. ``view_normal`` is ignored:
        the adapter works in 3D whatever view a click came from."""
        volume = self._require_volume()
        clicks = [self._click(volume, p, space, True) for p in positives]
        clicks += [self._click(volume, p, space, False) for p in negatives]
        if not clicks:
            raise ValueError("no clicks given")
        self._history.begin("clicks", self._prompts)
        if self.options.mode == "paper":  # one crop around all clicks: predict once
            self._prompts = replace(self._prompts, clicks=self._prompts.clicks + tuple(clicks))
            self._run_paper()
        else:
            for click in clicks:
                self._run_interactive(click)
        return self._history.end(self._prompts)

    @staticmethod
    def _click(volume: Volume, coordinates, space: str, positive: bool) -> Click:
        """The one place a click becomes a voxel index (checked to lie in the image)."""
        point = np.asarray(coordinates, dtype=np.float64).reshape(-1)
        if point.shape != (3,) or not np.all(np.isfinite(point)):
            raise ValueError(f"a click needs 3 finite coordinates, got {coordinates!r}")
        return Click(point_prompt(volume, point, space, positive).ijk, bool(positive))

    # --- undo / redo / reset ----------------------------------------------------------------------
    def _no_prompts(self) -> AdapterPrompts:
        return AdapterPrompts()

    # --- crops ------------------------------------------------------------------------------------
    def _grid(self, crop: CropState) -> CropGrid:
        return CropGrid(np.asarray(crop.center_ijk, float), self._volume.spacing, self.crop_size)

    def crop_image(self, grid: CropGrid) -> torch.Tensor:
        """The z-scored (S, S, S) crop in (D, H, W) on the device; outside the volume 0 (the
        dataset mean)."""
        axes_kji = grid.volume_axes_kji()
        crop = self.preset.apply_tensor(sample_trilinear(self._volume_tensor, axes_kji))
        inside = outer_and(inside_axes(axes_kji, self._volume.shape_kji), self.device)
        return crop.masked_fill_(~inside, 0.0)

    def _cache(self, crop: CropState) -> _CropCache:
        key = crop.key
        if key in self._embeddings:
            self._embeddings.move_to_end(key)
            return self._embeddings[key]
        cache = _CropCache(self.predictor.embed(self.crop_image(self._grid(crop))))
        self._embeddings[key] = cache
        while len(self._embeddings) > self.options.max_cached_crops:
            self._embeddings.popitem(last=False)
        return cache

    def _predict(self, crop: CropState, positives_dhw: np.ndarray, negatives_dhw: np.ndarray) -> torch.Tensor:
        """The crop's probability (S, S, S) on the device for clicks in crop coordinates (d, h, w)."""
        cache = self._cache(crop)
        if self.uses_labels:
            points = np.concatenate([positives_dhw, negatives_dhw])
            labels = np.array([1] * len(positives_dhw) + [0] * len(negatives_dhw))
            return self._network(cache.embedding, points[:, [0, 2, 1]], labels)
        probability = self._network(cache.embedding, positives_dhw[:, [0, 2, 1]])
        if len(negatives_dhw):
            probability = self._negative_rule(cache, probability, positives_dhw, negatives_dhw)
        return probability

    def _network(self, embedding, points_dwh: np.ndarray, labels: np.ndarray | None = None) -> torch.Tensor:
        probability = self.predictor.predict(embedding, points_dwh, labels)
        return torch.as_tensor(probability, device=self.device)

    def _negative_rule(self, cache: _CropCache, probability: torch.Tensor, positives_dhw: np.ndarray,
                       negatives_dhw: np.ndarray) -> torch.Tensor:
        if cache.nearest_positive is None:
            cache.nearest_positive = NearestClick(probability.shape, self.device)
            cache.nearest_negative = NearestClick(probability.shape, self.device)
        return apply_negative_rule(probability, cache.nearest_positive.update(positives_dhw),
                                   cache.nearest_negative.update(negatives_dhw))

    def _crop_probability(self, crop: CropState) -> torch.Tensor:
        """Run the model on one crop with its seeds and the session's negative clicks."""
        grid = self._grid(crop)
        negatives = [c.ijk for c in self._prompts.clicks if not c.positive]
        negatives_dhw = grid.ijk_to_crop(np.array(negatives)) if negatives else np.zeros((0, 3))
        return self._predict(crop, grid.ijk_to_crop(np.array(crop.seeds)), negatives_dhw)

    def _volume_mask(self, crop: CropState, probability: torch.Tensor) -> tuple[Box, np.ndarray]:
        """The crop's binary mask on the volume grid, over the crop's volume box, on the host."""
        box = self._grid(crop).volume_box(self._volume.shape_kji)
        if box.is_empty:
            return box, np.zeros(box.shape, np.uint8)
        return box, self._to_host(self._map_to_volume(crop, probability, box))

    def _map_to_volume(self, crop: CropState, probability: torch.Tensor, box: Box) -> torch.Tensor:
        """The crop's probability resampled onto the volume voxels of ``box``, thresholded and
        reduced to the clicked object: a bool tensor on the device."""
        mask = sample_trilinear(probability, self._grid(crop).crop_axes_kji(box)) > self.options.threshold
        if self.options.keep_connected:
            seeds = np.round(np.array(crop.seeds))
            mask = keep_clicked_parts(mask, seeds[:, ::-1].astype(int) - np.array(box.start),
                                      self.options.keep_method)
        return mask

    def _to_host(self, mask: torch.Tensor) -> np.ndarray:
        """A device mask as a host uint8 array: on CUDA through a reused pinned buffer (an
        asynchronous copy, waited for here, as the history needs it next); on the CPU a view."""
        mask = mask.to(torch.uint8)
        if mask.device.type != "cuda":
            return mask.cpu().numpy()
        if self._pinned is None or self._pinned.numel() < mask.numel():
            self._pinned = torch.empty(mask.numel(), dtype=torch.uint8, pin_memory=True)
        host = self._pinned[:mask.numel()].view(mask.shape)
        host.copy_(mask, non_blocking=True)
        torch.cuda.current_stream(mask.device).synchronize()
        return host.numpy()

    def _apply_crop(self, crop: CropState, union: bool) -> torch.Tensor:
        probability = self._crop_probability(crop)
        box, mask = self._volume_mask(crop, probability)
        if not box.is_empty:
            if union:
                mask = mask | self._history.buffer[box.slices]
            self._history.commit(mask, box)
        return probability

    # --- modes ------------------------------------------------------------------------------------
    def _run_interactive(self, click: Click) -> None:
        self._prompts = replace(self._prompts, clicks=self._prompts.clicks + (click,))
        ijk = np.array(click.ijk)
        crops = list(self._prompts.crops)
        containing = [n for n, crop in enumerate(crops) if self._grid(crop).contains_ijk(ijk)]
        if containing:
            index = containing[-1]  # the most recent crop holding the click keeps it
            target = crops[index]
            if click.positive:
                target = replace(target, seeds=target.seeds + (click.ijk,))
            crops[index] = target
            crops.append(crops.pop(index))  # it predicts last, so it now wins in its extent
        elif click.positive:
            target = CropState(click.ijk, (click.ijk,))
            crops.append(target)
        else:
            logger.info("negative click outside every crop: kept for later predictions")
            return
        self._prompts = replace(self._prompts, crops=tuple(crops))
        if not target.seeds:
            return  # a crop with negative clicks only predicts nothing
        # A click re-predicts its crop, which then wins inside its extent (growth crops too).
        probability = self._apply_crop(target, union=False)
        self._grow(target, probability)

    def _run_paper(self) -> None:
        clicks = self._prompts.clicks
        if not any(c.positive for c in clicks):
            return
        spacing = self._volume.spacing
        lattice = np.array([np.floor(np.array(c.ijk) * spacing + 0.5) for c in clicks])
        center_mm = np.floor((lattice.max(0) + lattice.min(0)) / 2)
        crop = CropState(tuple(float(v) for v in center_mm / spacing), tuple(c.ijk for c in clicks if c.positive))
        self._prompts = replace(self._prompts, crops=(crop,))
        # The official test crops on the 1 mm grid: clicks sit on whole crop voxels.
        grid = self._grid(crop)
        positives_dhw = np.array([np.floor(grid.ijk_to_crop(c.ijk) + 0.5) for c in clicks if c.positive])
        negatives_dhw = np.array([np.floor(grid.ijk_to_crop(c.ijk) + 0.5) for c in clicks
                                  if not c.positive]).reshape(-1, 3)
        box, mask = self._volume_mask(crop, self._predict(crop, positives_dhw, negatives_dhw))
        buffer = self._history.buffer
        whole = union_boxes(Box.from_mask(buffer), box)
        if whole is None:
            return
        values = np.zeros(whole.shape, np.uint8)  # nothing outside the one crop
        if not box.is_empty:
            offset = tuple(slice(a - b, c - b) for a, b, c in zip(box.start, whole.start, box.stop))
            values[offset] = mask
        self._history.commit(values, whole)

    # --- growth beyond the crop -------------------------------------------------------------------
    def _grow(self, first: CropState, probability: torch.Tensor) -> None:
        budget = self.options.max_growth_crops
        queue = [(first, probability)]
        while queue and budget > 0:
            crop, probability = queue.pop(0)
            for candidate in self._growth_candidates(crop, probability):
                if budget <= 0:
                    break
                if self._covered(candidate, crop):
                    continue  # another crop already covers that side
                budget -= 1
                self._prompts = replace(self._prompts, crops=self._prompts.crops + (candidate,))
                queue.append((candidate, self._apply_crop(candidate, union=True)))

    def _covered(self, candidate: CropState, parent: CropState) -> bool:
        seeds = np.array(candidate.seeds).mean(0)
        for other in self._prompts.crops:
            if np.all(np.abs(np.subtract(candidate.center_ijk, other.center_ijk)) * self._volume.spacing
                      < self.crop_size / 4):
                return True
            if other is not parent and other.key != parent.key and self._grid(other).contains_ijk(seeds):
                return True
        return False

    def _growth_candidates(self, crop: CropState, probability: torch.Tensor) -> list[CropState]:
        """Neighbouring crops for every crop face (inside the volume) that the mask reaches,
        the face with the most mask voxels first."""
        grid = self._grid(crop)
        size, half = self.crop_size, self.crop_size // 2
        sides = (0, size - 1)
        # The six faces (S x S each) come to the host in one copy; the crop stays on the device.
        faces = torch.stack([probability.select(axis, side) for axis in range(3) for side in sides])
        faces = (faces > self.options.threshold).cpu().numpy()
        candidates = []
        for axis in range(3):  # crop axes d, h, w
            for n, side in enumerate(sides):
                voxels = np.argwhere(faces[2 * axis + n])
                if len(voxels) < self.options.growth_min_voxels:
                    continue
                coordinates = np.insert(voxels.astype(float), axis, side, axis=1)  # (N, 3) d, h, w
                outward = np.zeros(3)
                outward[axis] = 1.0 if side else -1.0
                if not self._volume.contains_ijk(grid.crop_to_ijk(coordinates.mean(0) + outward)):
                    continue  # the face lies on the volume's border: nothing beyond it
                seeds = spread_points(coordinates, self.options.growth_seeds)
                center = coordinates.mean(0)
                # Seeds end up a quarter crop inside the new crop, which reaches 3/4 crop further.
                center[axis] = side + outward[axis] * (half - size // 4)
                candidates.append((len(voxels), CropState(
                    tuple(float(v) for v in grid.crop_to_ijk(center)),
                    tuple(tuple(float(v) for v in grid.crop_to_ijk(s)) for s in seeds), origin="growth")))
        # The widest contact first: that is where most of the object lies beyond the crop.
        return [crop for _, crop in sorted(candidates, key=lambda item: -item[0])]
