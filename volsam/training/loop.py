"""The training loop shared by both models: data, checks, cache, epochs, validation,
checkpoints, resume, the CSV log and the progress bars.

A run folder holds::

    run.json        the options and data facts of the run (resume checks against it)
    log.csv         one row per epoch: losses, validation, learning rate, timings
    last.safetensors, best.safetensors   the model in this project's format
    resume.pt       optimizer states and counters (torch file, read with weights_only=True)
    cache/          preprocessed volumes (unless --cache-dir puts them elsewhere)

Every sample's random draws come from a generator seeded by (seed, epoch, position in the
epoch), so an interrupted run resumed from ``last`` sees exactly the samples it would have
seen, and a process of a multi-process run draws the same samples whatever the number of data
workers.
"""

from __future__ import annotations

import csv
import json
import math
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .config import TrainingConfig
from .recipes import checked, recipe_for

LOG_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "val_dice", "learning_rate", "epoch_seconds",
               "data_wait_seconds", "best")
RESUME_FILE = "resume.pt"
RUN_FILE = "run.json"
#: Options that must not change when a run is resumed (--epochs / --steps may grow: a longer run).
RESUME_FIXED = ("model", "config", "data", "label", "crop", "batch_size", "train_encoder", "spacing_mm",
                "preset", "click_protocol", "clip_length", "window", "seed", "fold")


@dataclass(frozen=True)
class TrainingResult:
    out: Path
    epochs_done: int
    steps_done: int
    best_validation_loss: float
    last_validation_dice: float
    history: list


@dataclass(frozen=True)
class _PreparedData:
    train: object  # CachedCases
    validation: object
    preprocessing: object
    label_value: int
    label_name: str
    facts: dict


def train(config: TrainingConfig) -> TrainingResult:
    """Run (or resume) one training run; every input problem is a ValueError raised before the
    first step."""
    import torch

    from ..devices import resolve_device
    from .distributed import DistributedContext

    checked(config)
    context = DistributedContext.from_environment()
    device = resolve_device(config.device)
    if context.enabled and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    if config.amp and device.type not in ("cuda", "cpu"):
        raise ValueError(f"--amp is supported on CUDA and CPU devices, not {device.type}")
    _check_run_folder(config, context)
    context.start(device)
    previous_handler = _stop_on_sigterm()
    try:
        data = _prepare_data(config, context)
        return _run(config, context, device, data)
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        context.stop()


def _stop_on_sigterm():
    """Turn SIGTERM (what job schedulers send) into KeyboardInterrupt, so that the data-loading
    workers are shut down with the run instead of being left behind. Returns the previous
    handler (None when not on the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


# --- preparation ------------------------------------------------------------------------------------
def _check_run_folder(config: TrainingConfig, context) -> None:
    out = config.out
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; expected a folder for the run")
    has_run = (out / RESUME_FILE).is_file()
    if config.resume and not has_run:
        raise ValueError(f"--resume: {out} holds no run to resume (no {RESUME_FILE})")
    if not config.resume and has_run:
        raise ValueError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    if config.resume:
        previous = json.loads((out / RUN_FILE).read_text())["options"]
        current = _options(config)
        changed = [k for k in RESUME_FIXED if previous.get(k) != current.get(k)]
        if changed:
            raise ValueError(f"--resume: the run in {out} was started with other options ("
                             + ", ".join(f"{k}: {previous.get(k)!r} then, {current.get(k)!r} now" for k in changed[:3])
                             + ")")


def _options(config: TrainingConfig) -> dict:
    options = asdict(config)
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}
    options["config"] = config.config_name
    options["data"] = str(Path(config.data).resolve())
    return options


def _prepare_data(config: TrainingConfig, context) -> _PreparedData:
    """Dataset checks, preprocessing constants and the cache (process 0 builds, others wait)."""
    from ..datasets import check_cases, load_dataset
    from .cache import CachedCases, VolumeCache, check_label_occurs

    dataset = load_dataset(config.data, config.split_file)
    label_value = dataset.label_value(config.label)
    label_name = dataset.label_name(label_value)
    train_cases = list(dataset.cases("train", config.fold))
    check_cases(train_cases, "training")
    validation_cases = list(dataset.cases("val", config.fold))
    if not validation_cases:
        print(f"volsam train: {config.data} has no validation cases; validating on the training cases",
              file=sys.stderr)
        validation_cases = train_cases
    if config.max_validation_cases is not None:
        validation_cases = validation_cases[:config.max_validation_cases]
    check_cases(validation_cases, "validation")

    run_file = config.out / RUN_FILE
    facts, error = None, None
    if context.is_main:
        # Process 0 checks and caches; a problem it finds reaches every process as one error.
        try:
            facts = _facts(config, dataset, label_value, label_name, train_cases, validation_cases, run_file)
            cache = VolumeCache(config.cache_dir or config.out / "cache", _preprocessing_from_dict(
                facts["preprocessing"]), label_value)
            opened = cache.prepare(train_cases, progress=config.progress, desc="caching training cases")
            check_label_occurs(opened, label_value, label_name)
            cache.prepare(validation_cases, progress=config.progress, desc="caching validation cases")
            config.out.mkdir(parents=True, exist_ok=True)
            if not config.resume:
                run_file.write_text(json.dumps({"options": _options(config), "facts": facts}, indent=1) + "\n")
        except ValueError as problem:
            error = str(problem)
    facts, error = context.broadcast_object((facts, error))
    if error is not None:
        raise ValueError(error)
    preprocessing = _preprocessing_from_dict(facts["preprocessing"])
    cache = VolumeCache(config.cache_dir or config.out / "cache", preprocessing, label_value)
    if context.is_main:
        note = inference_note(config, facts["preprocessing"])
        if note:
            print(f"volsam train: note: {note}", file=sys.stderr)
    return _PreparedData(CachedCases(cache, train_cases), CachedCases(cache, validation_cases), preprocessing,
                         label_value, label_name, facts)


def _facts(config: TrainingConfig, dataset, label_value: int, label_name: str, train_cases, validation_cases,
           run_file: Path) -> dict:
    """What the run learns from its data (kept in run.json, so a resumed run reuses it)."""
    if config.resume:
        return json.loads(run_file.read_text())["facts"]
    facts = {"label_value": label_value, "label_name": label_name, "modality": dataset.modality,
             "train_cases": [c.case_id for c in train_cases],
             "validation_cases": [c.case_id for c in validation_cases]}
    facts["preprocessing"] = recipe_for(config.model).preprocessing(config, dataset, train_cases)
    return facts


def inference_note(config: TrainingConfig, preprocessing: dict) -> str | None:
    """A warning when inference (``volsam segment``, the sessions) will not preprocess as this
    run does."""
    return recipe_for(config.model).inference_note(preprocessing)


def _preprocessing_from_dict(data: dict):
    return recipe_for(data["kind"]).preprocessing_from_dict(data)


def _make_task(config: TrainingConfig, data: _PreparedData, device):
    return recipe_for(config.model).make_task(config, data.train, data.validation, data.preprocessing, device)



# --- the loop ---------------------------------------------------------------------------------------
class _Samples:
    """Map-style dataset: (epoch, position, item) -> the task's training sample for that item."""

    def __init__(self, task, seed: int):
        self.task = task
        self.seed = seed

    def __getitem__(self, key):
        epoch, position, item = key
        return self.task.training_sample(item, np.random.default_rng([self.seed, epoch, position]))


class _EpochSampler:
    """Endless (epoch, position, item) keys from ``first_epoch`` on: each epoch a seeded
    permutation of the items, split across processes, padded so all get ``per_process``."""

    def __init__(self, items: int, per_process: int, rank: int, world: int, seed: int, first_epoch: int):
        self.items, self.per_process, self.rank, self.world = items, per_process, rank, world
        self.seed, self.first_epoch = seed, first_epoch

    def __iter__(self):
        epoch = self.first_epoch
        while True:
            order = np.random.default_rng([self.seed, epoch, 7]).permutation(self.items)
            total = self.per_process * self.world
            order = np.resize(order, total)  # wraps round when the processes need more
            for position in range(self.rank, total, self.world):
                yield epoch, position, int(order[position])
            epoch += 1


def _keep(sample):
    return sample


def _run(config: TrainingConfig, context, device, data: _PreparedData) -> TrainingResult:
    import torch
    from tqdm import tqdm

    from .. import __version__

    task = _make_task(config, data, device)
    if config.init is not None and not config.resume:
        task.load_weights(config.init)
    if task.training_items == 0:
        raise ValueError("the training set has no case showing the target label, so no clip can be prompted")
    if config.grad_checkpoint:
        task.enable_activation_checkpointing()
    module = task.training_module
    if context.enabled:
        from torch.nn.parallel import DistributedDataParallel

        module = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                         find_unused_parameters=True)
    groups = task.optimizer_groups()
    optimizers = [torch.optim.AdamW(g.parameters, lr=g.learning_rate, betas=(0.9, 0.999), eps=1e-8,
                                    weight_decay=g.weight_decay) for g in groups]
    autocast_dtype = None
    scaler = None
    if config.amp:
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            autocast_dtype = torch.float16
            scaler = torch.amp.GradScaler("cuda")
        else:
            autocast_dtype = torch.bfloat16

    batch = config.batch_size
    steps_per_epoch = max(1, math.ceil(task.training_items / (batch * context.world_size)))
    if config.steps is not None:
        total_steps = config.steps
        total_epochs = math.ceil(total_steps / steps_per_epoch)
    else:
        total_epochs = config.run_epochs
        total_steps = total_epochs * steps_per_epoch

    first_epoch, step, best_loss, history = 0, 0, math.inf, []
    out = config.out
    if config.resume:
        state = torch.load(out / RESUME_FILE, map_location=device, weights_only=True)
        task.load_weights(out / "last.safetensors")
        for optimizer, optimizer_state in zip(optimizers, state["optimizers"]):
            optimizer.load_state_dict(optimizer_state)
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        first_epoch, step, best_loss = int(state["epoch"]), int(state["step"]), float(state["best_loss"])
        history = _read_log(out / "log.csv")
        if step >= total_steps:
            raise ValueError(f"--resume: the run in {out} is finished ({step} of {total_steps} steps done)")

    loader = torch.utils.data.DataLoader(
        _Samples(task, config.seed),
        sampler=_EpochSampler(task.training_items, steps_per_epoch * batch, context.rank, context.world_size,
                              config.seed, first_epoch),
        batch_size=None, collate_fn=_keep, num_workers=config.workers, persistent_workers=config.workers > 0,
        prefetch_factor=2 if config.workers > 0 else None)
    samples = iter(loader)
    main = context.is_main
    show = config.progress and main
    provenance_base = {"command": config.command, "data": str(Path(config.data).resolve()),
                       "label": data.label_value, "label_name": data.label_name, "version": __version__,
                       "configuration": config.config_name, "seed": config.seed,
                       "preprocessing": data.facts["preprocessing"],
                       "initialisation": _initialisation(config)}
    if main:
        out.mkdir(parents=True, exist_ok=True)
    log_path = out / "log.csv"
    if main and not config.resume:
        with open(log_path, "w", newline="") as handle:
            csv.writer(handle).writerow(LOG_COLUMNS)

    module.train()
    last_dice = history[-1]["val_dice"] if history else float("nan")
    epoch = first_epoch
    while step < total_steps:
        started = time.perf_counter()
        waited = 0.0
        steps_this_epoch = min(steps_per_epoch, total_steps - step)
        _set_learning_rates(task.schedule, optimizers, groups, epoch, total_epochs, step, total_steps)
        losses = []
        bar = tqdm(total=steps_this_epoch, desc=f"epoch {epoch + 1}/{total_epochs}", unit="step", disable=not show,
                   dynamic_ncols=True, file=sys.stderr)
        for _ in range(steps_this_epoch):
            if task.schedule == "step_cosine":
                _set_learning_rates(task.schedule, optimizers, groups, epoch, total_epochs, step, total_steps)
            step_loss = 0.0
            for micro in range(batch):
                wait_start = time.perf_counter()
                sample = next(samples)
                waited += time.perf_counter() - wait_start
                sync = module.no_sync() if context.enabled and micro < batch - 1 else nullcontext()
                autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
                with sync:
                    with autocast:
                        loss, _ = task.loss(module, sample, device)
                    scaled = loss / batch
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                step_loss += float(loss.detach()) / batch
            if scaler is not None:
                for optimizer in optimizers:
                    scaler.unscale_(optimizer)
            for parameters in task.clip_groups():
                torch.nn.utils.clip_grad_norm_([p for p in parameters if p.grad is not None], 1.0)
            for optimizer in optimizers:
                if scaler is not None:
                    scaler.step(optimizer)
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.update()
            step += 1
            losses.append(step_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses):.4f}", val_dice=f"{last_dice:.3f}")
        bar.close()
        epoch += 1
        train_loss = float(np.mean(losses))
        if main:
            validation = task.validate(device, show)
            last_dice = validation.dice
            is_best = validation.loss < best_loss
            best_loss = min(best_loss, validation.loss)
            provenance = {**provenance_base, "epoch": epoch, "step": step,
                          "validation": {"dice_loss": validation.loss, "dice": validation.dice}}
            task.save(out / "last.safetensors", provenance)
            if is_best:
                task.save(out / "best.safetensors", provenance)
            torch.save({"epoch": epoch, "step": step, "best_loss": best_loss,
                        "optimizers": [o.state_dict() for o in optimizers],
                        "scaler": scaler.state_dict() if scaler is not None else None},
                       out / RESUME_FILE)
            row = {"epoch": epoch, "step": step, "train_loss": train_loss, "val_loss": validation.loss,
                   "val_dice": validation.dice, "learning_rate": optimizers[0].param_groups[0]["lr"],
                   "epoch_seconds": time.perf_counter() - started, "data_wait_seconds": waited, "best": int(is_best)}
            history.append(row)
            with open(log_path, "a", newline="") as handle:
                csv.writer(handle).writerow([_format(row[c]) for c in LOG_COLUMNS])
            if show:
                tqdm.write(f"epoch {epoch}/{total_epochs}: loss {train_loss:.4f}, validation Dice {validation.dice:.4f}"
                           f" (Dice loss {validation.loss:.4f}){' best' if is_best else ''}", file=sys.stderr)
        context.barrier()
    if main:
        task.after_training(out)
    return TrainingResult(out, epoch, step, best_loss, last_dice, history)


def _initialisation(config: TrainingConfig) -> str:
    if config.init is not None:
        return f"weights of {Path(config.init).name} (a run of this project)"
    if config.sam_checkpoint or config.sam2_checkpoint:
        return str(config.sam_checkpoint or config.sam2_checkpoint)
    return "random (trained from scratch)"


def _set_learning_rates(schedule: str, optimizers, groups, epoch: int, total_epochs: int, step: int,
                        total_steps: int) -> None:
    if schedule == "epoch_linear":  # spec section 9: 1.0 -> 0.01 linearly, stepped per epoch
        factor = 1.0 - 0.99 * epoch / max(1, total_epochs)
    else:  # spec D7: linear warm-up over 5 % of the steps, then cosine to 0
        warmup = max(1, int(0.05 * total_steps))
        if step < warmup:
            factor = (step + 1) / warmup
        else:
            factor = 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))
    for optimizer, group in zip(optimizers, groups):
        for parameter_group in optimizer.param_groups:
            parameter_group["lr"] = group.learning_rate * factor


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
