"""Strict loading and saving of SAM2-3dMed weights (files are read by
:func:`volsam.weights.loading.load_checkpoint`: safetensors, or torch with ``weights_only``).

Two kinds of files:

* **Official SAM2.1 checkpoints** (``sam2.1_hiera_{tiny,small,base_plus,large}.pt``): a dict
  whose key ``model`` holds the state dict. They load unchanged into the model's ``sam2`` part.
* **This project's checkpoints**: a state dict in a ``.safetensors`` file (preferred; the JSON
  header below in its metadata under ``volsam``, or in a ``.json`` file beside it) or a plain
  state dict in a ``.pt``/``.pth`` file with the JSON header beside it (same stem, ``.json``).
  The header names the format, the model configuration (:class:`~.config.SAM2ThreeDMedConfig`)
  and whether the file holds the trained parts only (the frozen image encoder then comes from
  an official SAM2.1 checkpoint) or the whole model (demo models trained from scratch)::

      {"format": "volsam-sam2-3dmed", "format_version": 1, "contents": "trained_parts",
       "model": {...}, "provenance": {"data": ..., "command": ..., "version": ...}}
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...weights.loading import CheckpointError, LoadedCheckpoint, load_checkpoint
from .config import SAM2_VARIANTS, SAM2Architecture, SAM2ThreeDMedConfig

if TYPE_CHECKING:
    import torch

    from .model import SAM2ThreeDMed

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "volsam-sam2-3dmed"
CHECKPOINT_FORMAT_VERSION = 1
CONTENTS = ("trained_parts", "whole_model")
SAFETENSORS_METADATA_KEY = "volsam"

EXPECTED_FORMATS = (
    "an official SAM2.1 checkpoint (a torch file holding a dict with key 'model', e.g. sam2.1_hiera_tiny.pt) "
    "or a SAM2-3dMed checkpoint of this project (.safetensors with its JSON header, or a .pt/.pth state dict "
    "with a .json header beside it)")

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "CheckpointHeader", "load_model", "load_sam2_checkpoint",
           "read_checkpoint", "read_sam2_state_dict", "save_checkpoint"]


@dataclass(frozen=True)
class CheckpointHeader:
    """The JSON header of a SAM2-3dMed checkpoint of this project."""

    config: SAM2ThreeDMedConfig
    contents: str = "trained_parts"
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = CHECKPOINT_FORMAT_VERSION

    def __post_init__(self):
        if self.contents not in CONTENTS:
            raise CheckpointError(f"checkpoint contents must be one of {CONTENTS}, got {self.contents!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "format_version": self.format_version, "contents": self.contents,
                "model": self.config.to_dict(), "provenance": self.provenance}

    @classmethod
    def from_dict(cls, data: Any, source: str) -> CheckpointHeader:
        if not isinstance(data, Mapping) or data.get("format") != CHECKPOINT_FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise CheckpointError(f"{source}: header format is {found!r}, expected {CHECKPOINT_FORMAT!r}")
        version = data.get("format_version")
        if version != CHECKPOINT_FORMAT_VERSION:
            raise CheckpointError(f"{source}: header format_version {version!r} is not supported; "
                                  f"expected {CHECKPOINT_FORMAT_VERSION}")
        try:
            config = SAM2ThreeDMedConfig.from_dict(data.get("model", {}))
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{source}: bad model config in the header: {error}") from None
        provenance = data.get("provenance", {})
        if not isinstance(provenance, Mapping):
            raise CheckpointError(f"{source}: header provenance must be a JSON object")
        return cls(config, data.get("contents", "trained_parts"), dict(provenance), version)


def header_of(loaded: LoadedCheckpoint) -> CheckpointHeader | None:
    """The SAM2-3dMed header of a loaded file (safetensors metadata, else the JSON beside
    it), or None when it has none."""
    text = loaded.metadata.get(SAFETENSORS_METADATA_KEY)
    if isinstance(text, str):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{loaded.path}: the {SAFETENSORS_METADATA_KEY!r} header is not JSON "
                                  f"({error})") from None
        if isinstance(data, Mapping) and data.get("format") == CHECKPOINT_FORMAT:
            return CheckpointHeader.from_dict(data, str(loaded.path))
    if isinstance(loaded.sidecar, Mapping) and loaded.sidecar.get("format") == CHECKPOINT_FORMAT:
        return CheckpointHeader.from_dict(loaded.sidecar, f"{loaded.path} (JSON beside it)")
    return None


# --- official SAM2.1 checkpoints ----------------------------------------------------------
def sam2_state_dict_of(loaded: LoadedCheckpoint) -> dict[str, torch.Tensor] | None:
    content = loaded.content
    if isinstance(content, Mapping) and isinstance(content.get("model"), Mapping):
        return dict(content["model"])
    return None


def read_sam2_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of an official SAM2.1 checkpoint."""
    loaded = load_checkpoint(path)
    state_dict = sam2_state_dict_of(loaded)
    if state_dict is None:
        what = "a SAM2-3dMed checkpoint of this project" if header_of(loaded) is not None else (
            f"a {type(loaded.content).__name__} with keys {list(loaded.content)[:4]}"
            if isinstance(loaded.content, Mapping) else type(loaded.content).__name__)
        raise CheckpointError(f"{path} is not an official SAM2.1 checkpoint (found {what}); expected a dict "
                              "with key 'model' holding the state dict, e.g. sam2.1_hiera_tiny.pt")
    return state_dict


def sam2_variant_of(state_dict: Mapping[str, Any]):
    """:class:`~.detect.SAM2Detection` of a state dict, or None if it is no SAM2."""
    from .variants import detect_sam2_state_dict

    return detect_sam2_state_dict({k: tuple(v.shape) for k, v in state_dict.items() if hasattr(v, "shape")})


def check_fits(state_dict: Mapping[str, Any], expected: Mapping[str, Any], source, hint: str = "") -> list[str]:
    """Problems (empty if none) of ``state_dict`` against the keys and shapes of ``expected``."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state_dict)
                   if tuple(expected[k].shape) != tuple(getattr(state_dict[k], "shape", ())))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} tensors of another shape (e.g. {k}: {tuple(state_dict[k].shape)} in "
                        f"the file, {tuple(expected[k].shape)} in the model)")
    return [f"{source} does not fit the model{hint}: " + "; ".join(problems)] if problems else []


def _load_strict(module, state_dict, expected, source, hint: str = "", strict: bool = True) -> None:
    problems = check_fits(state_dict, expected, source, hint)
    if problems:
        raise CheckpointError(problems[0])
    module.load_state_dict(state_dict, strict=strict)


def load_sam2_checkpoint(model: SAM2ThreeDMed, path: str | os.PathLike,
                         state_dict: Mapping[str, Any] | None = None) -> None:
    """Load an official SAM2.1 checkpoint into ``model.sam2``, strictly (``state_dict``: the
    file's already read content)."""
    if state_dict is None:
        state_dict = read_sam2_state_dict(path)
    found = sam2_variant_of(state_dict)
    if found is not None and found.generation != "2.1":
        raise CheckpointError(f"{path} is a {found.name} checkpoint (the first SAM 2 release); SAM2-3dMed "
                              "needs a SAM 2.1 checkpoint (sam2.1_hiera_*.pt)")
    wanted = model.config.architecture.variant
    hint = (f" (the file looks like {found.name}; the model is built as sam2.1-{wanted})"
            if found is not None and found.variant not in (None, wanted) else "")
    _load_strict(model.sam2, state_dict, model.sam2.state_dict(), path, hint)


# --- this project's checkpoints -----------------------------------------------------------
def read_checkpoint(path: str | os.PathLike) -> tuple[CheckpointHeader, dict[str, torch.Tensor]]:
    """Header and state dict of a SAM2-3dMed checkpoint of this project."""
    loaded = load_checkpoint(path)
    header = header_of(loaded)
    if header is None:
        if sam2_state_dict_of(loaded) is not None:
            raise CheckpointError(f"{path} is an official SAM2 checkpoint, not SAM2-3dMed weights; give it as the "
                                  "SAM2.1 checkpoint (--sam2-checkpoint)")
        raise CheckpointError(f"{path} has no SAM2-3dMed header (in the safetensors metadata under "
                              f"{SAFETENSORS_METADATA_KEY!r} or in a .json beside it); expected {EXPECTED_FORMATS}")
    content = loaded.content
    if not isinstance(content, Mapping) or not all(isinstance(k, str) and hasattr(v, "shape")
                                                   for k, v in content.items()):
        raise CheckpointError(f"{path}: expected a plain state dict (names -> tensors) with its SAM2-3dMed header, "
                              f"got {type(content).__name__}")
    return header, dict(content)


def save_checkpoint(model: SAM2ThreeDMed, path: str | os.PathLike, contents: str = "trained_parts",
                    provenance: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights (``contents``: "trained_parts" or "whole_model") with its header.

    ``.safetensors`` keeps the header in its metadata; ``.pt``/``.pth`` writes a plain state
    dict and the header as a ``.json`` file beside it.
    """
    import torch

    path = Path(path)
    header = CheckpointHeader(model.config, contents, dict(provenance or {}))
    state = model.state_dict()
    names = set(state) if contents == "whole_model" else set(model.trained_parameter_names())
    # clone: safetensors refuses tensors that share storage
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items() if k in names}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path), metadata={SAFETENSORS_METADATA_KEY: json.dumps(header.to_dict())})
    elif path.suffix in (".pt", ".pth"):
        torch.save(tensors, path)
        path.with_suffix(".json").write_text(json.dumps(header.to_dict(), indent=1), encoding="utf-8")
    else:
        raise CheckpointError(f"{path}: SAM2-3dMed checkpoints are written as .safetensors (preferred) or .pt/.pth")
    return path


def load_model(weights: str | os.PathLike | None = None, sam2_checkpoint: str | os.PathLike | None = None,
               variant: str | None = None, image_size: int | None = None,
               config: SAM2ThreeDMedConfig | None = None, device=None) -> SAM2ThreeDMed:
    """Build a SAM2-3dMed model and load its weights strictly, in eval mode.

    * ``weights`` (a project checkpoint) fixes the configuration; if it holds only the trained
      parts, ``sam2_checkpoint`` (official SAM2.1) supplies the frozen image encoder.
    * With only ``sam2_checkpoint``, the model is SAM2.1 of the detected size with untrained
      heads (the BD fusion starts as an identity, so this is the stock SAM2.1).
    * ``variant`` and ``image_size`` (or a whole ``config``) choose the architecture when no
      project checkpoint does; a ``variant`` that contradicts a file is an error.
    * Neither file: random weights (tests).
    """
    from .build import build_model

    header = state_dict = sam2_state = None
    if weights is not None:
        header, state_dict = read_checkpoint(weights)
        config = header.config
    if sam2_checkpoint is not None:
        sam2_state = read_sam2_state_dict(sam2_checkpoint)
        found = sam2_variant_of(sam2_state)
        if config is None:
            if found is None or found.variant is None:
                raise CheckpointError(f"{sam2_checkpoint} is not one of the official SAM2.1 sizes "
                                      f"({', '.join(SAM2_VARIANTS)}); expected {EXPECTED_FORMATS}")
            config = SAM2ThreeDMedConfig(SAM2Architecture(variant=found.variant, image_size=image_size or 512))
    if config is None:
        config = SAM2ThreeDMedConfig(SAM2Architecture(variant=variant or "tiny", image_size=image_size or 512))
    if variant is not None and variant != config.architecture.variant:
        source = weights if weights is not None else sam2_checkpoint
        raise CheckpointError(f"SAM2.1 size {variant!r} was asked for but {source} is "
                              f"sam2.1-{config.architecture.variant}")
    if image_size is not None and image_size != config.architecture.image_size:
        source = weights if weights is not None else "the given config"
        raise CheckpointError(f"image size {image_size} was asked for but {source} is built for "
                              f"{config.architecture.image_size}")
    if header is not None and header.contents == "trained_parts" and sam2_state is None:
        raise CheckpointError(f"{weights} holds only the trained parts of SAM2-3dMed; give the official "
                              f"sam2.1-{config.architecture.variant} checkpoint for the frozen image encoder too")
    model = build_model(config)
    if sam2_state is not None:
        load_sam2_checkpoint(model, sam2_checkpoint, sam2_state)
    if state_dict is not None:
        full = model.state_dict()
        whole = header.contents == "whole_model"
        names = full.keys() if whole else model.trained_parameter_names()
        _load_strict(model, state_dict, {k: full[k] for k in names}, weights, strict=whole)
    elif sam2_state is not None:
        logger.info("no SAM2-3dMed weights given: the SRPP and BD heads are untrained; the BD fusion "
                    "starts as an identity, so this is the stock SAM2.1 model")
    if device is not None:
        model = model.to(device)
    return model.eval()
