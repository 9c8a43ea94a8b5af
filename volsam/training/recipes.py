"""What training needs to know of each method: its configurations, its option checks, how it
preprocesses volumes, and the task that turns cached cases into losses.

:func:`recipe_for` hands out a method's recipe; the training loop (:mod:`.loop`) and
:class:`~.config.TrainingConfig` ask it and never compare method names. Training sits above the
method registry (:mod:`volsam.methods`), which knows nothing of it: a method that can be trained
has an entry in :data:`RECIPES` under its registry name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class TrainingRecipe(ABC):
    """One method's side of ``volsam train`` (its configuration names and defaults are data of
    the method: :class:`volsam.methods.TrainingDefaults`)."""

    @abstractmethod
    def validate(self, config) -> None:
        """Option checks of this method that need no data; one clear ValueError each."""

    @abstractmethod
    def preprocessing(self, config, dataset, train_cases) -> dict:
        """The preprocessing constants of a new run (as a dict with ``kind``: the method)."""

    @abstractmethod
    def preprocessing_from_dict(self, data: dict):
        """The preprocessing object of :func:`preprocessing`'s dict."""

    def inference_note(self, preprocessing: dict) -> str | None:
        """A warning when inference will not preprocess as this run does, else None."""
        return None

    @abstractmethod
    def make_task(self, config, train, validation, preprocessing, device):
        """The training task over cached training and validation cases."""


class AdapterRecipe(TrainingRecipe):

    def validate(self, config) -> None:
        if config.sam2_checkpoint is not None:
            raise ValueError("--sam2-checkpoint belongs to --model sam2-3dmed; sam3d-adapter starts from "
                             "--sam-checkpoint (SAM ViT-B)")
        if config.config_name == "vit_b" and config.sam_checkpoint is None and not config.train_encoder:
            raise ValueError("fine-tuning the vit_b 3DSAM-adapter needs --sam-checkpoint sam_vit_b_01ec64.pth "
                             "(its frozen encoder); for a model from scratch pick --config tiny-demo")
        if config.sam_checkpoint is not None and config.config_name != "vit_b":
            raise ValueError(f"--sam-checkpoint initialises the vit_b configuration only, not {config.config_name!r}")
        if config.click_protocol not in ("3dsam", "lesion", "iterative"):
            raise ValueError(f"--clicks must be 3dsam, lesion or iterative, got {config.click_protocol!r}")

    def preprocessing(self, config, dataset, train_cases) -> dict:
        from .preprocessing import (
            ADAPTER_PRESETS,
            AdapterPreprocessing,
            foreground_intensity,
        )

        if config.preset == "auto":
            intensity = foreground_intensity(train_cases, progress=config.progress)
        elif config.preset in ADAPTER_PRESETS:
            intensity = ADAPTER_PRESETS[config.preset]
        else:
            raise ValueError(f"--preset must be auto or one of {', '.join(ADAPTER_PRESETS)}, got {config.preset!r}")
        return AdapterPreprocessing(config.spacing_mm, intensity).to_dict()

    def preprocessing_from_dict(self, data: dict):
        from .preprocessing import AdapterIntensity, AdapterPreprocessing

        return AdapterPreprocessing(float(data["spacing_mm"]), AdapterIntensity(**data["intensity"]))

    def inference_note(self, preprocessing: dict) -> str | None:
        """The adapter session works at 1 mm with a named preset."""
        from ..models.sam3d_adapter.presets import preset_matching

        problems = []
        if preprocessing["spacing_mm"] != 1.0:
            problems.append(f"it resamples to {preprocessing['spacing_mm']:g} mm, inference to 1 mm")
        if preset_matching(preprocessing["intensity"]) is None:
            problems.append("its intensity constants are no named preset (pass that preset's constants with "
                            "--preset at training, or give inference the same constants)")
        if problems:
            return "volsam segment and the Slicer module will not preprocess as this run does: " + "; ".join(problems)
        return None

    def make_task(self, config, train, validation, preprocessing, device):
        from .adapter_task import AdapterTask
        from .preprocessing import PRESET_AUGMENTATION
        from .samples import AdapterSampling

        model_config = config.adapter_model_config()
        augmentation = config.augmentation or PRESET_AUGMENTATION.get(config.preset, "zoom3d")
        sampling = AdapterSampling(model_config.crop_size, augmentation, config.click_protocol,
                                   intensity_shift=20.0 / preprocessing.intensity.std,
                                   reverse_contrast_probability=config.reverse_contrast)
        return AdapterTask(config, train, validation, sampling, device)


class Sam2Recipe(TrainingRecipe):

    def validate(self, config) -> None:
        if config.sam_checkpoint is not None:
            raise ValueError("--sam-checkpoint belongs to --model sam3d-adapter; sam2-3dmed starts from "
                             "--sam2-checkpoint (SAM2.1)")
        if config.crop is not None:
            raise ValueError("--crop applies to sam3d-adapter; sam2-3dmed trains on whole slices at its "
                             "configuration's image size (--clip-length sets the slices per clip)")
        if config.export_official:
            raise ValueError("--export-official writes the released 3DSAM-adapter layout; it applies to "
                             "--model sam3d-adapter")
        if config.augmentation not in (None, "none", "robust"):
            raise ValueError(f"--augmentation {config.augmentation} applies to sam3d-adapter; sam2-3dmed takes "
                             "robust (in-plane zoom, flips, contrast, noise, blur) or none")
        scratch = config.config_name in config.defaults.from_scratch
        if not scratch and config.sam2_checkpoint is None and not config.train_encoder:
            raise ValueError(f"fine-tuning SAM2-3dMed {config.config_name} needs --sam2-checkpoint "
                             f"(the official SAM2.1 checkpoint of that size, for the frozen image encoder); for "
                             "a model from scratch pick --config tiny-demo")
        if scratch and config.sam2_checkpoint is not None:
            raise ValueError(f"--config {config.config_name} is trained from scratch; --sam2-checkpoint fits the "
                             "SAM2.1 sizes only")

    def preprocessing(self, config, dataset, train_cases) -> dict:
        from .preprocessing import Sam2Preprocessing, default_sam2_window

        return Sam2Preprocessing(config.window or default_sam2_window(dataset.is_ct)).to_dict()

    def preprocessing_from_dict(self, data: dict):
        from .preprocessing import Sam2Preprocessing

        return Sam2Preprocessing(data["window"])

    def inference_note(self, preprocessing: dict) -> str | None:
        """The SAM2 session uses the soft-tissue window for CT."""
        if preprocessing["window"] not in ("soft_tissue", "percentile"):
            return (f"this run uses the {preprocessing['window']} window; pass the same window to volsam segment "
                    "(--window) when using the model")
        return None

    def make_task(self, config, train, validation, preprocessing, device):
        from .sam2_task import Sam2Task
        from .samples import ClipSampling

        # --clicks iterative: the prompted slice, and in as many clips one tracked slice, also
        # learn from corrective (negative) clicks.
        corrective = 0.5 if config.click_protocol == "iterative" else 0.0
        return Sam2Task(config, train, validation,
                        ClipSampling(config.clip_length, corrective_click_probability=corrective,
                                     tracked_correction_probability=corrective,
                                     augmentation=config.augmentation or "none",
                                     reverse_contrast_probability=config.reverse_contrast,
                                     object_copy_probability=config.object_copies), device)


#: Registry name of a method -> its training recipe.
RECIPES: dict[str, TrainingRecipe] = {"sam3d-adapter": AdapterRecipe(), "sam2-3dmed": Sam2Recipe()}


def checked(config):
    """``config`` with every option check done: the generic ones and the method's own."""
    config.validate()
    recipe_for(config.model).validate(config)
    return config


def recipe_for(method: str) -> TrainingRecipe:
    """The training recipe of a registered method; a clear ValueError for any other."""
    from ..methods import get_method

    name = get_method(method).name
    if name not in RECIPES:
        raise ValueError(f"{name} has no training recipe: volsam train trains {', '.join(RECIPES)}")
    return RECIPES[name]
