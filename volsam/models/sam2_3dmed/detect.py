"""Recognising SAM2 weights for ``volsam weights inspect`` (see :mod:`volsam.weights.inspect`).

Official checkpoints are told apart by key and shape: the Hiera trunk's width (the channels
of its positional embedding) and number of blocks give the size; ``no_obj_embed_spatial`` and
``obj_ptr_tpos_proj`` mark SAM 2.1 against the first SAM 2 release. This project's SAM2-3dMed
checkpoints are recognised by their JSON header. Either is then checked strictly against the
model it would load into (built with random weights on the CPU: a few seconds for the
large size; the ``meta`` device cannot build Hiera, which reads a tensor value in ``__init__``).
"""

from __future__ import annotations

from collections.abc import Mapping

from ...weights.loading import CheckpointError, LoadedCheckpoint
from ...weights.report import CheckpointReport
from .checkpoint import header_of, sam2_state_dict_of
from .variants import SAM2Detection, detect_sam2_state_dict

TRAINABLE_RULE = "SAM2-3dMed trains all but the Hiera image encoder and its neck (spec P2)"


def detect_checkpoint(loaded: LoadedCheckpoint) -> CheckpointReport | None:
    """Detector for ``volsam weights inspect`` (:meth:`volsam.methods.Method.checkpoint_detectors`):
    official SAM2/SAM2.1 checkpoints and SAM2-3dMed checkpoints of this project; None for
    anything else."""
    try:
        header = header_of(loaded)
    except CheckpointError as error:
        return CheckpointReport(str(loaded.path), "sam2-3dmed", False, "a SAM2-3dMed checkpoint with a bad header",
                                problems=[str(error)])
    if header is not None:
        return _project_report(loaded, header)
    state = sam2_state_dict_of(loaded)
    if state is None:
        return None
    found = detect_sam2_state_dict({k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")})
    if found is None:
        return None
    return _official_report(loaded, state, found)


def _counts(report: CheckpointReport, state: Mapping, model) -> None:
    buffers = {name for name, _ in model.named_buffers()}
    report.tensor_count = len(state)
    report.buffers = sorted(k for k in state if k in buffers)
    report.buffer_count = sum(int(state[k].numel()) for k in report.buffers)
    report.parameter_count = sum(int(v.numel()) for k, v in state.items() if k not in buffers)


def _official_report(loaded: LoadedCheckpoint, state: Mapping, found: SAM2Detection) -> CheckpointReport:
    from .checkpoint import check_fits
    from .config import SAM2Architecture, SAM2ThreeDMedConfig

    path = str(loaded.path)
    if found.generation != "2.1":
        return CheckpointReport(path, "sam2", False, f"{found.name}: a SAM 2 checkpoint of the first release",
                                tensor_count=len(state),
                                problems=["SAM2-3dMed needs a SAM 2.1 checkpoint (sam2.1_hiera_*.pt)"])
    if found.variant is None:
        return CheckpointReport(path, "sam2", False,
                                f"a SAM 2.1 checkpoint of no official size (Hiera width {found.trunk_width}, "
                                f"{found.trunk_blocks} blocks)", tensor_count=len(state),
                                problems=["not one of the official SAM2.1 sizes (tiny, small, base_plus, large)"])
    model = _reference_model(SAM2ThreeDMedConfig(SAM2Architecture(variant=found.variant)))
    report = CheckpointReport(path, "sam2", True,
                              f"{found.name}: official SAM 2.1 hiera-{found.variant.replace('_', '+')} checkpoint, "
                              "for the frozen parts of SAM2-3dMed (--sam2-checkpoint)")
    _counts(report, state, model.sam2)
    model_state = model.sam2.state_dict()
    report.trainable_count = sum(int(v.numel()) for k, v in state.items()
                                 if k in model_state and not k.startswith("image_encoder.") and k not in report.buffers)
    report.trainable_rule = TRAINABLE_RULE
    report.problems = check_fits(state, model_state, path)
    report.usable = not report.problems
    return report


def _project_report(loaded: LoadedCheckpoint, header) -> CheckpointReport:
    from .checkpoint import check_fits

    path = str(loaded.path)
    arch = header.config.architecture
    model = _reference_model(header.config)
    full = model.state_dict()
    names = list(full) if header.contents == "whole_model" else model.trained_parameter_names()
    state = loaded.content if isinstance(loaded.content, Mapping) else {}
    custom = any(getattr(arch, f) is not None for f in (
        "trunk_embed_dim", "trunk_num_heads", "trunk_stages", "trunk_global_att_blocks", "trunk_window_spec",
        "hidden_dim", "memory_dim", "memory_attention_layers", "memory_attention_feedforward", "num_maskmem"))
    base = f"a custom configuration based on sam2.1-{arch.variant}" if custom else f"sam2.1-{arch.variant}"
    contents = "the whole model" if header.contents == "whole_model" else (
        "the trained parts (needs the official SAM2.1 checkpoint too)")
    report = CheckpointReport(path, "sam2-3dmed", True,
                              f"SAM2-3dMed checkpoint of this project: {base} at {arch.image_size} px, {contents}")
    _counts(report, state, model)
    trained = set(model.trained_parameter_names())
    report.trainable_count = sum(int(v.numel()) for k, v in state.items() if k in trained and k not in report.buffers)
    report.trainable_rule = TRAINABLE_RULE
    report.notes = [f"{k}: {v}" for k, v in sorted(header.provenance.items())]
    report.problems = check_fits(state, {k: full[k] for k in names}, path)
    report.usable = not report.problems
    return report


def _reference_model(config):
    """The model of ``config``, randomly initialised, to check a file's keys and shapes against."""
    import torch

    from .build import build_model

    with torch.no_grad():
        return build_model(config)
