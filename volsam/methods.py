"""The one method registry: how each segmentation method loads its weights and opens a session.

Every caller (the CLI, evaluation, the demo, the Slicer modules, the browser app) chooses a
method here by name and then only calls the :class:`Method` interface; nothing else in volsam
compares a method's name. Adding a method means adding its model package and one entry in
:data:`METHODS` (and, to train it with ``volsam train``, its recipe in
:data:`volsam.training.recipes.RECIPES`).

This module imports nothing heavy (no numpy, torch or model code): ``volsam --help`` lists the
methods from it. Each entry imports its model package when it loads a model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sessions.protocol import Session

#: Where the packaged demo models are.
DEMO_MODELS = Path(__file__).resolve().parent / "demo_models"


@dataclass(frozen=True)
class WeightsChoice:
    """Which weights to load.

    ``weights``: "demo", a file of this project, or a released checkpoint of the method.
    ``sam_checkpoint`` / ``sam2_checkpoint``: Meta's SAM ViT-B / SAM 2.1 file for the frozen
    parts a checkpoint may leave out; ``variant``: the SAM 2.1 size when no file fixes it.
    ``from_cache``: when a frozen part is needed and not given, take it from the verified
    download cache, or raise :class:`~volsam.weights.download.WeightsNeeded` so that the caller
    can ask the user and download it (the Slicer modules and the app); otherwise (the CLI) the
    error says which option to give.
    """

    weights: str | None = None
    sam_checkpoint: str | None = None
    sam2_checkpoint: str | None = None
    variant: str | None = None
    from_cache: bool = False
    cache_dir: str | None = None


@dataclass(frozen=True)
class SessionSettings:
    """Inference settings of a session; each method reads the ones it has."""

    #: 3DSAM-adapter intensity preset (kits, lits, pancreas, colon or ct); None: ct.
    preset: str | None = None
    #: 3DSAM-adapter crop mode: "interactive" (crops follow the clicks) or "paper".
    mode: str = "interactive"
    #: "auto" (autocast on CUDA, float32 elsewhere), "float32", "bfloat16" or "float16".
    precision: str = "auto"
    #: Keep only the clicked object (off for the paper's random-click protocol).
    keep_connected: bool = True
    #: SAM2-3dMed: "axial", "coronal", "sagittal" (the view prompted in may change it).
    slice_direction: str = "axial"
    #: SAM2-3dMed: "ct", "mr" or "unknown"; None: guessed from the image when it is opened.
    modality: str | None = None


@dataclass(frozen=True)
class TrainingDefaults:
    """What ``volsam train`` offers for a method (its behaviour is in
    :mod:`volsam.training.recipes`)."""

    #: Every model configuration ``--config`` takes, the default first.
    config_names: tuple[str, ...]
    #: Configurations trained from scratch (no pretrained checkpoint exists for them).
    from_scratch: tuple[str, ...]
    #: Epochs when neither ``--epochs`` nor ``--steps`` is given.
    default_epochs: int

    @property
    def default_config(self) -> str:
        return self.config_names[0]


@dataclass(frozen=True)
class LoadedModel:
    """A model on its device and what it was loaded from (for messages and reuse)."""

    method: Method
    model: object
    device: object
    source: str

    @property
    def description(self) -> str:
        return f"{self.method.title} from {self.source} on {self.device}"


class Method(ABC):
    """One segmentation method: its names, its checkpoints, and its session."""

    #: Registry name, as the CLI's ``--model`` takes it.
    name: str
    #: Human name.
    title: str
    #: The Slicer module that serves it.
    module_name: str
    #: Kinds of checkpoint file it reads (see ``volsam weights inspect``).
    checkpoint_kinds: tuple[str, ...]
    #: File name of its packaged demo model in :data:`DEMO_MODELS`.
    demo_filename: str
    #: What its sessions take (see :data:`volsam.sessions.protocol.CAPABILITIES`).
    capabilities: frozenset[str]
    #: Its configurations for ``volsam train``.
    training: TrainingDefaults

    @property
    def propagates(self) -> bool:
        """Whether its sessions do volume work in ``run`` (a propagation) after the prompts."""
        return "propagate" in self.capabilities

    def demo_weights(self) -> Path:
        path = DEMO_MODELS / self.demo_filename
        if not path.is_file():
            raise ValueError(f"the {self.title} demo model is not in this installation (expected {path}); "
                             f"give --weights with a {self.title} checkpoint")
        return path

    def weights_path(self, choice: WeightsChoice) -> Path | None:
        """The file ``choice.weights`` names ("demo" resolved), checked to exist; None if none."""
        if not choice.weights:
            return None
        if choice.weights == "demo":
            return self.demo_weights()
        path = Path(choice.weights).expanduser()
        if not path.is_file():
            raise ValueError(f"weights file not found: {path}")
        return path

    @abstractmethod
    def load_model(self, choice: WeightsChoice, device) -> LoadedModel:
        """Build the model from ``choice`` on ``device`` (a torch device), in eval mode."""

    @abstractmethod
    def open_session(self, loaded: LoadedModel, settings: SessionSettings | None = None) -> Session:
        """A new session over ``loaded`` (no volume open yet)."""

    @abstractmethod
    def checkpoint_detectors(self) -> tuple:
        """Functions ``detect(loaded: LoadedCheckpoint) -> CheckpointReport | None`` that
        recognise this method's checkpoint files, asked in order by ``volsam weights inspect``."""

    def provenance(self, choice: WeightsChoice) -> dict:
        """The provenance recorded in a project checkpoint (training command, label,
        preprocessing), or {} for other files."""
        return {}

    def checkpoint_settings(self, choice: WeightsChoice, settings: SessionSettings) -> SessionSettings:
        """``settings`` completed with what the checkpoint was trained with (e.g. its intensity
        preset); a ValueError for a checkpoint the session cannot serve faithfully."""
        return settings


def _frozen_part(entry_key: str, given: str | None, choice: WeightsChoice, reason: str, option: str) -> Path:
    """The file of a frozen part: the one given, else (``from_cache``) the verified cache copy,
    else a :class:`WeightsNeeded` (``from_cache``) or a ValueError naming the CLI option."""
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise ValueError(f"{option} file not found: {path}")
        return path
    from .weights.download import CATALOG, WeightsNeeded, verified_file

    entry = CATALOG[entry_key]
    if not choice.from_cache:
        raise ValueError(f"{reason}; give {option} ({entry.filename})")
    found = verified_file(entry, Path(choice.cache_dir) if choice.cache_dir else None)
    if found is None:
        raise WeightsNeeded(entry, reason)
    return found.path


class Sam3DAdapterMethod(Method):
    name = "sam3d-adapter"
    title = "3DSAM-adapter"
    module_name = "SAMAdapt3D"
    checkpoint_kinds = ("sam3d-adapter-official", "sam3d-adapter", "sam-vit-b")
    demo_filename = "sam3d_adapter_demo.safetensors"
    capabilities = frozenset({"points"})
    # vit_b: the paper's model from SAM ViT-B; tiny: the structural test model; tiny-demo: the
    # demo model. The paper trains 500 epochs (spec section 9).
    training = TrainingDefaults(("vit_b", "tiny", "tiny-demo"), ("tiny", "tiny-demo"), 500)

    def load_model(self, choice: WeightsChoice, device) -> LoadedModel:
        import logging

        from .models.sam3d_adapter.checkpoints import SamEncoderMissing, load_model

        path = self.weights_path(choice)
        sam = Path(choice.sam_checkpoint).expanduser() if choice.sam_checkpoint else None
        if path is None and sam is None:
            raise ValueError("sam3d-adapter needs --weights (a released .pth.tar, a volsam checkpoint or 'demo')")
        if path is None:
            logging.getLogger(__name__).warning(
                "only a SAM checkpoint was given: adapters and decoder are untrained, the mask is meaningless")
            path, sam = sam, None
        try:
            model = load_model(path, device=device, sam=sam)
        except SamEncoderMissing:  # a checkpoint of the tuned tensors only
            sam = _frozen_part("sam-vit-b", None, choice,
                               f"{path.name} holds only the tuned parts of 3DSAM-adapter; SAM ViT-B supplies "
                               "the frozen image encoder", "--sam-checkpoint")
            model = load_model(path, device=device, sam=sam)
        return LoadedModel(self, model, device, path.name)

    def open_session(self, loaded: LoadedModel, settings: SessionSettings | None = None) -> Session:
        from .sessions.adapter_session import AdapterSession, AdapterSessionOptions

        settings = settings or SessionSettings()
        options = AdapterSessionOptions(mode=settings.mode, preset=settings.preset or "ct",
                                        precision=settings.precision, keep_connected=settings.keep_connected)
        return AdapterSession(loaded.model, loaded.device, options)

    def checkpoint_detectors(self) -> tuple:
        from .models.sam3d_adapter import checkpoints

        return (checkpoints.detect_official_checkpoint, checkpoints.detect_project_checkpoint,
                checkpoints.detect_sam_checkpoint)

    def provenance(self, choice: WeightsChoice) -> dict:
        from .models.sam3d_adapter.checkpoints import project_parts
        from .weights.loading import load_checkpoint

        path = self.weights_path(choice)
        if path is None:
            return {}
        try:
            return project_parts(load_checkpoint(path))[2]
        except ValueError:
            return {}

    def checkpoint_settings(self, choice: WeightsChoice, settings: SessionSettings) -> SessionSettings:
        from dataclasses import replace

        from .models.sam3d_adapter.presets import preset_matching

        preprocessing = self.provenance(choice).get("preprocessing") or {}
        if float(preprocessing.get("spacing_mm", 1.0)) != 1.0:
            raise ValueError(f"{choice.weights} was trained on volumes resampled to {preprocessing['spacing_mm']:g} "
                             "mm; the 3DSAM-adapter session works at 1 mm, so it cannot serve it faithfully")
        if settings.preset is not None or not preprocessing.get("intensity"):
            return settings
        preset = preset_matching(preprocessing["intensity"])
        if preset is None:
            raise ValueError(f"{choice.weights} was trained with intensity constants that match no preset "
                             f"({preprocessing['intensity']}); pass --preset to use it anyway")
        return replace(settings, preset=preset)


class Sam2ThreeDMedMethod(Method):
    name = "sam2-3dmed"
    title = "SAM2-3dMed"
    module_name = "SAM2Volume"
    checkpoint_kinds = ("sam2-3dmed", "sam2")
    demo_filename = "sam2_3dmed_demo.safetensors"
    capabilities = frozenset({"points", "box", "mask", "propagate"})
    # The SAM 2.1 sizes (frozen encoder from Meta's checkpoint), then two networks trained from
    # scratch. The paper gives no epoch count; this project trains 100.
    training = TrainingDefaults(("tiny", "small", "base_plus", "large", "tiny-test", "tiny-demo"),
                                ("tiny-test", "tiny-demo"), 100)

    def load_model(self, choice: WeightsChoice, device) -> LoadedModel:
        from .models.sam2_3dmed.checkpoint import load_model, read_checkpoint

        path = self.weights_path(choice)
        variant = choice.variant
        sam2 = None
        if path is not None:
            header, _ = read_checkpoint(path)
            if header.contents == "trained_parts":
                variant = variant or header.config.architecture.variant
                sam2 = _frozen_part(_sam2_key(variant), choice.sam2_checkpoint, choice,
                                    f"{path.name} holds only the trained parts of SAM2-3dMed; SAM 2.1 "
                                    f"{variant} supplies the frozen image encoder", "--sam2-checkpoint")
        elif choice.sam2_checkpoint or choice.from_cache:
            sam2 = _frozen_part(_sam2_key(variant or "tiny"), choice.sam2_checkpoint, choice,
                                f"the stock model is Meta's SAM 2.1 {variant or 'tiny'}", "--sam2-checkpoint")
        else:
            raise ValueError("SAM2-3dMed needs weights: --weights (a SAM2-3dMed checkpoint, or 'demo') and/or "
                             "--sam2-checkpoint (an official SAM2.1 checkpoint)")
        model = load_model(weights=path, sam2_checkpoint=sam2, variant=choice.variant, device=device)
        source = path.name if path is not None else f"SAM 2.1 {model.config.architecture.variant}"
        return LoadedModel(self, model, device, source)

    def open_session(self, loaded: LoadedModel, settings: SessionSettings | None = None) -> Session:
        from .models.sam2_3dmed.frames import IntensityConfig
        from .sessions.propagation_session import PropagationSession, PropagationSessionConfig

        settings = settings or SessionSettings()
        intensity = IntensityConfig(modality=settings.modality) if settings.modality else None
        return PropagationSession(loaded.model, PropagationSessionConfig(
            slice_direction=settings.slice_direction, intensity=intensity))

    def checkpoint_detectors(self) -> tuple:
        from .models.sam2_3dmed.detect import detect_checkpoint

        return (detect_checkpoint,)

    def provenance(self, choice: WeightsChoice) -> dict:
        from .models.sam2_3dmed.checkpoint import header_of
        from .weights.loading import load_checkpoint

        path = self.weights_path(choice)
        if path is None:
            return {}
        try:
            header = header_of(load_checkpoint(path))
        except ValueError:
            return {}
        return dict(header.provenance) if header is not None else {}


def _sam2_key(variant: str) -> str:
    """The download catalog's key of a SAM 2.1 size."""
    return "sam2.1-" + variant.replace("_", "-")


#: The registry, in the order the CLI lists the methods.
METHODS: dict[str, Method] = {method.name: method for method in (Sam3DAdapterMethod(), Sam2ThreeDMedMethod())}


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)


def get_method(name: str) -> Method:
    """The method registered as ``name``; a clear ValueError for any other name."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}") from None


def method_for_module(module_name: str) -> Method:
    """The method a Slicer module serves."""
    for method in METHODS.values():
        if method.module_name == module_name:
            return method
    raise ValueError(f"no method is served by module {module_name!r}")
