"""3DSAM-adapter weights in and out: the three ways to build a model from a file.

* :func:`from_sam` - a SAM ViT-B checkpoint (``sam_vit_b_01ec64.pth``): the official training
  initialisation (spec section 7): SAM's image-encoder tensors copied, ``rel_pos_d`` set to the
  mean of ``rel_pos_h`` and ``rel_pos_w``, every other tensor freshly initialised.
* :func:`from_official` - a 3DSAM-adapter release (``last.pth.tar``/``best.pth.tar``): the
  ``encoder_dict``, the four ``feature_dict`` prompt encoders and the ``decoder_dict`` are
  checked key by key and shape by shape, then loaded strictly.
* :func:`from_checkpoint` / :func:`save_checkpoint` - this project's format: the whole model's
  state dict (safetensors, or a torch file) with its configuration and provenance as JSON,
  inside the file or in ``<file>.json`` beside it. The deterministic shift masks are left out
  unless they differ from the computed ones.

:func:`load_model` picks the right one from the file's content. Every file is read through
:func:`volsam.weights.loading.load_checkpoint` (safetensors, or ``weights_only`` pickles).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ...weights.kinds import OFFICIAL_SAM3D_SECTIONS, PROJECT_SAM3D_FORMAT, classify, describe_kind, sam_kind
from ...weights.loading import CheckpointError, LoadedCheckpoint, load_checkpoint
from ...weights.report import CheckpointReport
from .build import build_sam3d_adapter
from .config import VIT_B, Sam3DAdapterConfig
from .freezing import apply_official_freezing, is_trainable, is_trainable_encoder_key
from .sam3d_adapter import Sam3DAdapter
from .window_attention import shift_mask

OFFICIAL_KIND = "sam3d-adapter-official"
PROJECT_KIND = "sam3d-adapter"
FORMAT_VERSION = 1

OFFICIAL_HELP = ("a 3DSAM-adapter release (.pth.tar: a dict with encoder_dict, feature_dict (a list of 4 prompt "
                 "encoder state dicts) and decoder_dict)")
PROJECT_HELP = (f"a volsam 3DSAM-adapter checkpoint (safetensors or torch file marked format "
                f"'{PROJECT_SAM3D_FORMAT}', with its JSON config inside or in <file>.json)")
SAM_HELP = "SAM ViT-B (sam_vit_b_01ec64.pth: a state dict with image_encoder.*, prompt_encoder.*, mask_decoder.* keys)"

_BUFFER_SUFFIXES = ("attn_mask", "positional_encoding_gaussian_matrix")


class SamEncoderMissing(CheckpointError):
    """A project checkpoint saved without SAM's frozen encoder tensors, and no SAM ViT-B given."""


def _loaded(source) -> LoadedCheckpoint:
    return source if isinstance(source, LoadedCheckpoint) else load_checkpoint(Path(source))


def _wrong_kind(loaded: LoadedCheckpoint, expected: str) -> CheckpointError:
    kind = classify(loaded.content, loaded.metadata, loaded.sidecar)
    what = describe_kind(kind) if kind != "unknown" else _shape_of(loaded.content)
    return CheckpointError(f"{loaded.path}: this is {what}; expected {expected}")


def _shape_of(content) -> str:
    if isinstance(content, Mapping):
        keys = list(content)[:4]
        return f"a dict with keys {', '.join(map(repr, keys))}{', ...' if len(content) > 4 else ''} of unknown layout"
    return f"a {type(content).__name__}, not a dict of tensors"


# --- layout checks ------------------------------------------------------------------------------
def layout_problems(expected: Mapping[str, torch.Tensor], given: Mapping, where: str) -> list[str]:
    """Differences between two state dicts' keys and shapes (empty when they match strictly)."""
    problems = []
    if not isinstance(given, Mapping):
        return [f"{where} is a {type(given).__name__}, expected a state dict"]
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing:
        more = ", ..." if len(missing) > 3 else ""
        problems.append(f"{where}: {len(missing)} missing keys ({', '.join(missing[:3])}{more})")
    if unexpected:
        problems.append(f"{where}: {len(unexpected)} unexpected keys "
                        f"({', '.join(map(str, unexpected[:3]))}{', ...' if len(unexpected) > 3 else ''})")
    mismatched = []
    for key, reference in expected.items():
        value = given.get(key)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            mismatched.append(f"{key} is a {type(value).__name__}, expected a tensor")
        elif tuple(value.shape) != tuple(reference.shape):
            mismatched.append(f"{key} has shape {tuple(value.shape)}, expected {tuple(reference.shape)}")
    if mismatched:
        problems.append(f"{where}: {len(mismatched)} tensors of the wrong shape or type ({'; '.join(mismatched[:2])}"
                        f"{'; ...' if len(mismatched) > 2 else ''})")
    return problems


def official_sections(model: Sam3DAdapter) -> dict:
    """The model's state in the official layout (encoder_dict, feature_dict list, decoder_dict)."""
    if model.has_point_labels:
        raise ValueError("a model with a point-label embedding has no official-layout equivalent")
    return {"encoder_dict": model.image_encoder.state_dict(),
            "feature_dict": [encoder.state_dict() for encoder in model.prompt_encoders],
            "decoder_dict": model.mask_decoder.state_dict()}


def official_problems(content: Mapping, config: Sam3DAdapterConfig = VIT_B) -> list[str]:
    """Strict-loading problems of a release's sections against ``config`` (none = loads)."""
    expected = official_sections(build_sam3d_adapter(config, device="meta"))
    problems = layout_problems(expected["encoder_dict"], content.get("encoder_dict"), "encoder_dict")
    features = content.get("feature_dict")
    if not isinstance(features, (list, tuple)) or len(features) != len(expected["feature_dict"]):
        length = f" of length {len(features)}" if isinstance(features, (list, tuple)) else ""
        problems.append(f"feature_dict must be a list of {len(expected['feature_dict'])} prompt-encoder state dicts, "
                        f"got {type(features).__name__}{length}")
    else:
        for index, (reference, given) in enumerate(zip(expected["feature_dict"], features)):
            problems += layout_problems(reference, given, f"feature_dict[{index}]")
    problems += layout_problems(expected["decoder_dict"], content.get("decoder_dict"), "decoder_dict")
    return problems


# --- instantiation ------------------------------------------------------------------------------
def _instantiate(config: Sam3DAdapterConfig, state: dict, patch_path: str, device, owned: bool) -> Sam3DAdapter:
    """Build ``config`` on the meta device and adopt ``state`` (whole-model keys) as its tensors.

    Adopting instead of copying keeps the peak memory at one model. Shift masks equal to the
    computed one become a single shared tensor; missing masks are filled with it.
    """
    device = torch.device(device or "cpu")
    model = build_sam3d_adapter(config, patch_path=patch_path, device="meta")
    encoder = config.image_encoder
    default_mask = shift_mask(encoder.token_grid, encoder.window_size, encoder.shift_size).to(device)
    tensors = {}
    for key, value in state.items():
        if key.endswith(".attn_mask") and tuple(value.shape) == tuple(default_mask.shape) \
                and torch.equal(value.to(default_mask.device), default_mask):
            tensors[key] = default_mask
            continue
        converted = value.to(device=device, dtype=torch.float32 if value.is_floating_point() else value.dtype)
        # A tensor of the file (e.g. memory-mapped) is copied once; a converted one already is a copy.
        tensors[key] = converted if (owned or converted is not value) else converted.clone()
    for key in model.state_dict():
        if key.endswith(".attn_mask") and key not in tensors:
            tensors[key] = default_mask
    model.load_state_dict(tensors, strict=True, assign=True)
    return apply_official_freezing(model).eval()


def from_official(source, config: Sam3DAdapterConfig = VIT_B, patch_path: str = "folded",
                  device=None) -> Sam3DAdapter:
    """Build from a 3DSAM-adapter release file (or its loaded content), strictly."""
    loaded = _loaded(source)
    content = loaded.content
    if not (isinstance(content, Mapping) and all(s in content for s in OFFICIAL_SAM3D_SECTIONS)):
        raise _wrong_kind(loaded, OFFICIAL_HELP)
    problems = official_problems(content, config)
    if problems:
        raise CheckpointError(f"{loaded.path}: does not load strictly as {OFFICIAL_HELP}: {'; '.join(problems[:3])}"
                              f" (an older upload of the released weights fails this way)")
    state = {f"image_encoder.{k}": v for k, v in content["encoder_dict"].items()}
    for index, section in enumerate(content["feature_dict"]):
        state.update({f"prompt_encoders.{index}.{k}": v for k, v in section.items()})
    state.update({f"mask_decoder.{k}": v for k, v in content["decoder_dict"].items()})
    return _instantiate(config, state, patch_path, device, owned=loaded.format != "torch")


def from_sam(source, config: Sam3DAdapterConfig = VIT_B, patch_path: str = "folded", device=None) -> Sam3DAdapter:
    """The official initialisation from a SAM ViT-B checkpoint (spec section 7).

    ``source`` is a file path, a loaded checkpoint or a SAM state dict (``image_encoder.*`` keys).
    SAM's 2D neck is not transferred; prompt encoders, decoder, adapters and necks keep their
    fresh PyTorch initialisation; the official freezing is applied.
    """
    if isinstance(source, Mapping):
        loaded = LoadedCheckpoint(Path("<state dict>"), "state_dict", source)
    else:
        loaded = _loaded(source)
    content = loaded.content
    kind = sam_kind(content)
    if kind is None:
        raise _wrong_kind(loaded, SAM_HELP)
    if kind != "sam-vit-b":
        raise CheckpointError(f"{loaded.path}: this is {describe_kind(kind)}; only SAM ViT-B fits 3DSAM-adapter "
                              f"(expected {SAM_HELP})")
    model = build_sam3d_adapter(config, patch_path=patch_path)
    targets = model.image_encoder.state_dict()
    encoder_state = {k[len("image_encoder."):]: v for k, v in content.items() if k.startswith("image_encoder.")}
    copied = {}
    for key, value in encoder_state.items():
        if key.startswith("neck."):
            continue  # SAM's 2D neck is not transferred
        if key not in targets:
            raise CheckpointError(f"{loaded.path}: SAM key image_encoder.{key} has no place in 3DSAM-adapter; "
                                  f"expected {SAM_HELP}")
        if tuple(value.shape) != tuple(targets[key].shape):
            raise CheckpointError(f"{loaded.path}: image_encoder.{key} has shape {tuple(value.shape)}, 3DSAM-adapter "
                                  f"{config.name} needs {tuple(targets[key].shape)}")
        copied[key] = value
    expected_copies = [k for k in targets if _copied_from_sam(k)]
    missing = [k for k in expected_copies if k not in copied]
    if missing:
        raise CheckpointError(f"{loaded.path}: {len(missing)} SAM image-encoder tensors are missing "
                              f"(image_encoder.{missing[0]}, ...); expected {SAM_HELP}")
    model.image_encoder.load_state_dict(copied, strict=False)
    with torch.no_grad():
        for block in model.image_encoder.blocks:
            block.attn.rel_pos_d = torch.nn.Parameter(0.5 * (block.attn.rel_pos_h + block.attn.rel_pos_w))
    model = apply_official_freezing(model)
    return model.to(device) if device is not None else model


def _copied_from_sam(encoder_key: str) -> bool:
    """Keys the official initialisation copies verbatim from SAM ViT-B's image encoder."""
    if encoder_key in ("pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"):
        return True
    parts = encoder_key.split(".")
    sam_attention = ("attn.qkv", "attn.proj", "attn.rel_pos_h", "attn.rel_pos_w")
    return parts[0] == "blocks" and (parts[2] in ("norm1", "norm2", "mlp") or ".".join(parts[2:4]) in sam_attention)


# --- the project's format -------------------------------------------------------------------------
def save_checkpoint(model: Sam3DAdapter, path: str | os.PathLike, provenance: Mapping | None = None,
                    include_sam: bool = True) -> Path:
    """Write the model: safetensors for ``*.safetensors``, else a torch file.

    The configuration and ``provenance`` (data, command, version...) go inside the file as JSON.
    ``include_sam=False`` leaves out the frozen tensors copied from SAM ViT-B (about 350 MB);
    loading such a file then needs the SAM checkpoint again.
    """
    path = Path(path)
    encoder = model.config.image_encoder
    default_mask = shift_mask(encoder.token_grid, encoder.window_size, encoder.shift_size)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith(".attn_mask") and torch.equal(value.cpu(), default_mask):
            continue  # deterministic; rebuilt on load
        if not include_sam and _frozen_sam_key(key):
            continue
        state[key] = value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype).contiguous()
    meta = {"format": PROJECT_SAM3D_FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_dict(),
            "provenance": dict(provenance or {})}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.clone() for k, v in state.items()}, str(path),
                  metadata={k: json.dumps(v) if not isinstance(v, str) else v for k, v in meta.items()})
    else:
        torch.save({**meta, "state_dict": state}, path)
    return path


def project_parts(loaded: LoadedCheckpoint) -> tuple[Sam3DAdapterConfig, dict, dict]:
    """(config, whole-model state dict, provenance) of a project checkpoint."""
    content, metadata, sidecar = loaded.content, loaded.metadata, loaded.sidecar or {}
    if loaded.format == "safetensors":
        raw = metadata.get("config") or sidecar.get("config")
        state = content
        provenance = metadata.get("provenance") or sidecar.get("provenance") or {}
    elif isinstance(content, Mapping) and content.get("format") == PROJECT_SAM3D_FORMAT:
        raw, state, provenance = content.get("config"), content.get("state_dict"), content.get("provenance", {})
    elif isinstance(content, Mapping) and classify(content, metadata, sidecar) == PROJECT_KIND:
        raw, state, provenance = sidecar.get("config"), content, sidecar.get("provenance", {})
    else:
        raise _wrong_kind(loaded, PROJECT_HELP)
    if raw is None:
        raise CheckpointError(f"{loaded.path}: no configuration found inside the file or in {loaded.path.name}.json; "
                              f"expected {PROJECT_HELP}")
    try:
        config = Sam3DAdapterConfig.from_dict(json.loads(raw) if isinstance(raw, str) else raw)
        provenance = json.loads(provenance) if isinstance(provenance, str) else dict(provenance)
    except ValueError as error:
        raise CheckpointError(f"{loaded.path}: invalid configuration ({error})") from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{loaded.path}: the state dict is a {type(state).__name__}; expected {PROJECT_HELP}")
    return config, dict(state), provenance


def _frozen_sam_key(model_key: str) -> bool:
    return model_key.startswith("image_encoder.") and _copied_from_sam(model_key[14:]) \
        and not is_trainable(model_key)


def project_problems(config: Sam3DAdapterConfig, state: Mapping, expected: Mapping | None = None) -> list[str]:
    """Layout problems of ``state`` against the model of ``config`` (``expected``: its state
    dict when the caller has built it already)."""
    if expected is None:
        expected = build_sam3d_adapter(config, device="meta").state_dict()
    given = dict(state)
    for key in expected:  # the deterministic masks may be left out
        if key.endswith(".attn_mask") and key not in given:
            given[key] = expected[key]
    return layout_problems(expected, given, "state dict")


def from_checkpoint(source, patch_path: str = "folded", device=None, sam=None) -> Sam3DAdapter:
    """Build from this project's checkpoint format, strictly. A file saved without SAM's frozen
    tensors takes them from ``sam`` (a SAM ViT-B checkpoint path or loaded checkpoint)."""
    loaded = _loaded(source)
    config, state, _ = project_parts(loaded)
    without_sam = [k for k in build_sam3d_adapter(config, device="meta").state_dict()
                   if _frozen_sam_key(k) and k not in state]
    if without_sam:
        if sam is None:
            raise SamEncoderMissing(f"{loaded.path}: holds only the tuned tensors ({len(without_sam)} frozen SAM tensors "
                                  f"left out); give the SAM ViT-B checkpoint too ({SAM_HELP})")
        donor = from_sam(sam, config).state_dict()
        state.update({k: donor[k] for k in without_sam})
        del donor
    problems = project_problems(config, state)
    if problems:
        raise CheckpointError(f"{loaded.path}: does not match its configuration {config.name!r}: "
                              f"{'; '.join(problems[:3])}")
    return _instantiate(config, state, patch_path, device, owned=loaded.format != "torch")


def load_model(path: str | os.PathLike, patch_path: str = "folded", device=None, sam=None) -> Sam3DAdapter:
    """A model from any accepted file: a release, a project checkpoint (``sam``: the SAM ViT-B
    checkpoint, for files saved without SAM's frozen tensors), or SAM ViT-B itself (untrained
    adapters and decoder: only a starting point for training)."""
    loaded = _loaded(path)
    kind = classify(loaded.content, loaded.metadata, loaded.sidecar)
    if kind == OFFICIAL_KIND:
        return from_official(loaded, patch_path=patch_path, device=device)
    if kind == PROJECT_KIND or loaded.format == "safetensors":
        return from_checkpoint(loaded, patch_path=patch_path, device=device, sam=sam)
    if kind.startswith("sam-vit-"):
        return from_sam(loaded, patch_path=patch_path, device=device)
    raise _wrong_kind(loaded, f"{OFFICIAL_HELP}, {PROJECT_HELP} or {SAM_HELP}")


# --- detectors for ``volsam weights inspect`` ------------------------------------------------------
def _count(named: Mapping[str, torch.Tensor], trainable) -> dict:
    buffers = [k for k in named if k.rsplit(".", 1)[-1] in _BUFFER_SUFFIXES]
    return {
        "tensor_count": len(named),
        "parameter_count": sum(v.numel() for k, v in named.items() if k not in buffers),
        "buffer_count": sum(named[k].numel() for k in buffers),
        "buffers": buffers,
        "trainable_count": sum(v.numel() for k, v in named.items() if k not in buffers and trainable(k)),
    }


def detect_official_checkpoint(loaded: LoadedCheckpoint) -> CheckpointReport | None:
    content = loaded.content
    if classify(content, loaded.metadata, loaded.sidecar) != OFFICIAL_KIND:
        return None
    problems = official_problems(content)
    named = {}
    if isinstance(content.get("encoder_dict"), Mapping):
        named.update({f"encoder_dict.{k}": v for k, v in content["encoder_dict"].items()})
    for index, section in enumerate(content.get("feature_dict") or []):
        if isinstance(section, Mapping):
            named.update({f"feature_dict[{index}].{k}": v for k, v in section.items()})
    if isinstance(content.get("decoder_dict"), Mapping):
        named.update({f"decoder_dict.{k}": v for k, v in content["decoder_dict"].items()})
    named = {k: v for k, v in named.items() if isinstance(v, torch.Tensor)}

    def trainable(key: str) -> bool:
        section, _, inner = key.partition(".")
        return is_trainable_encoder_key(inner) if section == "encoder_dict" else True

    notes = []
    extra = [k for k in content if k not in OFFICIAL_SAM3D_SECTIONS]
    scalars = {k: content[k] for k in extra if not isinstance(content[k], (Mapping, list, tuple, torch.Tensor))}
    if scalars:
        notes.append("training record: " + ", ".join(f"{k}={_scalar(v)}" for k, v in scalars.items()))
    states = [k for k in extra if k not in scalars]
    if states:
        notes.append(f"also holds {', '.join(states)} (optimizer states; not loaded)")
    notes.append("feature_dict[0..2] are stored and loaded but never run; the forward uses feature_dict[3]")
    summary = ("3DSAM-adapter release (ViT-B, 128^3 crops); loads strictly" if not problems else
               "3DSAM-adapter release layout that does NOT load strictly (an older upload?)")
    return CheckpointReport(str(loaded.path), OFFICIAL_KIND, not problems, summary, **_count(named, trainable),
                            trainable_rule="official 3DSAM-adapter freezing", notes=notes, problems=problems)


def _scalar(value) -> str:
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return repr(value)


def detect_project_checkpoint(loaded: LoadedCheckpoint) -> CheckpointReport | None:
    if classify(loaded.content, loaded.metadata, loaded.sidecar) != PROJECT_KIND:
        return None
    try:
        config, state, provenance = project_parts(loaded)
    except CheckpointError as error:
        return CheckpointReport(str(loaded.path), PROJECT_KIND, False, "volsam 3DSAM-adapter checkpoint, unreadable",
                                problems=[str(error)])
    expected = build_sam3d_adapter(config, device="meta").state_dict()  # built once for both checks
    problems = project_problems(config, state, expected)
    named = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    notes = [(f"configuration: {config.name} (crop {config.crop_size}^3, embed {config.image_encoder.embed_dim}, "
              f"depth {config.image_encoder.depth}"
              f"{', click maps' if config.mask_decoder.click_maps else ''})")]
    if provenance:
        notes.append("provenance: " + json.dumps(provenance, sort_keys=True))
    if not any(k.endswith("attn_mask") for k in named):
        notes.append("shift masks are computed on load (not stored)")
    left_out = [k for k in expected if _frozen_sam_key(k) and k not in state]
    if left_out:
        notes.append(f"SAM's {len(left_out)} frozen tensors are left out: loading needs the SAM ViT-B checkpoint")
        problems = project_problems(config, {**state, **{k: None for k in left_out}}, expected)
    return CheckpointReport(str(loaded.path), PROJECT_KIND, not problems,
                            f"volsam 3DSAM-adapter checkpoint ({config.name})", **_count(named, is_trainable),
                            trainable_rule="official 3DSAM-adapter freezing", notes=notes, problems=problems)


def detect_sam_checkpoint(loaded: LoadedCheckpoint) -> CheckpointReport | None:
    kind = sam_kind(loaded.content)
    if kind is None:
        return None
    named = {k: v for k, v in loaded.content.items() if isinstance(v, torch.Tensor)}
    buffers = [k for k in named if k.endswith(("pixel_mean", "pixel_std", "positional_encoding_gaussian_matrix"))]
    blocks = len({k.split(".")[2] for k in named if k.startswith("image_encoder.blocks.")})
    usable = kind == "sam-vit-b"

    def trainable(key: str) -> bool:  # SAM tensors that stay trainable once copied into 3DSAM-adapter
        return key.startswith("image_encoder.") and _copied_from_sam(key[14:]) and is_trainable_encoder_key(key[14:])

    report = CheckpointReport(
        str(loaded.path), kind, usable,
        f"SAM {kind[-1].upper()} ({blocks} blocks)" + ("; initialises 3DSAM-adapter" if usable else
                                                        "; refused: only SAM ViT-B fits 3DSAM-adapter"),
        tensor_count=len(named), parameter_count=sum(v.numel() for k, v in named.items() if k not in buffers),
        buffer_count=sum(named[k].numel() for k in buffers), buffers=buffers,
        trainable_count=sum(v.numel() for k, v in named.items() if trainable(k)) if usable else None,
        trainable_rule="of this file's tensors, those 3DSAM-adapter keeps training (block norms)")
    if usable:
        model = build_sam3d_adapter(VIT_B, device="meta")
        total = sum(p.numel() for p in model.parameters())
        train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        report.notes.append(f"3DSAM-adapter built from it: {total:,} parameters, {train:,} trainable; "
                            "SAM's prompt encoder, mask decoder and 2D neck are not used")
    return report
