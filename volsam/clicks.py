"""Simulated clicks for training and evaluation.

All positions are voxel indices in array order ``(k, j, i)`` of the array they were drawn from;
masks are boolean-like arrays in the same order. Spacings, where asked for, are ``(i, j, k)``
millimetres (``Volume.spacing``) so that "farthest from the boundary" is measured in mm.

Protocols:

* 3DSAM-adapter training (spec section 9): 10 voxels drawn uniformly with replacement from the
  crop's foreground, followed by 20 voxels drawn uniformly from *all* voxels of the crop (the
  official "negatives" may fall on the tumour); only the 20 random voxels when the crop has no
  foreground. Validation: 10 foreground voxels, or 10 random voxels without foreground.
* 3DSAM-adapter test: N foreground voxels drawn uniformly with replacement, from a generator
  seeded by the caller (the official script sets no seed; this project fixes one).
* Lesion-wise training (this project's demo models): one connected lesion of the crop (the one
  at its centre) is the target; 1 to 10 positives inside it (the first at its centre half of
  the time) and 0 to 20 negatives outside it, each click labelled positive or negative.
* Iterative: each next click goes to the centre of the largest error region, positive in a
  missed region, negative in a false-positive one. "Centre" is the voxel of the region farthest
  from its boundary (a Euclidean distance transform of the region, the image border counting as
  boundary), as SAM's interactive evaluation does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Lesions and error regions are connected through faces, edges and corners (26-neighbourhood).
CONNECTIVITY = ndimage.generate_binary_structure(3, 3)

ADAPTER_TRAIN_POSITIVES = 10
ADAPTER_TRAIN_RANDOM = 20
ADAPTER_VALIDATION_POINTS = 10


@dataclass(frozen=True)
class SimulatedClick:
    """One click at voxel ``kji``; ``positive`` False marks background."""

    kji: tuple[int, int, int]
    positive: bool = True


@dataclass(frozen=True)
class ClickSet:
    """Clicks as arrays: ``points_kji`` (N, 3) int64 and ``positive`` (N,) bool."""

    points_kji: np.ndarray
    positive: np.ndarray

    def __len__(self) -> int:
        return len(self.points_kji)

    @classmethod
    def of(cls, clicks: list[SimulatedClick]) -> ClickSet:
        return cls(np.array([c.kji for c in clicks], dtype=np.int64).reshape(-1, 3),
                   np.array([c.positive for c in clicks], dtype=bool))


def _draw(candidates_flat: np.ndarray, shape, count: int, rng: np.random.Generator) -> np.ndarray:
    chosen = candidates_flat[rng.integers(0, candidates_flat.size, size=count)]
    return np.stack(np.unravel_index(chosen, shape), axis=1).astype(np.int64)


def random_foreground_points(mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` foreground voxels (N, 3) drawn uniformly with replacement (3DSAM-adapter test).

    Raises ValueError for an empty mask: a case without the target has nothing to click.
    """
    foreground = np.flatnonzero(np.asarray(mask).ravel())
    if foreground.size == 0:
        raise ValueError("cannot place a foreground click: the mask is empty")
    return _draw(foreground, np.shape(mask), count, rng)


def adapter_training_clicks(label_crop: np.ndarray, rng: np.random.Generator,
                            positives: int = ADAPTER_TRAIN_POSITIVES,
                            random_points: int = ADAPTER_TRAIN_RANDOM) -> ClickSet:
    """The official training clicks: foreground voxels then voxels of the whole crop.

    The official clicks carry no label; here each is labelled by the voxel it falls on, which a
    model without a point-label embedding ignores.
    """
    label_crop = np.asarray(label_crop) > 0
    all_voxels = np.arange(label_crop.size)
    random_part = _draw(all_voxels, label_crop.shape, random_points, rng)
    foreground = np.flatnonzero(label_crop.ravel())
    points = random_part if foreground.size == 0 else np.concatenate(
        [_draw(foreground, label_crop.shape, positives, rng), random_part])
    return ClickSet(points, label_crop[tuple(points.T)])


def adapter_validation_clicks(label_crop: np.ndarray, rng: np.random.Generator,
                              count: int = ADAPTER_VALIDATION_POINTS) -> ClickSet:
    """The official validation clicks: foreground voxels, or random voxels without foreground."""
    label_crop = np.asarray(label_crop) > 0
    foreground = np.flatnonzero(label_crop.ravel())
    pool = foreground if foreground.size else np.arange(label_crop.size)
    points = _draw(pool, label_crop.shape, count, rng)
    return ClickSet(points, label_crop[tuple(points.T)])


def region_center(region: np.ndarray, spacing_ijk=None) -> tuple[int, ...]:
    """The voxel of ``region`` (2D or 3D) farthest from its boundary, the image border counting
    as boundary. ``spacing_ijk`` (3D only) measures the distance in mm. Where several voxels are
    equally deep (an elongated region has a ridge), the one nearest the ridge's mean position
    is taken (then the first in C order), so the click sits in the middle and is deterministic.
    """
    region = np.asarray(region) > 0
    if not region.any():
        raise ValueError("cannot find the centre of an empty region")
    sampling = None if spacing_ijk is None else tuple(float(s) for s in np.asarray(spacing_ijk)[::-1])
    # Pad with background so that a region touching the image border is measured to the border.
    distance = ndimage.distance_transform_edt(np.pad(region, 1), sampling=sampling)
    distance = distance[(slice(1, -1),) * region.ndim]
    deepest = np.argwhere(distance >= distance.max() * (1 - 1e-9))
    if len(deepest) > 1:
        deepest = deepest[[int(np.argmin(np.sum((deepest - deepest.mean(axis=0)) ** 2, axis=1)))]]
    return tuple(int(v) for v in deepest[0])


def connected_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the connected regions of a mask (26-neighbourhood): (labels, count)."""
    labels, count = ndimage.label(np.asarray(mask) > 0, structure=CONNECTIVITY)
    return labels, int(count)


def component_at(mask: np.ndarray, kji) -> np.ndarray:
    """The connected region of ``mask`` holding voxel ``kji`` (all False if the voxel is outside)."""
    labels, _ = connected_regions(mask)
    number = labels[tuple(int(v) for v in kji)]
    return labels == number if number else np.zeros(labels.shape, dtype=bool)


def largest_region(mask: np.ndarray) -> np.ndarray | None:
    """The largest connected region (by voxel count) of a mask, or None if it is empty."""
    labels, count = connected_regions(mask)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def next_iterative_click(prediction: np.ndarray, truth: np.ndarray,
                         spacing_ijk=None) -> SimulatedClick | None:
    """The next corrective click, or None when the prediction equals the truth.

    The largest connected error region (misses and false positives compared by voxel count, a
    miss winning a tie) receives the click at its centre: positive in a miss, negative in a
    false positive.
    """
    prediction, truth = np.asarray(prediction) > 0, np.asarray(truth) > 0
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and truth {truth.shape} differ in shape")
    miss, false_positive = largest_region(truth & ~prediction), largest_region(prediction & ~truth)
    miss_size = 0 if miss is None else int(miss.sum())
    false_positive_size = 0 if false_positive is None else int(false_positive.sum())
    if miss_size == 0 and false_positive_size == 0:
        return None
    if miss_size >= false_positive_size:
        return SimulatedClick(region_center(miss, spacing_ijk), True)
    return SimulatedClick(region_center(false_positive, spacing_ijk), False)


#: Training's corrective clicks: error regions smaller than this (voxels) are noise, not a
#: mistake a user would click on.
MIN_CORRECTIVE_REGION = 8
#: The share of training's corrective clicks that go in the model's false positive whenever its
#: prediction has one (both models' trainers draw ``prefer_negative`` with it); with the plain
#: protocol's rule (largest error wins) the demo adapter's negative clicks stayed inert.
NEGATIVE_CLICK_PREFERENCE = 0.7


def training_corrective_click(prediction: np.ndarray, truth: np.ndarray,
                              prefer_negative: bool) -> SimulatedClick | None:
    """The iterative protocol's next click for training, optionally a negative one.

    A model that mostly under-segments makes the protocol's largest error a miss almost every
    time, so its negative clicks are rare and the point-label embedding never learns them.
    With ``prefer_negative`` (the trainer draws it for a share of its samples), a prediction
    with a false-positive region of at least ``MIN_CORRECTIVE_REGION`` voxels gets its click
    there, negative; otherwise this is :func:`next_iterative_click`'s click.
    """
    prediction, truth = np.asarray(prediction) > 0, np.asarray(truth) > 0
    if prefer_negative:
        false_positive = largest_region(prediction & ~truth)
        if false_positive is not None and int(false_positive.sum()) >= MIN_CORRECTIVE_REGION:
            return SimulatedClick(region_center(false_positive), False)
    return next_iterative_click(prediction, truth)


@dataclass(frozen=True)
class Lesion:
    """A connected component of a label mask, with the click at its centre."""

    number: int  # its value in the labelled array of :func:`lesions_of`
    center_kji: tuple[int, int, int]
    voxels: int
    diameter_mm: float  # volume-equivalent sphere diameter (6 V / pi)^(1/3)


#: Lesion size groups (volume-equivalent diameter): (label, lower bound mm, upper bound mm); the
#: evaluation's by-size breakdown and size-balanced training sampling share them.
SIZE_GROUPS = (("< 10 mm", 0.0, 10.0), ("10-20 mm", 10.0, 20.0), ("20-30 mm", 20.0, 30.0),
               (">= 30 mm", 30.0, float("inf")))


def size_group(diameter_mm: float) -> str:
    return next(name for name, low, high in SIZE_GROUPS if low <= diameter_mm < high)


def equivalent_diameter_mm(voxels: int, spacing_ijk) -> float:
    """The diameter of the sphere with the volume of ``voxels`` voxels: (6 V / pi)^(1/3)."""
    return float((6.0 * voxels * float(np.prod(np.asarray(spacing_ijk, float))) / np.pi) ** (1.0 / 3.0))


def lesions_of(mask: np.ndarray, spacing_ijk) -> tuple[np.ndarray, list[Lesion]]:
    """Every connected lesion of a binary mask: (labelled array, lesions with their centres and
    equivalent diameters). Lesion ``n`` is ``labels == n``."""
    labels, _ = connected_regions(mask)
    lesions = []
    for number, box in enumerate(ndimage.find_objects(labels), start=1):
        local = labels[box] == number
        center_local = region_center(local, spacing_ijk)
        voxels = int(local.sum())
        lesions.append(Lesion(number, tuple(int(s.start + c) for s, c in zip(box, center_local)), voxels,
                              equivalent_diameter_mm(voxels, spacing_ijk)))
    return labels, lesions


def lesion_training_clicks(label_crop: np.ndarray, rng: np.random.Generator,
                           max_positives: int = ADAPTER_TRAIN_POSITIVES,
                           max_negatives: int = ADAPTER_TRAIN_RANDOM,
                           center_probability: float = 0.5, near_kji=None) -> tuple[ClickSet, np.ndarray]:
    """Lesion-wise training clicks: (clicks, target) where target is one lesion alone.

    Half of the samples have one positive click, the others 2 to ``max_positives``; half have
    no negative click, the others 1 to ``max_negatives`` (outside the target).

    The target is the lesion nearest to ``near_kji`` (the crop's centre, where inference
    centres its crop on the click), or a random lesion when no point is given. Without
    foreground in the crop, the target is empty and the clicks are 1 to ``max_negatives``
    labelled negatives.
    """
    label_crop = np.asarray(label_crop) > 0
    labels, count = connected_regions(label_crop)
    if count == 0:
        points = _draw(np.arange(label_crop.size), label_crop.shape, int(rng.integers(1, max_negatives + 1)), rng)
        return ClickSet(points, np.zeros(len(points), dtype=bool)), label_crop
    if near_kji is None:
        number = int(rng.integers(1, count + 1))
    else:
        voxels = np.argwhere(labels > 0)
        nearest = int(np.argmin(np.sum((voxels - np.asarray(near_kji)) ** 2, axis=1)))
        number = int(labels[tuple(voxels[nearest])])
    target = labels == number
    inside, outside = np.flatnonzero(target.ravel()), np.flatnonzero(~target.ravel())
    # Half of the samples get a single positive click, as a user's first click is.
    positive_count = 1 if rng.random() < 0.5 else int(rng.integers(2, max_positives + 1))
    positives = _draw(inside, target.shape, positive_count, rng)
    if rng.random() < center_probability:
        positives[0] = region_center(target)
    negative_count = 0 if rng.random() < 0.5 or not outside.size else int(rng.integers(1, max_negatives + 1))
    negatives = _draw(outside, target.shape, negative_count, rng) if negative_count else np.zeros((0, 3), np.int64)
    points = np.concatenate([positives, negatives])
    positive = np.concatenate([np.ones(len(positives), bool), np.zeros(len(negatives), bool)])
    return ClickSet(points, positive), target
