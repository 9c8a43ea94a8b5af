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
negative clicks with label 0, and the rule is not used.

Undo and redo are multi-level: every click (with the crops it opened) or reset is one step of
:class:`~volsam.sessions.history.MaskHistory`, which keeps the mask patches compressed and the
click state snapshotted with them.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np

from ..geometry import Box, Volume, union_boxes
from .base import UndoableSession, check_target_buffer
from .history import MaskHistory

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

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.max_growth_crops < 0 or self.max_cached_crops < 1 or self.growth_seeds < 1:
            raise ValueError("max_growth_crops must be >= 0, max_cached_crops and growth_seeds >= 1")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold}")


@dataclass(frozen=True)
class Click:
    ras: tuple[float, float, float]
    positive: bool


@dataclass(frozen=True)
class CropState:
    """One crop: its centre (continuous volume ijk), the positive clicks that seed it (RAS)
    and how it was opened ("click" or "growth", which decides how its mask merges)."""

    center_ijk: tuple[float, float, float]
    seeds: tuple[tuple[float, float, float], ...]
    origin: str = "click"

    @property
    def key(self) -> tuple[float, float, float]:
        return tuple(round(v, 4) for v in self.center_ijk)


@dataclass(frozen=True)
class SessionState:
    """What undo/redo restores besides the mask."""

    clicks: tuple[Click, ...] = ()
    crops: tuple[CropState, ...] = ()


@dataclass
class CropGrid:
    """A crop's sampling grid: crop voxel n along axis a sits at volume index
    center[a] + (n - S/2) / spacing[a] (axes i, j, k; crop array order (D, H, W) = (k, j, i))."""

    center_ijk: np.ndarray
    spacing_ijk: np.ndarray
    size: int

    def crop_to_ijk(self, crop_dhw: np.ndarray) -> np.ndarray:
        """(N, 3) crop voxel coordinates (d, h, w) -> (N, 3) volume (i, j, k)."""
        crop_whd = np.asarray(crop_dhw, float)[..., ::-1]
        return self.center_ijk + (crop_whd - self.size // 2) / self.spacing_ijk

    def ijk_to_crop(self, ijk: np.ndarray) -> np.ndarray:
        """(N, 3) volume (i, j, k) -> (N, 3) crop (d, h, w), continuous."""
        whd = (np.asarray(ijk, float) - self.center_ijk) * self.spacing_ijk + self.size // 2
        return whd[..., ::-1]

    def contains_ijk(self, ijk: np.ndarray) -> np.ndarray:
        crop = self.ijk_to_crop(ijk)
        return np.all((crop >= -0.5) & (crop < self.size - 0.5), axis=-1)

    def volume_box(self, shape_kji) -> Box:
        """Volume voxels whose centres fall inside the crop's extent, clipped to the volume."""
        low = self.center_ijk + (-0.5 - self.size // 2) / self.spacing_ijk
        high = self.center_ijk + (self.size - 0.5 - self.size // 2) / self.spacing_ijk
        start_ijk = np.ceil(low - 1e-9).astype(int)
        stop_ijk = np.floor(high + 1e-9).astype(int) + 1
        return Box(start_ijk[::-1], stop_ijk[::-1]).clip_to(shape_kji)


def _sample_trilinear(array, index_kji_axes, pad_value=None):
    """Sample ``array`` (k, j, i) at the outer product of per-axis continuous indices
    (three 1D arrays, k, j, i). Positions beyond half a voxel outside get ``pad_value``
    (None: clamp to the border voxels)."""
    import torch
    import torch.nn.functional as F

    sizes = array.shape
    lows = [int(max(0, np.floor(a.min()))) for a in index_kji_axes]
    highs = [int(min(n - 1, np.ceil(a.max()))) + 1 for a, n in zip(index_kji_axes, sizes)]
    if any(h <= lo for lo, h in zip(lows, highs)):
        block = np.zeros((1, 1, 1), np.float32)
        lows = [0, 0, 0]
    else:
        block = np.asarray(array[lows[0]:highs[0], lows[1]:highs[1], lows[2]:highs[2]], dtype=np.float32)
    coordinates = []
    for axis, positions in enumerate(index_kji_axes):
        local = np.clip(positions - lows[axis], 0, block.shape[axis] - 1)
        n = block.shape[axis]
        coordinates.append(torch.from_numpy((2 * local / max(n - 1, 1) - 1).astype(np.float32)))
    k, j, i = torch.meshgrid(*coordinates, indexing="ij")
    grid = torch.stack([i, j, k], dim=-1)[None]
    sampled = F.grid_sample(torch.from_numpy(np.ascontiguousarray(block))[None, None], grid, mode="bilinear",
                            padding_mode="border", align_corners=True)[0, 0].numpy()
    if pad_value is not None:
        inside = [(a >= -0.5) & (a <= n - 0.5) for a, n in zip(index_kji_axes, sizes)]
        outside = ~(inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :])
        sampled[outside] = pad_value
    return sampled


class AdapterSession(UndoableSession):
    """Click-to-3D segmentation of one volume with a 3DSAM-adapter model.

    Typical use::

        session = AdapterSession(model, device="cpu")
        session.set_volume(volume)                  # optionally set_target_buffer(buffer)
        box = session.add_point(ras, positive=True)  # changed (k, j, i) box or None
        session.undo(); session.redo(); session.reset()
        mask = session.result
    """

    def __init__(self, model=None, device="cpu", options: AdapterSessionOptions | None = None,
                 predictor=None) -> None:
        """``model``: a :class:`~volsam.models.sam3d_adapter.Sam3DAdapter` (moved to ``device``);
        or ``predictor``: anything with the predictor's ``crop_size``/``embed``/``predict``."""
        from ..models.sam3d_adapter.predictor import Sam3DAdapterPredictor
        from ..models.sam3d_adapter.presets import get_preset

        self.options = options or AdapterSessionOptions()
        self.preset = get_preset(self.options.preset)
        if predictor is None and model is None:
            raise ValueError("give a model or a predictor")
        self.predictor = predictor or Sam3DAdapterPredictor(model, device, self.options.precision)
        self.crop_size = int(self.predictor.crop_size)
        self.uses_labels = bool(getattr(self.predictor.model, "has_point_labels", False))
        self.volume: Volume | None = None
        self._history: MaskHistory | None = None
        self._prompts = SessionState()
        self._embeddings: OrderedDict = OrderedDict()
        self.timings: dict[str, float] = {}

    def warmup(self) -> None:
        """Run the model once on an empty crop, so that the first click does not also pay for
        kernel selection and allocator warm-up (costs one encoder pass)."""
        size = self.crop_size
        embedding = self.predictor.embed(np.zeros((size,) * 3, np.float32))
        self.predictor.predict(embedding, np.full((1, 3), size / 2))

    # --- volume and buffer -----------------------------------------------------------------------
    def set_volume(self, volume: Volume, target_buffer: np.ndarray | None = None) -> None:
        """Open a volume (HU intensities, (k, j, i)); clears clicks, history and cached crops."""
        if not isinstance(volume, Volume):
            raise ValueError(f"expected a volsam.geometry.Volume, got {type(volume).__name__}")  # noqa: TRY004
        self.volume = volume
        self._embeddings.clear()
        buffer = np.zeros(volume.shape_kji, np.uint8) if target_buffer is None else target_buffer
        check_target_buffer(buffer, self.volume)
        self._history = MaskHistory(buffer)
        self._prompts = SessionState()

    def set_target_buffer(self, buffer: np.ndarray) -> None:
        """Write results into ``buffer`` (uint8, the volume's (k, j, i) shape) from now on; history restarts."""
        self._require_volume()
        check_target_buffer(buffer, self.volume)
        self._history = MaskHistory(buffer)

    def _require_volume(self) -> None:
        if self.volume is None:
            raise ValueError("no volume is open: call set_volume(volume) first")

    @property
    def result(self) -> np.ndarray:
        self._require_volume()
        return self._history.buffer

    @property
    def state(self) -> SessionState:
        return self._prompts

    @property
    def crop_boxes(self) -> list[Box]:
        """Volume boxes of the open crops, oldest first (for display)."""
        return [self._grid(crop).volume_box(self.volume.shape_kji) for crop in self._prompts.crops]

    # --- prompts ----------------------------------------------------------------------------------
    def add_point(self, ras, positive: bool = True) -> Box | None:
        """Add one click at RAS mm; returns the changed (k, j, i) box, or None."""
        return self.add_points([ras] if positive else [], [] if positive else [ras])

    def add_points(self, positives=(), negatives=()) -> Box | None:
        """Add several clicks as one undo step: positives first; the interactive mode takes them
        one by one, the paper mode predicts once with all of them."""
        self._require_volume()
        clicks = [self._click(p, True) for p in positives] + [self._click(p, False) for p in negatives]
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

    def _click(self, ras, positive: bool) -> Click:
        point = np.asarray(ras, dtype=np.float64).reshape(-1)
        if point.shape != (3,) or not np.all(np.isfinite(point)):
            raise ValueError(f"a click needs 3 finite RAS coordinates, got {ras!r}")
        ijk = self.volume.ras_to_ijk_points(point)
        if not self.volume.contains_ijk(ijk):
            raise ValueError(f"click at RAS ({', '.join(f'{v:g}' for v in point)}) mm lies outside the image "
                             f"(voxel index {np.round(ijk, 2).tolist()}, image size "
                             f"{list(self.volume.shape_ijk)} (i, j, k))")
        return Click(tuple(float(v) for v in point), bool(positive))

    # --- undo / redo / reset ----------------------------------------------------------------------
    def _no_prompts(self) -> SessionState:
        return SessionState()

    def _require_history(self) -> MaskHistory:
        self._require_volume()  # set_volume always sets a buffer and its history
        return self._history

    # --- crops ------------------------------------------------------------------------------------
    def _grid(self, crop: CropState) -> CropGrid:
        return CropGrid(np.asarray(crop.center_ijk, float), self.volume.spacing, self.crop_size)

    def crop_image(self, grid: CropGrid) -> np.ndarray:
        """The z-scored (S, S, S) crop in (D, H, W); outside the volume 0 (the dataset mean)."""
        n = np.arange(self.crop_size, dtype=np.float64) - self.crop_size // 2
        axes_kji = [grid.center_ijk[a] + n / grid.spacing_ijk[a] for a in (2, 1, 0)]
        hounsfield = _sample_trilinear(self.volume.array, axes_kji)
        crop = self.preset.apply(hounsfield)
        inside = [(a >= -0.5) & (a <= s - 0.5) for a, s in zip(axes_kji, self.volume.shape_kji)]
        crop[~(inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :])] = 0.0
        return crop

    def _embedding(self, crop: CropState):
        key = crop.key
        if key in self._embeddings:
            self._embeddings.move_to_end(key)
            return self._embeddings[key]
        start = time.perf_counter()
        embedding = self.predictor.embed(self.crop_image(self._grid(crop)))
        self.timings["encoder_s"] = time.perf_counter() - start
        self._embeddings[key] = embedding
        while len(self._embeddings) > self.options.max_cached_crops:
            self._embeddings.popitem(last=False)
        return embedding

    def _crop_probability(self, crop: CropState) -> np.ndarray:
        """Run the model on one crop with its seeds and the session's negative clicks."""
        grid = self._grid(crop)
        positives = [self.volume.ras_to_ijk_points(np.array(p)) for p in crop.seeds]
        negatives = [self.volume.ras_to_ijk_points(np.array(c.ras)) for c in self._prompts.clicks if not c.positive]
        positives_dhw = grid.ijk_to_crop(np.array(positives))
        negatives_dhw = grid.ijk_to_crop(np.array(negatives)) if negatives else np.zeros((0, 3))
        embedding = self._embedding(crop)
        start = time.perf_counter()
        if self.uses_labels:
            points = np.concatenate([positives_dhw, negatives_dhw])
            labels = np.array([1] * len(positives_dhw) + [0] * len(negatives_dhw))
            probability = self.predictor.predict(embedding, points[:, [0, 2, 1]], labels)
        else:
            probability = self.predictor.predict(embedding, positives_dhw[:, [0, 2, 1]])
            if len(negatives_dhw):
                probability = apply_negative_rule(probability, positives_dhw, negatives_dhw)
        self.timings["decoder_s"] = time.perf_counter() - start
        return probability

    def _volume_mask(self, crop: CropState, probability: np.ndarray) -> tuple[Box, np.ndarray]:
        """The crop's binary mask on the volume grid, over the crop's volume box."""
        grid = self._grid(crop)
        box = grid.volume_box(self.volume.shape_kji)
        if box.is_empty:
            return box, np.zeros(box.shape, np.uint8)
        axes = []
        for axis_kji in range(3):
            axis_ijk = 2 - axis_kji
            index = np.arange(box.start[axis_kji], box.stop[axis_kji], dtype=np.float64)
            axes.append((index - grid.center_ijk[axis_ijk]) * grid.spacing_ijk[axis_ijk] + self.crop_size // 2)
        resampled = _sample_trilinear(probability, axes)
        mask = resampled > self.options.threshold
        if self.options.keep_connected:
            seeds = np.round(np.array([self.volume.ras_to_ijk_points(np.array(p)) for p in crop.seeds]))
            mask = keep_clicked_parts(mask, seeds[:, ::-1].astype(int) - np.array(box.start))
        return box, mask.astype(np.uint8)

    def _apply_crop(self, crop: CropState, union: bool) -> np.ndarray:
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
        ijk = self.volume.ras_to_ijk_points(np.array(click.ras))
        crops = list(self._prompts.crops)
        containing = [n for n, crop in enumerate(crops) if self._grid(crop).contains_ijk(ijk)]
        if containing:
            index = containing[-1]  # the most recent crop holding the click keeps it
            target = crops[index]
            if click.positive:
                target = replace(target, seeds=target.seeds + (click.ras,))
            crops[index] = target
            crops.append(crops.pop(index))  # it predicts last, so it now wins in its extent
        elif click.positive:
            target = CropState(tuple(float(v) for v in ijk), (click.ras,))
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
        spacing = self.volume.spacing
        lattice = np.array([np.floor(self.volume.ras_to_ijk_points(np.array(c.ras)) * spacing + 0.5)
                            for c in clicks])
        center_mm = np.floor((lattice.max(0) + lattice.min(0)) / 2)
        crop = CropState(tuple(float(v) for v in center_mm / spacing),
                         tuple(c.ras for c in clicks if c.positive))
        self._prompts = replace(self._prompts, crops=(crop,))
        # The official test crops on the 1 mm grid: clicks sit on whole crop voxels.
        grid = self._grid(crop)
        positives_dhw = np.array([self._lattice_crop(grid, c.ras) for c in clicks if c.positive])
        negatives_dhw = np.array([self._lattice_crop(grid, c.ras) for c in clicks if not c.positive]).reshape(-1, 3)
        embedding = self._embedding(crop)
        if self.uses_labels:
            points = np.concatenate([positives_dhw, negatives_dhw])
            labels = np.array([1] * len(positives_dhw) + [0] * len(negatives_dhw))
            probability = self.predictor.predict(embedding, points[:, [0, 2, 1]], labels)
        else:
            probability = self.predictor.predict(embedding, positives_dhw[:, [0, 2, 1]])
            if len(negatives_dhw):
                probability = apply_negative_rule(probability, positives_dhw, negatives_dhw)
        box, mask = self._volume_mask(crop, probability)
        buffer = self._history.buffer
        previous = Box.from_mask(buffer)
        whole = union_boxes(previous, box)
        if whole is None:
            return
        values = np.zeros(whole.shape, np.uint8)  # nothing outside the one crop
        if not box.is_empty:
            offset = tuple(slice(a - b, c - b) for a, b, c in zip(box.start, whole.start, box.stop))
            values[offset] = mask
        self._history.commit(values, whole)

    def _lattice_crop(self, grid: CropGrid, ras) -> np.ndarray:
        ijk = self.volume.ras_to_ijk_points(np.array(ras))
        return np.floor(grid.ijk_to_crop(ijk) + 0.5)

    # --- growth beyond the crop -------------------------------------------------------------------
    def _grow(self, first: CropState, probability: np.ndarray) -> None:
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
        seeds = self.volume.ras_to_ijk_points(np.array(candidate.seeds)).mean(0)
        for other in self._prompts.crops:
            if np.all(np.abs(np.subtract(candidate.center_ijk, other.center_ijk)) * self.volume.spacing
                      < self.crop_size / 4):
                return True
            if other is not parent and other.key != parent.key and self._grid(other).contains_ijk(seeds):
                return True
        return False

    def _growth_candidates(self, crop: CropState, probability: np.ndarray) -> list[CropState]:
        """Neighbouring crops for every crop face (inside the volume) that the mask reaches,
        the face with the most mask voxels first."""
        grid = self._grid(crop)
        size, half = self.crop_size, self.crop_size // 2
        mask = probability > self.options.threshold
        candidates = []
        for axis in range(3):  # crop axes d, h, w
            for side in (0, size - 1):
                layer = np.take(mask, side, axis=axis)
                voxels = np.argwhere(layer)
                if len(voxels) < self.options.growth_min_voxels:
                    continue
                coordinates = np.insert(voxels.astype(float), axis, side, axis=1)  # (N, 3) d, h, w
                outward = np.zeros(3)
                outward[axis] = 1.0 if side else -1.0
                if not self.volume.contains_ijk(grid.crop_to_ijk(coordinates.mean(0) + outward)):
                    continue  # the face lies on the volume's border: nothing beyond it
                seeds = _spread(coordinates, self.options.growth_seeds)
                contact = len(voxels)
                center = coordinates.mean(0)
                # Seeds end up a quarter crop inside the new crop, which reaches 3/4 crop further.
                center[axis] = side + outward[axis] * (half - size // 4)
                candidates.append((contact, CropState(
                    tuple(float(v) for v in grid.crop_to_ijk(center)),
                    tuple(tuple(float(v) for v in self.volume.ijk_to_ras_points(grid.crop_to_ijk(s))) for s in seeds),
                    origin="growth")))
        # The widest contact first: that is where most of the object lies beyond the crop.
        return [crop for _, crop in sorted(candidates, key=lambda item: -item[0])]


def _spread(points: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` points spread over ``points``: the one nearest their centroid first,
    then farthest-point sampling (deterministic)."""
    chosen = [int(np.argmin(np.linalg.norm(points - points.mean(0), axis=1)))]
    distance = np.linalg.norm(points - points[chosen[0]], axis=1)
    while len(chosen) < min(count, len(points)):
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return points[chosen]


def keep_clicked_parts(mask: np.ndarray, clicks_kji: np.ndarray) -> np.ndarray:
    """``mask`` reduced to its connected parts (26-neighbourhood, as lesions are counted) that
    hold one of ``clicks_kji`` (indices into ``mask``; those outside it are ignored); the whole
    mask if no click is on it."""
    from ..clicks import connected_regions

    parts, count = connected_regions(mask)
    inside = np.all((clicks_kji >= 0) & (clicks_kji < mask.shape), axis=1)
    hit = np.unique(parts[tuple(clicks_kji[inside].T)]) if inside.any() else np.zeros(0, int)
    hit = hit[hit > 0]
    if count <= 1 or not len(hit):
        return mask
    return np.isin(parts, hit)


def apply_negative_rule(probability: np.ndarray, positives_dhw: np.ndarray, negatives_dhw: np.ndarray) -> np.ndarray:
    """Zero the probability of crop voxels closer to a negative click than to every positive one.

    Crops are 1 mm isotropic, so crop-voxel distances are millimetres. Ties keep the voxel.
    """
    size = probability.shape
    axes = [np.arange(n, dtype=np.float32) for n in size]

    def nearest(points):  # squared distances summed per axis by broadcasting: no coordinate grid
        best = np.full(size, np.inf, np.float32)
        for d, h, w in np.asarray(points, np.float32):
            squared = ((axes[0] - d) ** 2)[:, None, None] + ((axes[1] - h) ** 2)[None, :, None] + ((axes[2] - w) ** 2)
            np.minimum(best, squared, out=best)
        return best

    removed = nearest(negatives_dhw) < nearest(positives_dhw)
    result = probability.copy()
    result[removed] = 0.0
    return result
