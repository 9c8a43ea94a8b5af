"""Training and validation samples drawn from cached volumes.

3DSAM-adapter crops (spec section 8) are drawn as one resampling per sample instead of
transforming the whole volume first: pick the crop's centre voxel (foreground with
probability 2/3, else background, inside the body's bounding box), shift it by a random
offset of at most (round(1.2 c) - c) / 2 voxels (the official 1.2 c crop followed by a
random c sub-crop), resample the c^3 crop around it through the random zoom / rotation with
``scipy.ndimage.affine_transform`` (linear; the label linearly too, then > 0.5), and apply the
random flips and quarter turns to the crop array. Zooming about the chosen voxel instead of
the volume centre gives the same distribution of crops away from the volume border, and only
the crop is ever resampled, so a sample costs milliseconds however large the volume.
Everything outside the volume and outside the body's bounding box is 0 (the dataset mean in
z-score units), as the official padding is.

SAM2-3dMed clips (spec D7): ``clip_length`` consecutive slices, starting at a prompted slice
that shows the object (drawn uniformly among the slices the object spans) and running up or
down the volume (either direction, so propagation is learnt both ways). The object is the
connected lesion holding the prompt; its masks on the clip's slices are the targets (empty
past its end, which teaches propagation to stop). The prompt is the centre click of the object
on the first slice or, with probability ``mask_prompt_probability``, its ground-truth mask there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..clicks import (
    NEGATIVE_CLICK_PREFERENCE,
    SIZE_GROUPS,
    adapter_training_clicks,
    adapter_validation_clicks,
    component_at,
    connected_regions,
    equivalent_diameter_mm,
    lesion_training_clicks,
    region_center,
    size_group,
)
from .cache import CachedCase
from .preprocessing import AUGMENTATIONS

CLICK_PROTOCOLS = ("3dsam", "lesion", "iterative")
CLIP_AUGMENTATIONS = ("none", "robust")
#: 20 HU in the units of SAM2-3dMed's [0, 1] slices under the soft-tissue window (400 HU wide);
#: the scale of the clips' noise and brightness shift (percentile-normalised MR gets the same).
CLIP_HU20 = 20.0 / 400.0
#: "robust" appearance draws: contrast scale, extra noise (in units of intensity_shift, i.e.
#: of 20 HU) and blur (voxels), each applied with probability APPEARANCE_PROBABILITY.
ROBUST_CONTRAST_SCALE = (0.6, 1.5)
ROBUST_NOISE = (0.0, 1.0)
ROBUST_BLUR_SIGMA = (0.3, 1.2)
ROBUST_ZOOM = (0.75, 1.35)  # per axis: slice spacings and in-plane pixel sizes vary by scanner
APPEARANCE_PROBABILITY = 0.4
#: Reversed lesion contrast: the tissue around a lesion is read in a shell this many voxels
#: out (past its partial-volume edge), and the lesion's edge is softened over this sigma.
REVERSE_CONTRAST_SHELL = (2, 4)
REVERSE_CONTRAST_EDGE_SIGMA = 0.7
#: A copy of a clip's object pasted beside it: the gap to the object (pixels), the offsets
#: tried, the rim of tissue copied with it (pixels) and the softness of its edge (sigma). It
#: goes where at least OBJECT_COPY_TISSUE_SHARE of the pixels it covers lie within
#: OBJECT_COPY_TISSUE_RANGE (50 HU in the soft-tissue window) of the object's surroundings: a
#: copy in air or bone would be told apart by its background alone.
OBJECT_COPY_GAP = (1.0, 8.0)
OBJECT_COPY_TRIES = 16
OBJECT_COPY_TISSUE_SHARE = 0.7
OBJECT_COPY_TISSUE_RANGE = 50.0 / 400.0
OBJECT_COPY_RIM = 1
OBJECT_COPY_EDGE_SIGMA = 0.7


@dataclass(frozen=True)
class AdapterSampling:
    """How adapter crops and their clicks are drawn.

    ``intensity_shift``: largest random shift in z-score units (the official 20 HU / std).
    ``click_protocol``: "3dsam" (spec section 9, all foreground of the crop is the target) or
    "lesion" (the connected lesion at the crop's centre is the target, labelled positive and
    negative clicks; crops are always centred on a lesion, each lesion of a case equally often)
    or "iterative" (lesion crops; the task adds the iterative protocol's corrective click).
    ``augmentation`` "robust": zoom3d with a separate zoom per axis, plus random contrast,
    noise and blur, so the model meets scanner looks its data lacks.
    ``reverse_contrast_probability``: the share of crops whose lesions' contrast against the
    tissue around them is reversed (:func:`reverse_lesion_contrast`).
    """

    crop_size: int
    augmentation: str = "zoom3d"
    click_protocol: str = "3dsam"
    intensity_shift: float = 0.0
    foreground_probability: float = 2.0 / 3.0
    crop_margin_factor: float = 1.2
    reverse_contrast_probability: float = 0.0

    def __post_init__(self):
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {self.augmentation!r}")
        if self.click_protocol not in CLICK_PROTOCOLS:
            raise ValueError(f"click protocol must be one of {', '.join(CLICK_PROTOCOLS)}, got {self.click_protocol!r}")
        if self.crop_size < 8:
            raise ValueError(f"crop size must be at least 8 voxels, got {self.crop_size}")
        _check_probability("reverse_contrast_probability", self.reverse_contrast_probability)

    @property
    def max_offset(self) -> int:
        return (round(self.crop_margin_factor * self.crop_size) - self.crop_size) // 2


def _random_linear_map(augmentation: str, rng: np.random.Generator) -> np.ndarray:
    """Output-to-input 3x3 map in (k, j, i) = (D, H, W) voxel units for one random draw."""
    matrix = np.eye(3)
    if augmentation == "zoom3d":
        if rng.random() < 0.8:
            matrix = matrix / rng.uniform(0.85, 1.25)
    elif augmentation == "robust":
        if rng.random() < 0.8:
            matrix = np.diag(1.0 / rng.uniform(*ROBUST_ZOOM, 3))
    elif augmentation == "inplane":
        if rng.random() < 0.3:  # rotation about D, in the H-W plane
            angle = rng.uniform(-math.pi / 6, math.pi / 6)
            c, s = math.cos(angle), math.sin(angle)
            matrix = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ matrix
        if rng.random() < 0.3:
            matrix = matrix @ np.diag([1.0, 1 / rng.uniform(0.9, 1.1), 1 / rng.uniform(0.9, 1.1)])
    return matrix


def _resample_crop(array: np.ndarray, center: np.ndarray, linear: np.ndarray, size: int,
                   box_start: np.ndarray, box_stop: np.ndarray, order: int = 1) -> np.ndarray:
    """A size^3 crop whose voxel (size//2,)*3 samples ``array`` at ``center`` through ``linear``;
    zero outside ``[box_start, box_stop)``."""
    half = size // 2
    identity = np.allclose(linear, np.eye(3))
    if identity:
        start = np.round(center).astype(np.int64) - half
        out = np.zeros((size,) * 3, np.float32)
        low, high = np.maximum(start, box_start), np.minimum(start + size, box_stop)
        if np.all(high > low):
            src = tuple(slice(a, b) for a, b in zip(low, high))
            dst = tuple(slice(a - s, b - s) for a, b, s in zip(low, high, start))
            out[dst] = array[src]
        return out
    corners = np.array(np.meshgrid(*[[-half, size - 1 - half]] * 3, indexing="ij")).reshape(3, -1)
    reach = linear @ corners + center[:, None]
    low = np.maximum(np.floor(reach.min(axis=1)).astype(np.int64) - 1, box_start)
    high = np.minimum(np.ceil(reach.max(axis=1)).astype(np.int64) + 2, box_stop)
    if np.any(high <= low):
        return np.zeros((size,) * 3, np.float32)
    block = np.asarray(array[tuple(slice(a, b) for a, b in zip(low, high))], dtype=np.float32)
    offset = center - linear @ np.full(3, half) - low
    # Pad by one zero voxel so that interpolation fades to 0 at the box edge, as padding does.
    block = np.pad(block, 1)
    return ndimage.affine_transform(block, linear, offset + 1, output_shape=(size,) * 3, order=order,
                                    mode="constant", cval=0.0, prefilter=False)


def _flips_and_turns(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    for axis in range(3):
        if rng.random() < 0.5:
            arrays = [np.flip(a, axis) for a in arrays]
    if rng.random() < 0.5:
        turns = int(rng.integers(1, 4))
        arrays = [np.rot90(a, turns, axes=(0, 1)) for a in arrays]  # the (D, H) plane
    return [np.ascontiguousarray(a) for a in arrays]


def adapter_training_sample(case: CachedCase, sampling: AdapterSampling, rng: np.random.Generator,
                            lesion_index: int | None = None) -> dict[str, np.ndarray]:
    """One augmented crop: image (c, c, c) float32, target (c, c, c) uint8, clicks (N, 3)
    (k, j, i) in the crop and their labels (N,) bool. ``lesion_index``: the case's lesion to
    centre on (lesion protocols; default: one drawn at random)."""
    box_start, box_stop = (np.asarray(v) for v in case.body_box)
    if sampling.click_protocol != "3dsam":
        # Always centred on a lesion, as inference centres its crop on a click; every lesion
        # equally often, as users click small ones as often as large ones (a random voxel
        # would pick a 30 mm lesion 27 times as often as a 10 mm one).
        lesion = _lesion(case, rng, lesion_index) if case.has_foreground else None
        center = (np.array(np.unravel_index(int(lesion[rng.integers(lesion.size)]), case.label.shape))
                  if lesion is not None else _pick_center(case, rng, 0.0, box_start, box_stop))
    else:
        center = _pick_center(case, rng, sampling.foreground_probability, box_start, box_stop)
    center = center + rng.integers(-sampling.max_offset, sampling.max_offset + 1, size=3)
    linear = _random_linear_map(sampling.augmentation, rng)
    image = _resample_crop(case.image, center.astype(float), linear, sampling.crop_size, box_start, box_stop)
    label = _resample_crop(case.label, center.astype(float), linear, sampling.crop_size, box_start, box_stop) > 0.5
    image, label = _flips_and_turns([image, label], rng)
    # Drawn only when asked for, so runs without it draw what they always did.
    if sampling.reverse_contrast_probability > 0 and rng.random() < sampling.reverse_contrast_probability:
        image = reverse_lesion_contrast(image, label)
    if sampling.augmentation == "robust":
        image = _robust_appearance(image, sampling.intensity_shift, rng)
    if sampling.intensity_shift > 0 and rng.random() < 0.5:
        image = image + np.float32(rng.uniform(-sampling.intensity_shift, sampling.intensity_shift))
    return _with_clicks(image, label, sampling.click_protocol, rng, training=True)


def _robust_appearance(image: np.ndarray, hu20: float, rng: np.random.Generator) -> np.ndarray:
    """Random contrast (about the crop's median, so the lesion-organ difference scales), blur
    and noise of a z-scored crop; ``hu20`` is 20 HU in its units."""
    image = np.asarray(image, np.float32)
    if rng.random() < APPEARANCE_PROBABILITY:
        median = np.float32(np.median(image))
        image = (image - median) * np.float32(rng.uniform(*ROBUST_CONTRAST_SCALE)) + median
    if rng.random() < APPEARANCE_PROBABILITY:
        image = ndimage.gaussian_filter(image, rng.uniform(*ROBUST_BLUR_SIGMA))
    if hu20 > 0 and rng.random() < APPEARANCE_PROBABILITY:
        image = image + rng.normal(0.0, rng.uniform(*ROBUST_NOISE) * hu20, image.shape).astype(np.float32)
    return image


def reverse_lesion_contrast(image: np.ndarray, lesions: np.ndarray) -> np.ndarray:
    """The image with each lesion's contrast reversed: a hypodense lesion made as much
    hyperdense, and the other way round. Each connected lesion is shifted by twice its mean's
    difference from the median of the tissue in a shell around it, so its texture, noise and
    rim stay; the shift fades over a partial-volume edge just outside it. Users click hypo-
    and hyperdense lesions alike, and phantoms (like scans) hold fewer hyperdense ones."""
    image = np.asarray(image, np.float32)
    numbered, _ = ndimage.label(np.asarray(lesions, bool))
    inner, outer = REVERSE_CONTRAST_SHELL
    # Each lesion is worked on in its box, widened by as far as its shell and its fade reach
    # (over a whole 128^3 crop, two lesions took 0.4 s: a data worker's time per sample).
    reach = max(outer, int(4 * REVERSE_CONTRAST_EDGE_SIGMA + 0.5)) + 1
    shifted = image.copy()
    for number, box in enumerate(ndimage.find_objects(numbered), start=1):
        window = tuple(slice(max(0, side.start - reach), side.stop + reach) for side in box)
        around = numbered[window]
        lesion = around == number
        shell = ndimage.binary_dilation(lesion, iterations=outer) & ~ndimage.binary_dilation(lesion, iterations=inner)
        shell &= around == 0  # tissue, not a neighbouring lesion
        if not shell.any():  # the lesion fills the crop
            continue
        part = image[window]
        shift = 2.0 * (float(np.median(part[shell])) - float(part[lesion].mean()))
        # The whole lesion moves; the shift fades just outside it, as a partial-volume edge.
        fade = ndimage.gaussian_filter(lesion.astype(np.float32), REVERSE_CONTRAST_EDGE_SIGMA)
        shifted[window] += np.float32(shift) * np.maximum(lesion, fade)
    return shifted


def paste_object_copy(images: np.ndarray, masks: np.ndarray, lesions: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray | None:
    """The clip's slices (D, rows, cols) with a copy of the object (``masks``) pasted beside
    it at one in-plane offset on every slice, so the copy runs through the same slices as the
    object; None when no offset tried keeps it inside the slices, off every lesion (``lesions``:
    all of the case's lesions on the clip's slices) and on tissue like the object's own
    surroundings (see OBJECT_COPY_TISSUE_SHARE). Of the offsets that do, the one on the most
    alike tissue is taken.

    The copy is not the object, so on the slices after the prompted one only what the model
    remembers of the prompted slice tells the two apart. Without such clips a model can learn
    to segment each slice's most lesion-like blob and ignore its memory (the demo model did:
    with its memory zeroed, its held-out Dice moved by 0.001)."""
    images = np.asarray(images, np.float32)
    present = np.asarray(masks, bool)
    footprint = present.any(axis=0)
    if not footprint.any():
        return None
    reach = OBJECT_COPY_RIM + int(3 * OBJECT_COPY_EDGE_SIGMA + 0.5)  # how far the blended edge spreads
    region = ndimage.binary_dilation(footprint, iterations=reach)
    rows, cols = np.nonzero(region)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    slice_rows, slice_cols = footprint.shape
    around = region & ~ndimage.binary_dilation(footprint, iterations=OBJECT_COPY_RIM + 1)
    own_tissue = float(np.median(images[0][around])) if around.any() else float(np.median(images[0]))
    taken = np.asarray(lesions, bool).any(axis=0) | footprint
    best = None
    for _ in range(OBJECT_COPY_TRIES):
        angle = rng.uniform(0.0, 2.0 * np.pi)
        along = np.array([np.sin(angle), np.cos(angle)])
        # Far enough along that direction for the copy's box to clear the object's, plus a gap.
        clear = min(height / max(abs(along[0]), 1e-6), width / max(abs(along[1]), 1e-6))
        d_row, d_col = np.round(along * (clear + rng.uniform(*OBJECT_COPY_GAP))).astype(int)
        if not (0 <= rows.min() + d_row and rows.max() + d_row < slice_rows
                and 0 <= cols.min() + d_col and cols.max() + d_col < slice_cols):
            continue
        target = _shifted(region, d_row, d_col)
        if np.any(target & taken):
            continue
        alike = float(np.mean(np.abs(images[0][target] - own_tissue) <= OBJECT_COPY_TISSUE_RANGE))
        if alike >= OBJECT_COPY_TISSUE_SHARE and (best is None or alike > best[0]):
            best = (alike, d_row, d_col)
    if best is None:
        return None
    _, d_row, d_col = best
    pasted = images.copy()
    for s in np.flatnonzero(present.any(axis=(1, 2))):
        copied = ndimage.binary_dilation(present[s], iterations=OBJECT_COPY_RIM).astype(np.float32)
        alpha = _shifted(np.maximum(copied, ndimage.gaussian_filter(copied, OBJECT_COPY_EDGE_SIGMA)), d_row, d_col)
        pasted[s] = (1.0 - alpha) * images[s] + alpha * _shifted(images[s], d_row, d_col)
    return pasted


def _shifted(array: np.ndarray, d_row: int, d_col: int) -> np.ndarray:
    """``array`` (rows, cols) moved by whole pixels, zero where nothing moved in."""
    out = np.zeros_like(array)
    rows, cols = array.shape
    out[max(0, d_row):rows + min(0, d_row), max(0, d_col):cols + min(0, d_col)] = \
        array[max(0, -d_row):rows - max(0, d_row), max(0, -d_col):cols - max(0, d_col)]
    return out


def _check_probability(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{name.replace('_', ' ')} must lie in [0, 1], got {value}")


def adapter_validation_sample(case: CachedCase, sampling: AdapterSampling,
                              rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The official validation crop: centred on a foreground voxel (the volume centre without
    foreground), no augmentation, zero outside the volume."""
    shape = np.array(case.image.shape)
    center = _pick_center(case, rng, 1.0, np.zeros(3, np.int64), shape)
    image = _resample_crop(case.image, center.astype(float), np.eye(3), sampling.crop_size, np.zeros(3, np.int64), shape)
    label = _resample_crop(case.label, center.astype(float), np.eye(3), sampling.crop_size,
                           np.zeros(3, np.int64), shape) > 0.5
    return _with_clicks(image, label, sampling.click_protocol, rng, training=False)


def _pick_center(case: CachedCase, rng: np.random.Generator, foreground_probability: float,
                 box_start: np.ndarray, box_stop: np.ndarray) -> np.ndarray:
    label = case.label
    if case.has_foreground and rng.random() < foreground_probability:
        return np.array(np.unravel_index(int(case.foreground[rng.integers(case.foreground.size)]), label.shape))
    # Background: rejection sampling inside the body box (tumours are a small part of it).
    for _ in range(100):
        candidate = np.array([rng.integers(a, b) for a, b in zip(box_start, box_stop)])
        if not label[tuple(candidate)]:
            return candidate
    return np.array([rng.integers(a, b) for a, b in zip(box_start, box_stop)])


def _with_clicks(image: np.ndarray, label: np.ndarray, protocol: str, rng: np.random.Generator,
                 training: bool) -> dict[str, np.ndarray]:
    if protocol == "3dsam":
        clicks = adapter_training_clicks(label, rng) if training else adapter_validation_clicks(label, rng)
        target = label
    elif training:
        # The lesion at the crop's centre is the target, as inference centres the crop on the click.
        clicks, target = lesion_training_clicks(label, rng, near_kji=[s // 2 for s in label.shape])
    else:  # lesion validation: one click at the centre of the lesion nearest the crop's centre
        labels, count = connected_regions(label)
        if count:
            voxels = np.argwhere(labels > 0)
            nearest = voxels[int(np.argmin(np.sum((voxels - np.array(label.shape) // 2) ** 2, axis=1)))]
            target = labels == labels[tuple(nearest)]
            points = np.array([region_center(target)], np.int64)
            positive = np.ones(1, bool)
        else:
            target = label
            points = np.array([[s // 2 for s in label.shape]], np.int64)
            positive = np.zeros(1, bool)
        return {"image": image.astype(np.float32), "target": target.astype(np.uint8),
                "points_kji": points, "positive": positive}
    return {"image": image.astype(np.float32), "target": target.astype(np.uint8),
            "points_kji": clicks.points_kji, "positive": clicks.positive}


def _lesion(case: CachedCase, rng: np.random.Generator, lesion_index: int | None) -> np.ndarray:
    if lesion_index is None:
        return case.lesions[rng.integers(len(case.lesions))]
    return case.lesions[lesion_index]


class SizeBalancedLesions:
    """Every lesion of the training cases, by size group (:data:`volsam.clicks.SIZE_GROUPS`, the
    evaluation's), for
    size-balanced sampling: :meth:`draw` picks a bin uniformly among those with lesions, then
    one of its lesions uniformly. Data hold far more lesions of some sizes than of others (the
    randomised phantoms: 17 % under 10 mm, 59 % 10-20 mm, 23 % 20-30 mm, 1 % from 30 mm), so
    drawing every lesion equally often leaves the rare sizes nearly untrained. An epoch is
    then as many draws as there are training cases, not one pass over them.

    ``cases``: indexable cached cases; ``indices``: which of them to use."""

    def __init__(self, cases, indices):
        groups = {name: [] for name, _, _ in SIZE_GROUPS}
        for index in indices:
            case = cases[index]
            for number, lesion in enumerate(case.lesions):
                groups[size_group(equivalent_diameter_mm(lesion.size, case.spacing_ijk))].append((index, number))
        self.bins: list[list[tuple[int, int]]] = list(groups.values())
        self._filled = [b for b in self.bins if b]
        if not self._filled:
            raise ValueError("size-balanced sampling needs training cases with lesions; none has one")

    @property
    def counts(self) -> tuple[int, ...]:
        """Lesions per size bin."""
        return tuple(len(b) for b in self.bins)

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        """(case index, lesion index in that case) of one sample."""
        lesions = self._filled[rng.integers(len(self._filled))]
        return lesions[rng.integers(len(lesions))]


# --- SAM2-3dMed clips ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipSampling:
    """``corrective_click_probability``: the share of click-prompted clips whose prompted slice
    also gets the iterative protocol's corrective click (positive in the largest miss, negative
    in the largest false positive of the model's first answer), so negative clicks are learnt;
    ``negative_click_preference``: the share of those that go in the false positive whenever the
    answer has one, whichever error is larger. ``tracked_correction_probability``: the share of
    click-prompted clips in which one later, tracked slice also gets the corrective click on the
    model's answer there, read with the memory of the slices before it, as a user corrects a
    propagated slice (negative in a sweep past the object's end). ``augmentation`` "robust": the clip's slices get
    one random in-plane draw (flips, a transpose, a zoom per axis: pixel sizes vary by scanner)
    and the adapter's random contrast, blur and noise, plus a brightness shift, so the model
    meets scanner looks its phantoms lack; "none": the slices as they are (validation always).
    ``reverse_contrast_probability``: the share of clips whose object's contrast against the
    tissue around it is reversed (:func:`reverse_lesion_contrast`). ``object_copy_probability``:
    the share of clips with a copy of the object pasted beside it (:func:`paste_object_copy`), so
    that propagation must read its memory to keep to the object."""

    clip_length: int = 8
    mask_prompt_probability: float = 0.5
    corrective_click_probability: float = 0.0
    tracked_correction_probability: float = 0.0
    negative_click_preference: float = NEGATIVE_CLICK_PREFERENCE
    augmentation: str = "none"
    reverse_contrast_probability: float = 0.0
    object_copy_probability: float = 0.0

    def __post_init__(self):
        if self.clip_length < 2:
            raise ValueError(f"clip length must be at least 2 slices, got {self.clip_length}")
        if self.augmentation not in CLIP_AUGMENTATIONS:
            raise ValueError(f"sam2-3dmed augmentation must be one of {', '.join(CLIP_AUGMENTATIONS)}, "
                             f"got {self.augmentation!r}")
        for name in ("corrective_click_probability", "tracked_correction_probability", "negative_click_preference",
                     "reverse_contrast_probability", "object_copy_probability"):
            _check_probability(name, getattr(self, name))


def sam2_clip_sample(case: CachedCase, sampling: ClipSampling, rng: np.random.Generator,
                     prompt_voxel: np.ndarray | None = None, direction: int | None = None,
                     mask_prompt: bool | None = None, lesion_index: int | None = None) -> dict:
    """One clip along the k axis: slices (D, rows, cols) of the [0, 1] image, the object's masks
    (D, rows, cols), the slice indices, and the prompt on the first slice (a centre click
    (x, y) = (column, row), or the object's mask there).

    Without ``prompt_voxel``, a random lesion is the object (every lesion equally often, as
    users prompt small ones as often as large ones), and the prompt slice is drawn uniformly
    among the slices it spans near a random voxel of it, so clips start as often near an end of
    the object as in its middle and learn where it stops.
    ``direction`` +1 runs up the k axis, -1 down. ``lesion_index``: the case's lesion to
    prompt (default: one drawn at random).
    """
    depth = case.label.shape[0]
    length = min(sampling.clip_length, depth)
    if prompt_voxel is None:
        if not case.has_foreground:
            raise ValueError(f"case {case.case_id} has no foreground to prompt")
        lesion = _lesion(case, rng, lesion_index)
        seed = np.array(np.unravel_index(int(lesion[rng.integers(lesion.size)]), case.label.shape))
        # The object's mask is traced within a slab around the seed only: the slab holds every
        # slice a clip starting within `length` slices of the seed can reach.
        low, high = max(0, int(seed[0]) - 2 * length), min(depth, int(seed[0]) + 2 * length + 1)
        obj = component_at(np.asarray(case.label[low:high]) > 0, (int(seed[0]) - low, int(seed[1]), int(seed[2])))
        spanned = low + np.flatnonzero(obj.any(axis=(1, 2)))
        spanned = spanned[np.abs(spanned - int(seed[0])) <= length]
        first = int(rng.choice(spanned))
    else:
        first = int(prompt_voxel[0])
        low, high = max(0, first - length), min(depth, first + length + 1)
        obj = component_at(np.asarray(case.label[low:high]) > 0, (first - low, int(prompt_voxel[1]),
                                                                  int(prompt_voxel[2])))
    if direction is None:
        direction = 1 if rng.random() < 0.5 else -1
    # Keep the whole clip inside the volume: turn round where the chosen direction runs out.
    if direction > 0 and first + length > depth:
        direction = -1
    elif direction < 0 and first - length + 1 < 0:
        direction = 1
    slices = np.array([first + direction * t for t in range(length)])
    slices = slices[(slices >= 0) & (slices < depth)]
    masks = np.stack([obj[s - low] for s in slices]).astype(np.uint8)
    images = np.stack([np.asarray(case.image[s], np.float32) for s in slices])
    # Drawn only when asked for, so runs without it draw what they always did.
    if sampling.reverse_contrast_probability > 0 and rng.random() < sampling.reverse_contrast_probability:
        images = np.clip(reverse_lesion_contrast(images, masks), 0.0, 1.0)
    if sampling.object_copy_probability > 0 and rng.random() < sampling.object_copy_probability:
        lesions = np.stack([np.asarray(case.label[s]) > 0 for s in slices])
        pasted = paste_object_copy(images, masks, lesions, rng)
        images = images if pasted is None else pasted
    if sampling.augmentation == "robust":
        images, masks = _robust_clip(images, masks, rng)
    use_mask = (rng.random() < sampling.mask_prompt_probability) if mask_prompt is None else mask_prompt
    click_jk = region_center(masks[0])  # centre of the object on the prompt slice
    # Drawn only when asked for, so runs without corrective clicks draw what they always did.
    corrective = (not use_mask and sampling.corrective_click_probability > 0
                  and rng.random() < sampling.corrective_click_probability)
    prefer_negative = bool(corrective and rng.random() < sampling.negative_click_preference)
    # Also drawn only when asked for, after the draws above.
    correction_slice, correction_prefers_negative = None, False
    if not use_mask and sampling.tracked_correction_probability > 0 and len(slices) > 1 \
            and rng.random() < sampling.tracked_correction_probability:
        correction_slice = int(rng.integers(1, len(slices)))
        correction_prefers_negative = bool(rng.random() < sampling.negative_click_preference)
    return {"images": images, "masks": masks, "slices": slices, "direction": int(direction),
            "mask_prompt": bool(use_mask), "click_xy": np.array([click_jk[1], click_jk[0]], np.float64),
            "corrective_click": bool(corrective), "prefer_negative": prefer_negative,
            "correction_slice": correction_slice, "correction_prefers_negative": correction_prefers_negative}


def _robust_clip(images: np.ndarray, masks: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random in-plane geometry and appearance for a whole clip (D, rows, cols): every
    slice gets the same draw, as a scanner's look is the same through a volume. The masks
    follow the geometry; the object must stay on the prompt slice, else the clip is kept as it
    was (a zoom can push a lesion at the border out)."""
    images = np.asarray(images, np.float32)
    geometry_images, geometry_masks = images, masks
    if rng.random() < 0.8:  # zoom about the slice centre, separately per in-plane axis
        zoom = rng.uniform(*ROBUST_ZOOM, 2)
        linear = np.diag([1.0, 1.0 / zoom[0], 1.0 / zoom[1]])
        centre = (np.array(images.shape, float) - 1) / 2
        offset = centre - linear @ centre
        geometry_images = ndimage.affine_transform(images, linear, offset, order=1, mode="nearest", prefilter=False)
        geometry_masks = (ndimage.affine_transform(masks.astype(np.float32), linear, offset, order=1,
                                                   mode="constant", cval=0.0, prefilter=False) > 0.5)
        if not geometry_masks[0].any():
            geometry_images, geometry_masks = images, masks
    arrays = [geometry_images, np.asarray(geometry_masks, np.uint8)]
    for axis in (1, 2):
        if rng.random() < 0.5:
            arrays = [np.flip(a, axis) for a in arrays]
    if rng.random() < 0.5:
        arrays = [np.swapaxes(a, 1, 2) for a in arrays]
    images, masks = (np.ascontiguousarray(a) for a in arrays)
    images = _robust_appearance(images, CLIP_HU20, rng)
    if rng.random() < 0.5:
        images = images + np.float32(rng.uniform(-CLIP_HU20, CLIP_HU20))
    return np.clip(images, 0.0, 1.0).astype(np.float32), masks
