"""Synthetic CT-like phantoms with labelled organs and lesions, for tests, demos and training.

Each phantom is an abdomen-like body in Hounsfield units: air outside (-1000), a
subcutaneous fat layer (about -100), soft tissue inside (about 15) around a vertebra
(bone), and four deformed-ellipsoid organs (about 35..60 HU) with texture. One to three
irregular lesions (a perturbed ellipsoid with up to two lobes) sit inside organs, 20..80 HU
darker or brighter than their organ. Partial-volume blur and noise are added last.

Labels: 0 background, 1 organ (all organs, plus a rim of at least 3 mm around every
lesion, so each lesion is enclosed by organ), 2 tumour.

Geometry: the anatomy is defined in physical space (RAS mm around ``center_ras``) and the
voxel grid samples it, so lesion sizes in mm hold for any spacing and grid rotation.
``rotation_deg_ras`` turns the grid (an oblique acquisition); ``flip_ijk`` only reverses the
index order of the chosen axes, so a flipped phantom holds exactly the voxels of the
unflipped one. Organs and lesions stay at least two voxels away from the image border.

Lesion size: ``diameter_mm`` is the volume-equivalent sphere diameter of the voxelised
lesion, (6 V / pi)^(1/3). Sizes are drawn log-normally (median 20 mm, so mostly 10..40 mm)
and clipped to ``lesion_diameter_range_mm`` (5..60 mm); a lesion that does not fit in the
body is shrunk until it does. A lesion's ``center_ijk`` is a voxel inside the lesion (the
centre of its main ellipsoid), the point to click on.

Domain randomisation (``PhantomConfig(variation=VARIATION_FULL)``, ``volsam phantom --variation
full``): every case draws its own scanner look and lesion kinds from :class:`Variation`'s ranges
(spacing, grid size, rotation, flips, noise, blur, organ intensities and texture; hypo- or
hyperdense lesions of 15..45 HU, lobulated and irregular shapes, internal texture, bright rims
around darker necrotic cores, clusters of nearby lesions, lesions at the organ's edge).
``modality="mr"`` maps the tissues to MR-like intensities (arbitrary units, no HU, a smooth
bias field), for models that percentile-normalise. The default config draws exactly what it
always did, so phantoms made before keep their voxels.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from .geometry import Volume
from .io import write_image, write_mask

AIR_HU = -1000.0
FAT_HU = -100.0
SOFT_TISSUE_HU = 15.0
BONE_HU = 450.0
HU_RANGE = (-1024, 3071)

BACKGROUND_LABEL, ORGAN_LABEL, TUMOR_LABEL = 0, 1, 2
DATASET_LABELS = {"background": BACKGROUND_LABEL, "organ": ORGAN_LABEL, "tumor": TUMOR_LABEL}
FILE_ENDING = ".nii.gz"
PHANTOMS_JSON = "phantoms.json"

# Lesions keep this much organ around them (at least one voxel on every axis).
LESION_RIM_MM = 3.0
# Lesion sizes are drawn until the lesion fits; each failed try shrinks it by this factor.
LESION_SHRINK_FACTOR = 0.85
TEXTURE_CORRELATION_MM = 2.0
# Lesions' internal texture is finer than the organs'.
LESION_TEXTURE_CORRELATION_MM = 1.2
ORGAN_TEXTURE_CORRELATION_MM = 4.0
MODALITIES = ("ct", "mr")
# MR-like look: tissue intensity (arbitrary units) per CT value, a T1-like mapping (fat bright,
# air and bone dark); interpolated between these knots.
MR_KNOTS_HU = (-1000.0, -100.0, 0.0, 100.0, 450.0)
MR_KNOTS_VALUE = (5.0, 850.0, 380.0, 620.0, 120.0)
#: Contrast bands of the by-kind breakdown: (label, lower bound HU, upper bound HU) of |contrast|.
CONTRAST_BANDS = (("< 25 HU", 0.0, 25.0), ("25-35 HU", 25.0, 35.0), (">= 35 HU", 35.0, float("inf")))


def _check_triple(name: str, values, is_valid, expected: str) -> None:
    try:
        ok = len(values) == 3 and all(is_valid(v) for v in values)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be three {expected}, got {values!r}")


def _check_range(name: str, values, low: float = 0.0, high: float = float("inf")) -> None:
    try:
        ok = len(values) == 2 and low <= values[0] <= values[1] <= high
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be (min, max) with {low:g} <= min <= max <= {high:g}, got {values!r}")


@dataclass(frozen=True)
class Variation:
    """Domain randomisation: the ranges each case of a randomised dataset draws its look from.

    The defaults span the scanner looks and lesion kinds of CT datasets the demo models were
    never trained on (issue 15): 0.7..1 mm in-plane, slices to 3 mm, grids rotated up to 20
    degrees and flipped, noise 5..25 HU, hypo- and hyperdense lesions of 15..45 HU, 40 % with
    a bright rim around a darker core.
    """

    in_plane_spacing_mm: tuple[float, float] = (0.7, 1.0)
    slice_spacing_mm: tuple[float, float] = (1.0, 3.0)
    in_plane_size: tuple[int, int] = (96, 128)
    slices: tuple[int, int] = (40, 72)
    oblique_probability: float = 0.5
    max_rotation_deg: float = 20.0
    flip_probability: float = 0.25  # per axis
    noise_std_hu: tuple[float, float] = (5.0, 25.0)
    blur_sigma_voxels: tuple[float, float] = (0.3, 1.0)
    texture_std_hu: tuple[float, float] = (2.0, 10.0)
    organ_texture_std_hu: tuple[float, float] = (0.0, 8.0)  # coarser, per-organ heterogeneity
    organ_shift_hu: tuple[float, float] = (-25.0, 25.0)  # all organs of a case
    organ_spread_hu: float = 15.0  # each organ on its own
    lesions_per_case: tuple[int, int] = (1, 4)
    lesion_diameter_median_mm: float = 20.0
    lesion_diameter_log_sigma: float = 0.5
    lesion_diameter_range_mm: tuple[float, float] = (5.0, 45.0)
    lesion_contrast_hu: tuple[float, float] = (15.0, 45.0)
    hypodense_fraction: float = 0.6
    lesion_texture_std_hu: tuple[float, float] = (0.0, 10.0)
    rim_probability: float = 0.4
    rim_thickness_mm: tuple[float, float] = (1.5, 2.5)
    rim_contrast_hu: tuple[float, float] = (15.0, 45.0)  # the rim, brighter than the organ
    max_lobes: int = 4
    bump_amplitude: tuple[float, float] = (0.15, 0.5)
    cluster_probability: float = 0.5  # a later lesion lies within cluster_gap_mm of an earlier one
    cluster_gap_mm: float = 10.0
    edge_probability: float = 0.25  # a lesion at its organ's edge, bulging out of it

    def __post_init__(self):
        for name in ("in_plane_spacing_mm", "slice_spacing_mm", "noise_std_hu", "blur_sigma_voxels",
                     "texture_std_hu", "organ_texture_std_hu", "lesion_contrast_hu", "lesion_texture_std_hu",
                     "rim_thickness_mm", "rim_contrast_hu", "bump_amplitude", "lesion_diameter_range_mm"):
            _check_range(name, getattr(self, name))
        _check_range("in_plane_size", self.in_plane_size, 16)
        _check_range("slices", self.slices, 16)
        _check_range("lesions_per_case", self.lesions_per_case, 1)
        _check_range("organ_shift_hu", self.organ_shift_hu, -float("inf"))
        for name in ("oblique_probability", "flip_probability", "hypodense_fraction", "rim_probability",
                     "cluster_probability", "edge_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        if not 0 < self.in_plane_spacing_mm[0] or not 0 < self.slice_spacing_mm[0]:
            raise ValueError("spacings must be positive")


#: ``volsam phantom --variation full``: every variation on.
VARIATION_FULL = Variation()


@dataclass(frozen=True)
class PhantomConfig:
    """How phantoms look and how the voxel grid samples them. Sizes and spacings are (i, j, k)."""

    size_ijk: tuple[int, int, int] = (96, 96, 64)
    spacing_ijk: tuple[float, float, float] = (1.5, 1.5, 2.5)
    center_ras: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # Oblique grid: extrinsic rotation of the i, j, k axes about R, then A, then S, in degrees.
    rotation_deg_ras: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # Reverse the index order of these axes (e.g. (True, False, False) mirrors i: det < 0).
    flip_ijk: tuple[bool, bool, bool] = (False, False, False)
    lesions_per_case: tuple[int, int] = (1, 3)
    lesion_diameter_median_mm: float = 20.0
    lesion_diameter_log_sigma: float = 0.45
    lesion_diameter_range_mm: tuple[float, float] = (5.0, 60.0)
    lesion_contrast_hu_range: tuple[float, float] = (20.0, 80.0)
    hypodense_fraction: float = 0.7
    texture_std_hu: float = 6.0
    noise_std_hu: float = 10.0
    blur_sigma_voxels: float = 0.6
    # Domain randomisation: each case draws its look from these ranges, which then replace the
    # grid, intensity and lesion settings above (None: every case looks as configured).
    variation: Variation | None = None
    modality: str = "ct"  # "mr": MR-like intensities in arbitrary units

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {self.modality!r}")
        if self.variation is not None and not isinstance(self.variation, Variation):
            raise ValueError(f"variation must be a Variation or None, got {self.variation!r}")
        _check_triple("size_ijk", self.size_ijk, lambda v: float(v).is_integer() and v >= 16,
                      "whole numbers >= 16")
        _check_triple("spacing_ijk", self.spacing_ijk, lambda v: math.isfinite(v) and v > 0,
                      "positive mm values")
        _check_triple("center_ras", self.center_ras, math.isfinite, "finite mm values")
        _check_triple("rotation_deg_ras", self.rotation_deg_ras, math.isfinite, "finite degrees")
        if len(self.flip_ijk) != 3 or not all(isinstance(v, (bool, np.bool_)) for v in self.flip_ijk):
            raise ValueError(f"flip_ijk must be three booleans, got {self.flip_ijk!r}")
        low, high = self.lesions_per_case
        if not 1 <= low <= high:
            raise ValueError(f"lesions_per_case must be (min, max) with 1 <= min <= max, "
                             f"got {self.lesions_per_case!r}")
        low, high = self.lesion_diameter_range_mm
        if not 0 < low < high:
            raise ValueError(f"lesion_diameter_range_mm must be (min, max) with 0 < min < max, "
                             f"got {self.lesion_diameter_range_mm!r}")
        if not low <= self.lesion_diameter_median_mm <= high:
            raise ValueError(f"lesion_diameter_median_mm must lie in lesion_diameter_range_mm "
                             f"{self.lesion_diameter_range_mm!r}, got {self.lesion_diameter_median_mm!r}")
        low, high = self.lesion_contrast_hu_range
        if not 0 <= low <= high:
            raise ValueError(f"lesion_contrast_hu_range must be (min, max) with 0 <= min <= max, "
                             f"got {self.lesion_contrast_hu_range!r}")
        if not 0 <= self.hypodense_fraction <= 1:
            raise ValueError(f"hypodense_fraction must lie in [0, 1], got {self.hypodense_fraction!r}")
        for name in ("lesion_diameter_log_sigma", "texture_std_hu", "noise_std_hu", "blur_sigma_voxels"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class LesionInfo:
    """One lesion of a phantom; ``center_ijk`` is a voxel of the lesion, ``center_ras`` its centre."""

    center_ras: tuple[float, float, float]
    center_ijk: tuple[int, int, int]
    diameter_mm: float  # volume-equivalent sphere diameter of the voxelised lesion
    volume_mm3: float
    organ: str
    organ_hu: float
    contrast_hu: float  # lesion (its core, for a rimmed one) minus organ intensity: negative is hypodense
    rim_mm: float = 0.0  # thickness of a bright rim around the lesion's core (0: no rim)
    rim_contrast_hu: float = 0.0  # the rim minus the organ
    texture_std_hu: float = 0.0  # internal texture
    at_organ_edge: bool = False  # bulges out of its organ (no organ rim around it)


def lesion_kinds(lesion: dict | LesionInfo) -> dict[str, str]:
    """A lesion's kind for by-kind breakdowns: rim, density and contrast band."""
    values = asdict(lesion) if isinstance(lesion, LesionInfo) else lesion
    contrast = abs(float(values["contrast_hu"]))
    return {"rim": "rim" if float(values.get("rim_mm", 0.0)) > 0 else "no rim",
            "density": "hypo" if float(values["contrast_hu"]) < 0 else "hyper",
            "contrast": next(name for name, low, high in CONTRAST_BANDS if low <= contrast < high)}


@dataclass(frozen=True)
class OrganInfo:
    name: str
    hu: float


@dataclass(frozen=True)
class PhantomInfo:
    lesions: tuple[LesionInfo, ...]
    organs: tuple[OrganInfo, ...]
    spacing_ijk: tuple[float, float, float]
    size_ijk: tuple[int, int, int]
    ijk_to_ras: tuple[tuple[float, ...], ...] = field(repr=False)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _OrganTemplate:
    """An organ as fractions of the body: centre and semi-axes relative to the inner body's
    R and A semi-axes and the organs' half height along S."""

    name: str
    center: tuple[float, float, float]
    semi_axes: tuple[float, float, float]
    hu: float


_ORGANS = (
    _OrganTemplate("liver", (0.35, 0.10, 0.15), (0.45, 0.45, 0.55), 60.0),
    _OrganTemplate("spleen", (-0.50, -0.20, 0.25), (0.20, 0.28, 0.35), 50.0),
    _OrganTemplate("kidney_right", (0.38, -0.45, -0.25), (0.14, 0.18, 0.32), 35.0),
    _OrganTemplate("kidney_left", (-0.38, -0.45, -0.30), (0.14, 0.18, 0.32), 35.0),
)


def make_phantom(seed, config: PhantomConfig = PhantomConfig()) -> tuple[Volume, Volume, PhantomInfo]:
    """Build one phantom: (image as int16, in HU or for MR in arbitrary units; labels as uint8; info).

    ``seed`` is anything ``numpy.random.default_rng`` accepts (an int, or a sequence of ints
    such as (dataset_seed, case_index)); the same seed and config give the same phantom.
    """
    rng = np.random.default_rng(seed)
    look = None
    if config.variation is not None:
        config, look = _draw_case_look(config, rng)
    grid = _Grid(config)
    body = _make_body(grid, rng)
    organ_id, organ_hus = _make_organs(grid, body, rng)
    if look is not None:
        organ_hus = [h + look.organ_shift_hu + rng.uniform(-1, 1) * config.variation.organ_spread_hu
                     for h in organ_hus]
    lesion_id, lesions = _place_lesions(grid, body, organ_id, organ_hus, config, rng)

    hu = np.full(grid.shape_kji, AIR_HU, dtype=np.float32)
    hu[body.outer] = FAT_HU + rng.uniform(-10, 10)
    hu[body.inner] = SOFT_TISSUE_HU + rng.uniform(-5, 5)
    hu[body.bone] = BONE_HU + rng.uniform(-50, 50)
    for number, organ_hu in enumerate(organ_hus, start=1):
        hu[organ_id == number] = organ_hu
    if look is not None and look.organ_texture_std_hu > 0:
        _add_texture(hu, organ_id > 0, look.organ_texture_std_hu, ORGAN_TEXTURE_CORRELATION_MM, grid, rng)
    for number, lesion in enumerate(lesions, start=1):
        hu[lesion_id == number] = lesion.organ_hu + lesion.contrast_hu
    if look is not None:
        _paint_lesion_rims_and_texture(hu, lesion_id, lesions, grid, rng)
    if config.texture_std_hu > 0:
        texture = ndimage.gaussian_filter(rng.standard_normal(grid.shape_kji, dtype=np.float32),
                                          TEXTURE_CORRELATION_MM / grid.spacing_kji)
        hu[body.outer] += texture[body.outer] * (config.texture_std_hu / texture.std())
    if config.blur_sigma_voxels > 0:  # partial-volume effect
        hu = ndimage.gaussian_filter(hu, config.blur_sigma_voxels)
    if config.modality == "mr":
        image = _mr_like(hu, grid, config.noise_std_hu, rng)
    else:
        if config.noise_std_hu > 0:
            hu += rng.normal(0.0, config.noise_std_hu, grid.shape_kji).astype(np.float32)
        image = np.clip(np.rint(hu), *HU_RANGE).astype(np.int16)

    labels = np.zeros(grid.shape_kji, dtype=np.uint8)
    labels[organ_id > 0] = ORGAN_LABEL
    labels[lesion_id > 0] = TUMOR_LABEL

    ijk_to_ras = grid.ijk_to_ras
    for axis_ijk, flip in enumerate(config.flip_ijk):
        if flip:
            image, labels, ijk_to_ras, lesions = _flip_axis(axis_ijk, image, labels, ijk_to_ras, lesions)
    info = PhantomInfo(
        lesions=tuple(lesions),
        organs=tuple(OrganInfo(t.name, float(h)) for t, h in zip(_ORGANS, organ_hus)),
        spacing_ijk=tuple(float(s) for s in config.spacing_ijk),
        size_ijk=tuple(int(n) for n in config.size_ijk),
        ijk_to_ras=tuple(tuple(float(v) for v in row) for row in ijk_to_ras),
    )
    return Volume(np.ascontiguousarray(image), ijk_to_ras), Volume(np.ascontiguousarray(labels), ijk_to_ras), info


# --- domain randomisation ------------------------------------------------------------------------
@dataclass(frozen=True)
class _CaseLook:
    """What a randomised case draws beyond its PhantomConfig."""

    organ_shift_hu: float
    organ_texture_std_hu: float


def _draw_case_look(config: PhantomConfig, rng: np.random.Generator) -> tuple[PhantomConfig, _CaseLook]:
    """One case's grid and intensity settings drawn from ``config.variation``."""
    from dataclasses import replace

    v = config.variation
    in_plane = float(rng.uniform(*v.in_plane_spacing_mm))
    # Anisotropic in-plane spacing happens (resampled series): up to 5 % apart.
    spacing = (in_plane, in_plane * float(rng.uniform(0.95, 1.05)), float(rng.uniform(*v.slice_spacing_mm)))
    size = (int(rng.integers(v.in_plane_size[0], v.in_plane_size[1] + 1)),
            int(rng.integers(v.in_plane_size[0], v.in_plane_size[1] + 1)),
            int(rng.integers(v.slices[0], v.slices[1] + 1)))
    rotation = (tuple(float(a) for a in rng.uniform(-v.max_rotation_deg, v.max_rotation_deg, 3))
                if rng.random() < v.oblique_probability else (0.0, 0.0, 0.0))
    flips = tuple(bool(f) for f in rng.random(3) < v.flip_probability)
    drawn = replace(
        config, size_ijk=size, spacing_ijk=spacing, rotation_deg_ras=rotation, flip_ijk=flips,
        lesions_per_case=v.lesions_per_case, lesion_diameter_median_mm=v.lesion_diameter_median_mm,
        lesion_diameter_log_sigma=v.lesion_diameter_log_sigma, lesion_diameter_range_mm=v.lesion_diameter_range_mm,
        lesion_contrast_hu_range=v.lesion_contrast_hu, hypodense_fraction=v.hypodense_fraction,
        texture_std_hu=float(rng.uniform(*v.texture_std_hu)), noise_std_hu=float(rng.uniform(*v.noise_std_hu)),
        blur_sigma_voxels=float(rng.uniform(*v.blur_sigma_voxels)))
    look = _CaseLook(organ_shift_hu=float(rng.uniform(*v.organ_shift_hu)),
                     organ_texture_std_hu=float(rng.uniform(*v.organ_texture_std_hu)))
    return drawn, look


def _add_texture(hu: np.ndarray, where: np.ndarray, std_hu: float, correlation_mm: float, grid: _Grid,
                 rng: np.random.Generator) -> None:
    """Add smooth noise of standard deviation ``std_hu`` inside ``where`` (in its bounding box)."""
    box = ndimage.find_objects(where.astype(np.uint8))
    if not box or box[0] is None:
        return
    box = box[0]
    field = ndimage.gaussian_filter(rng.standard_normal(hu[box].shape, dtype=np.float32),
                                    correlation_mm / grid.spacing_kji)
    inside = where[box]
    hu[box][inside] += field[inside] * np.float32(std_hu / max(float(field.std()), 1e-6))


def _paint_lesion_rims_and_texture(hu: np.ndarray, lesion_id: np.ndarray, lesions: list, grid: _Grid,
                                   rng: np.random.Generator) -> None:
    """A rimmed lesion's outer ``rim_mm`` takes the rim's intensity (the core keeps the lesion's);
    then each lesion gets its internal texture."""
    for number, (lesion, box) in enumerate(zip(lesions, ndimage.find_objects(lesion_id)), start=1):
        if box is None:
            continue
        mask = lesion_id[box] == number
        if lesion.rim_mm > 0:
            depth = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=grid.spacing_kji)[1:-1, 1:-1, 1:-1]
            rim = mask & (depth <= lesion.rim_mm)
            hu[box][rim] = lesion.organ_hu + lesion.rim_contrast_hu
        if lesion.texture_std_hu > 0:
            whole = np.zeros(hu.shape, bool)
            whole[box] = mask
            _add_texture(hu, whole, lesion.texture_std_hu, LESION_TEXTURE_CORRELATION_MM, grid, rng)


def _mr_like(hu: np.ndarray, grid: _Grid, noise_std_hu: float, rng: np.random.Generator) -> np.ndarray:
    """MR-like image from the noise-free CT-like one: a T1-like tissue mapping, a smooth bias
    field, Rician noise and an arbitrary gain (so only percentile normalisation makes sense)."""
    values = np.interp(hu, MR_KNOTS_HU, MR_KNOTS_VALUE).astype(np.float32)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    extent = float(np.abs(np.stack([grid.x.max(), grid.y.max(), grid.z.max()])).max())
    bias = np.exp(rng.uniform(0.1, 0.3) * (direction[0] * grid.x + direction[1] * grid.y + direction[2] * grid.z)
                  / extent)
    values *= bias
    # CT noise in HU becomes noise in MR units through the soft-tissue slope of the mapping.
    sigma = noise_std_hu * (MR_KNOTS_VALUE[3] - MR_KNOTS_VALUE[2]) / (MR_KNOTS_HU[3] - MR_KNOTS_HU[2])
    real = values + rng.normal(0.0, sigma, values.shape).astype(np.float32)
    imaginary = rng.normal(0.0, sigma, values.shape).astype(np.float32)
    image = np.sqrt(real ** 2 + imaginary ** 2) * rng.uniform(0.6, 2.5)
    return np.clip(np.rint(image), 0, np.iinfo(np.int16).max).astype(np.int16)


def case_id(index: int) -> str:
    return f"phantom_{index:03d}"


def write_phantom_dataset(out_dir, cases: int, seed: int = 0,
                          config: PhantomConfig = PhantomConfig()) -> dict:
    """Write ``cases`` phantoms in nnU-Net v2 raw layout and return the phantoms.json content.

    Layout: imagesTr/phantom_000_0000.nii.gz, labelsTr/phantom_000.nii.gz, dataset.json and
    phantoms.json ({"seed", "config", "cases": {case id: PhantomInfo as dict}}). Case n uses
    seed (seed, n), so a dataset's first cases do not depend on how many are written.

    ``out_dir`` must be new, empty, or hold an earlier phantom dataset (it has phantoms.json),
    which is replaced whole: its cases that the new dataset does not write are removed, other
    files (e.g. a splits file) are kept. Everything is written into a staging folder and moved
    in at the end, so a failure leaves ``out_dir`` as it was (a folder it created is removed);
    staging folders left by a killed run are removed first.
    """
    if int(cases) != cases or cases < 1:
        raise ValueError(f"cases must be a whole number >= 1, got {cases!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} is a file; expected a folder for the dataset (new, empty, or an earlier "
                         "phantom dataset to replace)")
    created = not out_dir.exists()
    if not created:
        _remove_stale_staging(out_dir)
        _check_replaceable(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _write_dataset(out_dir, int(cases), seed, config)
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _write_dataset(out_dir: Path, cases: int, seed: int, config: PhantomConfig) -> dict:
    previous = _previous_case_files(out_dir)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f"{STAGING_PREFIX}{os.getpid()}-") as staging:
        staging = Path(staging)
        for sub in ("imagesTr", "labelsTr"):
            (staging / sub).mkdir()
        infos = {}
        for index in range(cases):
            image, labels, info = make_phantom((seed, index), config)
            name = case_id(index)
            write_image(image, staging / "imagesTr" / f"{name}_0000{FILE_ENDING}")
            write_mask(labels.array, labels, staging / "labelsTr" / f"{name}{FILE_ENDING}")
            infos[name] = info.to_dict()
        dataset = {
            "name": "VolumetricSAM phantoms",
            "description": "Synthetic CT-like phantoms with organ and tumour labels (volsam.phantoms)",
            "channel_names": {"0": "MR" if config.modality == "mr" else "CT"},
            "labels": DATASET_LABELS,
            "numTraining": cases,
            "file_ending": FILE_ENDING,
        }
        phantoms = {"seed": seed, "config": asdict(config), "cases": infos}
        (staging / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
        (staging / PHANTOMS_JSON).write_text(json.dumps(phantoms, indent=2) + "\n")
        written = set()
        for sub in ("imagesTr", "labelsTr"):
            (out_dir / sub).mkdir(exist_ok=True)
            for path in sorted((staging / sub).iterdir()):
                os.replace(path, out_dir / sub / path.name)
                written.add(out_dir / sub / path.name)
        for path in previous - written:  # the earlier dataset's cases beyond the new one's
            path.unlink(missing_ok=True)
        for name in ("dataset.json", PHANTOMS_JSON):  # last: they mark the dataset complete
            os.replace(staging / name, out_dir / name)
    return phantoms


STAGING_PREFIX = ".staging-"


def _remove_stale_staging(out_dir: Path) -> None:
    """Remove staging folders whose run is gone (named ``.staging-<pid>-...``; older ones have
    no pid and are always stale)."""
    for folder in out_dir.glob(STAGING_PREFIX + "*"):
        pid_text = folder.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if folder.is_dir() and not (pid_text.isdigit() and _process_alive(int(pid_text))):
            shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a folder with our pid is from an earlier process that had it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_replaceable(out_dir: Path) -> None:
    entries = [p for p in out_dir.iterdir() if not p.name.startswith(STAGING_PREFIX)]
    if entries and not (out_dir / PHANTOMS_JSON).is_file():
        shown = ", ".join(sorted(p.name for p in entries)[:3])
        raise ValueError(f"{out_dir} is not empty ({shown}{' ...' if len(entries) > 3 else ''}) and holds no phantom "
                         f"dataset ({PHANTOMS_JSON}); expected a new or empty folder, or an earlier phantom dataset "
                         "to replace")


def _previous_case_files(out_dir: Path) -> set:
    """The case files of the phantom dataset already in ``out_dir`` (from its phantoms.json)."""
    try:
        previous = json.loads((out_dir / PHANTOMS_JSON).read_text())["cases"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    return {path for name in previous if isinstance(name, str) and "/" not in name and "\\" not in name
            for path in (out_dir / "imagesTr" / f"{name}_0000{FILE_ENDING}", out_dir / "labelsTr" / f"{name}{FILE_ENDING}")}


# --- grid ----------------------------------------------------------------------------------
class _Grid:
    """The unflipped voxel grid and the physical position of every voxel relative to the
    phantom centre ("patient" coordinates, RAS axes, mm)."""

    def __init__(self, config: PhantomConfig):
        self.size_ijk = np.array(config.size_ijk, dtype=int)
        self.shape_kji = tuple(int(n) for n in self.size_ijk[::-1])
        self.spacing_ijk = np.array(config.spacing_ijk, dtype=float)
        self.spacing_kji = self.spacing_ijk[::-1]
        self.direction = Rotation.from_euler("xyz", config.rotation_deg_ras, degrees=True).as_matrix()
        self.center_index_ijk = (self.size_ijk - 1) / 2.0
        self.ijk_to_ras = np.eye(4)
        self.ijk_to_ras[:3, :3] = self.direction * self.spacing_ijk[None, :]
        self.ijk_to_ras[:3, 3] = np.asarray(config.center_ras) - self.ijk_to_ras[:3, :3] @ self.center_index_ijk

        # Offsets in mm along i, j, k, shaped to broadcast over (k, j, i) arrays.
        offsets = [(np.arange(n) - c) * s for n, c, s in zip(self.size_ijk, self.center_index_ijk, self.spacing_ijk)]
        broadcast = [offsets[0][None, None, :], offsets[1][None, :, None], offsets[2][:, None, None]]
        self.x, self.y, self.z = (
            (self.direction[row, 0] * broadcast[0] + self.direction[row, 1] * broadcast[1]
             + self.direction[row, 2] * broadcast[2]).astype(np.float32)
            for row in range(3))

        border = [np.minimum(np.arange(n), n - 1 - np.arange(n)) * s for n, s in zip(self.size_ijk, self.spacing_ijk)]
        self.border_distance_mm = np.minimum(np.minimum(border[0][None, None, :], border[1][None, :, None]),
                                             border[2][:, None, None])
        self.margin_mm = 2.0 * float(self.spacing_ijk.max())

    def half_chord_mm(self, direction_ras) -> float:
        """Half length of the grid's line through its centre along a RAS direction."""
        half_extent = self.center_index_ijk * self.spacing_ijk
        along_axes = np.abs(self.direction.T @ np.asarray(direction_ras, float))
        with np.errstate(divide="ignore"):
            return float(np.min(half_extent / along_axes))

    def patient_offsets(self, box_offsets_ijk: list[np.ndarray]) -> np.ndarray:
        """(3, ...) patient-frame mm offsets for index offsets along i, j, k (broadcast arrays)."""
        steps = [offset * s for offset, s in zip(box_offsets_ijk, self.spacing_ijk)]
        return np.stack(np.broadcast_arrays(*[
            self.direction[row, 0] * steps[0] + self.direction[row, 1] * steps[1] + self.direction[row, 2] * steps[2]
            for row in range(3)]))


# --- body and organs -------------------------------------------------------------------------
@dataclass
class _Body:
    outer: np.ndarray  # skin and everything inside
    inner: np.ndarray  # inside the subcutaneous fat layer, bone included
    bone: np.ndarray
    soft: np.ndarray  # inner without bone: where organs and lesions may lie
    semi_axes_inner: tuple[float, float]  # R, A in mm
    organ_half_height: float  # mm along S


def _make_body(grid: _Grid, rng: np.random.Generator) -> _Body:
    in_plane = min(grid.half_chord_mm((1, 0, 0)), grid.half_chord_mm((0, 1, 0)))
    scale = rng.uniform(0.9, 1.0)
    semi_r, semi_a = 0.88 * in_plane * scale, 0.72 * in_plane * scale
    fat_mm = min(rng.uniform(6.0, 14.0), 0.15 * semi_a)
    # The outline swells and narrows slowly along S, like a real abdomen.
    swell = 1.0 + 0.04 * np.sin(2 * np.pi * grid.z / rng.uniform(120, 250) + rng.uniform(0, 2 * np.pi))
    outer = (grid.x / (semi_r * swell)) ** 2 + (grid.y / (semi_a * swell)) ** 2 <= 1.0
    inner_r, inner_a = semi_r - fat_mm, semi_a - fat_mm
    inner = (grid.x / (inner_r * swell)) ** 2 + (grid.y / (inner_a * swell)) ** 2 <= 1.0
    spine_y, spine_radius = -0.72 * inner_a, 0.14 * inner_a
    bone = inner & (grid.x ** 2 + (grid.y - spine_y) ** 2 <= spine_radius ** 2)
    return _Body(outer, inner, bone, inner & ~bone, (inner_r, inner_a),
                 0.9 * grid.half_chord_mm((0, 0, 1)))


def _make_organs(grid: _Grid, body: _Body, rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    """Organ number per voxel (0 = none, n = _ORGANS[n - 1]) and each organ's HU."""
    scale = np.array([*body.semi_axes_inner, body.organ_half_height])
    allowed = body.soft & (grid.border_distance_mm >= grid.margin_mm)
    organ_id = np.zeros(grid.shape_kji, dtype=np.uint8)
    organ_hus = []
    for number, template in enumerate(_ORGANS, start=1):
        center = (np.array(template.center) + rng.normal(0, 0.04, 3)) * scale
        semi_axes = np.array(template.semi_axes) * scale * np.exp(rng.uniform(-0.12, 0.12, 3))
        rotation = Rotation.from_euler("xyz", rng.uniform(-15, 15, 3), degrees=True).as_matrix()
        offset = (grid.x - center[0], grid.y - center[1], grid.z - center[2])
        level = sum(((rotation[0, a] * offset[0] + rotation[1, a] * offset[1] + rotation[2, a] * offset[2])
                     / semi_axes[a]) ** 2 for a in range(3))
        for _ in range(3):  # smooth, organ-scale bumps deform the ellipsoid
            wave = rng.normal(size=3)
            wave *= 2 * np.pi / (np.linalg.norm(wave) * rng.uniform(40, 90))
            level += rng.uniform(0.05, 0.12) * np.sin(
                wave[0] * grid.x + wave[1] * grid.y + wave[2] * grid.z + rng.uniform(0, 2 * np.pi))
        organ_id[(level <= 1.0) & allowed] = number
        organ_hus.append(float(template.hu + rng.uniform(-8, 8)))
    return organ_id, organ_hus


# --- lesions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _LesionShape:
    """A star-shaped solid around the origin, scaled by a radius: a rotated, stretched
    ellipsoid whose radius is perturbed by smooth bumps, plus up to two spherical lobes."""

    rotation: np.ndarray  # columns: lesion axes in patient coordinates
    stretch: np.ndarray  # axis ratios, product 1
    bump_directions: np.ndarray  # (m, 3) unit vectors
    bump_weights: np.ndarray  # (m,), sum of magnitudes <= 1
    bump_amplitude: float
    lobe_centers: np.ndarray  # (n, 3) in units of the radius, lesion frame
    lobe_radii: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, max_lobes: int = 2,
               bump_amplitude: tuple[float, float] = (0.15, 0.35)) -> _LesionShape:
        stretch = np.exp(rng.uniform(-0.3, 0.3, 3))
        bump_directions = rng.normal(size=(rng.integers(3, 7), 3))
        bump_directions /= np.linalg.norm(bump_directions, axis=1, keepdims=True)
        bump_weights = rng.uniform(-1, 1, len(bump_directions))
        lobe_count = rng.integers(0, max_lobes + 1)
        lobe_directions = rng.normal(size=(lobe_count, 3))
        lobe_directions /= np.linalg.norm(lobe_directions, axis=1, keepdims=True)
        return cls(
            rotation=Rotation.from_quat(rng.normal(size=4)).as_matrix(),
            stretch=stretch / np.prod(stretch) ** (1 / 3),
            bump_directions=bump_directions,
            bump_weights=bump_weights / np.abs(bump_weights).sum(),
            bump_amplitude=rng.uniform(*bump_amplitude),
            lobe_centers=lobe_directions * rng.uniform(0.6, 0.9, (lobe_count, 1)),
            lobe_radii=rng.uniform(0.35, 0.6, lobe_count),
        )

    def bounding_radius(self, radius: float) -> float:
        reach = max([1 + self.bump_amplitude, *(np.linalg.norm(self.lobe_centers, axis=1) + self.lobe_radii)])
        return radius * reach * float(self.stretch.max())

    def contains(self, offsets: np.ndarray, radius: float) -> np.ndarray:
        """Whether patient-frame offsets (3, ...) in mm from the centre lie in the lesion."""
        per_axis = (3,) + (1,) * (offsets.ndim - 1)  # broadcasts a 3-vector over the offsets
        local = np.tensordot(self.rotation.T, offsets, axes=1) / (radius * self.stretch.reshape(per_axis))
        distance = np.linalg.norm(local, axis=0)
        unit = local / np.maximum(distance, 1e-12)
        # Bumps of about 30 degrees angular width; exp(4 (cos - 1)) is 1 on the bump's axis.
        bumps = sum(w * np.exp(4.0 * (np.tensordot(d, unit, axes=1) - 1.0))
                    for d, w in zip(self.bump_directions, self.bump_weights))
        inside = distance <= 1.0 + self.bump_amplitude * bumps
        for center, lobe_radius in zip(self.lobe_centers, self.lobe_radii):
            inside |= np.linalg.norm(local - center.reshape(per_axis), axis=0) <= lobe_radius
        return inside


@dataclass(frozen=True)
class _VoxelisedLesion:
    mask: np.ndarray  # (k, j, i) box centred on the lesion's centre voxel
    half_box_kji: np.ndarray
    reach_mm: float  # largest distance from the centre voxel to the far side of a lesion voxel
    diameter_mm: float
    volume_mm3: float


def _voxelise(shape: _LesionShape, radius: float, grid: _Grid) -> _VoxelisedLesion:
    half_box_ijk = np.ceil(shape.bounding_radius(radius) / grid.spacing_ijk).astype(int) + 1
    box_offsets = [np.arange(-h, h + 1) for h in half_box_ijk]
    broadcast = [box_offsets[0][None, None, :], box_offsets[1][None, :, None], box_offsets[2][:, None, None]]
    offsets = grid.patient_offsets(broadcast)
    mask = shape.contains(offsets, radius)
    mask[tuple(half_box_ijk[::-1])] = True  # the centre voxel always belongs to the lesion
    volume = float(mask.sum() * np.prod(grid.spacing_ijk))
    reach = float(np.linalg.norm(offsets[:, mask], axis=0).max() + np.linalg.norm(grid.spacing_ijk) / 2)
    return _VoxelisedLesion(mask, half_box_ijk[::-1], reach, (6 * volume / np.pi) ** (1 / 3), volume)


def _voxelise_with_diameter(shape: _LesionShape, diameter_mm: float, grid: _Grid,
                            allowed_mm: tuple[float, float]) -> _VoxelisedLesion:
    """Scale the shape until its voxelised volume-equivalent diameter is close to the target
    and inside the allowed range."""
    radius = diameter_mm / 2
    best = None
    for _ in range(6):
        lesion = _voxelise(shape, radius, grid)
        if best is None or abs(lesion.diameter_mm - diameter_mm) < abs(best.diameter_mm - diameter_mm):
            best, best_radius = lesion, radius
        if abs(lesion.diameter_mm / diameter_mm - 1) < 0.02:
            break
        radius *= diameter_mm / lesion.diameter_mm
    # Voxel steps can leave a tiny lesion just outside the range: nudge it back in.
    radius = best_radius
    while best.diameter_mm < allowed_mm[0]:
        radius *= 1.03
        best = _voxelise(shape, radius, grid)
    while best.diameter_mm > allowed_mm[1]:
        radius *= 0.97
        best = _voxelise(shape, radius, grid)
    return best


def _place_lesions(grid: _Grid, body: _Body, organ_id: np.ndarray, organ_hus: list[float],
                   config: PhantomConfig, rng: np.random.Generator):
    """Place lesions inside organs; returns (lesion number per voxel, [LesionInfo])."""
    rim_mm = max(LESION_RIM_MM, 1.01 * float(grid.spacing_ijk.max()))
    soft_depth = ndimage.distance_transform_edt(body.soft, sampling=grid.spacing_kji)
    organ_depth = ndimage.distance_transform_edt(_same_as_neighbours(organ_id), sampling=grid.spacing_kji)
    low_mm, high_mm = config.lesion_diameter_range_mm
    allowed_mm = (low_mm * 1.001, high_mm * 0.999)  # keep voxel rounding from reaching the ends
    lesion_id = np.zeros(grid.shape_kji, dtype=np.uint8)
    lesions, placed = [], []  # placed: (centre in patient mm, reach in mm)
    variation = config.variation
    shape_options = {} if variation is None else {"max_lobes": variation.max_lobes,
                                                  "bump_amplitude": variation.bump_amplitude}

    for _ in range(rng.integers(config.lesions_per_case[0], config.lesions_per_case[1] + 1)):
        diameter = float(np.clip(config.lesion_diameter_median_mm
                                 * np.exp(config.lesion_diameter_log_sigma * rng.normal()), *allowed_mm))
        shape = _LesionShape.random(rng, **shape_options)
        sign = -1 if rng.random() < config.hypodense_fraction else 1
        contrast = sign * rng.uniform(*config.lesion_contrast_hu_range)
        pick = rng.random()  # which candidate voxel, as a fraction of however many there turn out to be
        kind = _draw_lesion_kind(variation, rng) if variation is not None else {}
        if kind.get("rim_mm"):  # a bright rim surrounds a darker, necrotic core
            contrast = -abs(contrast)
        while True:
            lesion = _voxelise_with_diameter(shape, diameter, grid, allowed_mm)
            if kind.get("at_organ_edge"):  # centred near the organ's surface, so it bulges out
                in_organ = (organ_depth > 0) & (organ_depth <= max(0.25 * lesion.diameter_mm, 1.5 * rim_mm))
            else:
                in_organ = organ_depth >= 0.2 * lesion.diameter_mm
            candidates = ((organ_id > 0) & in_organ
                          & (soft_depth >= lesion.reach_mm + rim_mm)
                          & (grid.border_distance_mm >= lesion.reach_mm + rim_mm + grid.margin_mm))
            candidates = np.flatnonzero(candidates)
            positions = np.stack([axis.ravel()[candidates] for axis in (grid.x, grid.y, grid.z)], axis=1)
            gaps = np.full(len(candidates), np.inf)
            for center, reach in placed:
                gap = np.linalg.norm(positions - center, axis=1) - (lesion.reach_mm + reach + 2 * rim_mm)
                far = gap >= 0
                candidates, positions, gaps = candidates[far], positions[far], np.minimum(gaps[far], gap[far])
            if kind.get("clustered") and np.any(gaps <= variation.cluster_gap_mm):
                near = gaps <= variation.cluster_gap_mm  # a few mm of organ between it and the one before
                candidates, positions = candidates[near], positions[near]
            if candidates.size or diameter * LESION_SHRINK_FACTOR < low_mm:
                break
            diameter *= LESION_SHRINK_FACTOR
        if candidates.size == 0:
            if not lesions:
                raise ValueError(f"no room for a {low_mm:g} mm lesion in a {tuple(config.size_ijk)} image "
                                 f"with spacing {tuple(config.spacing_ijk)}; expected a larger field of view")
            continue
        chosen = min(int(pick * candidates.size), candidates.size - 1)
        center_kji = np.array(np.unravel_index(candidates[chosen], grid.shape_kji))
        host = int(organ_id[tuple(center_kji)])
        number = len(lesions) + 1
        _stamp_lesion(lesion, center_kji, number, host, 0.0 if kind.get("at_organ_edge") else rim_mm,
                      grid, body, organ_id, lesion_id)
        placed.append((positions[chosen], lesion.reach_mm))
        center_ijk = center_kji[::-1]
        lesions.append(LesionInfo(
            center_ras=tuple(float(v) for v in grid.ijk_to_ras[:3, :3] @ center_ijk + grid.ijk_to_ras[:3, 3]),
            center_ijk=tuple(int(v) for v in center_ijk),
            diameter_mm=round(lesion.diameter_mm, 3),
            volume_mm3=round(lesion.volume_mm3, 3),
            organ=_ORGANS[host - 1].name,
            organ_hu=organ_hus[host - 1],
            contrast_hu=float(contrast),
            **_lesion_kind_info(kind, lesion.diameter_mm),
        ))
    return lesion_id, lesions


def _draw_lesion_kind(variation: Variation, rng: np.random.Generator) -> dict:
    return {"rim_mm": float(rng.uniform(*variation.rim_thickness_mm)) if rng.random() < variation.rim_probability
            else 0.0,
            "rim_contrast_hu": float(rng.uniform(*variation.rim_contrast_hu)),
            "texture_std_hu": float(rng.uniform(*variation.lesion_texture_std_hu)),
            "clustered": bool(rng.random() < variation.cluster_probability),
            "at_organ_edge": bool(rng.random() < variation.edge_probability)}


def _lesion_kind_info(kind: dict, diameter_mm: float) -> dict:
    """The LesionInfo fields of a drawn kind. A rim needs a core: lesions under four rim widths
    across get none."""
    if not kind:
        return {}
    rim = kind["rim_mm"] if diameter_mm >= 4 * kind["rim_mm"] else 0.0
    return {"rim_mm": round(rim, 3), "rim_contrast_hu": kind["rim_contrast_hu"] if rim else 0.0,
            "texture_std_hu": kind["texture_std_hu"], "at_organ_edge": kind["at_organ_edge"]}


def _stamp_lesion(lesion: _VoxelisedLesion, center_kji, number: int, host: int, rim_mm: float,
                  grid: _Grid, body: _Body, organ_id: np.ndarray, lesion_id: np.ndarray) -> None:
    """Write the lesion into lesion_id and grow its host organ over a rim around it (none for
    ``rim_mm`` 0: a lesion at the organ's edge borders whatever lies there)."""
    rim_voxels = np.ceil(rim_mm / grid.spacing_kji).astype(int)
    half = lesion.half_box_kji + rim_voxels
    mask = np.pad(lesion.mask, [(r, r) for r in rim_voxels])
    rim = ~mask & (ndimage.distance_transform_edt(~mask, sampling=grid.spacing_kji) <= rim_mm)
    # The rim's whole voxels can reach one voxel past the placement margin: clip at the border.
    start = np.asarray(center_kji) - half
    stop = np.asarray(center_kji) + half + 1
    low, high = np.maximum(start, 0), np.minimum(stop, grid.shape_kji)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    inside = tuple(slice(int(a), int(b)) for a, b in zip(low - start, high - start))
    mask, rim = mask[inside], rim[inside]
    lesion_id[box][mask] = number
    organ_id[box][rim & body.soft[box] & (lesion_id[box] == 0)] = host
    organ_id[box][mask] = host


def _same_as_neighbours(labels: np.ndarray) -> np.ndarray:
    """Voxels whose six face neighbours all carry their own nonzero label."""
    padded = np.pad(labels, 1)
    centre = padded[1:-1, 1:-1, 1:-1]
    same = centre > 0
    for axis in range(3):
        for shift in (-1, 1):
            same &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1] == centre
    return same


def _flip_axis(axis_ijk: int, image, labels, ijk_to_ras, lesions):
    """Reverse one index axis without moving anything in physical space."""
    size = image.shape[2 - axis_ijk]
    flipped = ijk_to_ras.copy()
    flipped[:3, 3] += ijk_to_ras[:3, axis_ijk] * (size - 1)
    flipped[:3, axis_ijk] *= -1
    moved = []
    for lesion in lesions:
        center_ijk = list(lesion.center_ijk)
        center_ijk[axis_ijk] = size - 1 - center_ijk[axis_ijk]
        moved.append(LesionInfo(**{**asdict(lesion), "center_ijk": tuple(center_ijk)}))
    return np.flip(image, 2 - axis_ijk), np.flip(labels, 2 - axis_ijk), flipped, moved
