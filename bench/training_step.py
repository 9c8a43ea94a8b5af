"""Training-step figures: data loading against compute, and peak GPU memory of full-size training.

1. Data loading never starves training. On a small phantom dataset (cached first, as a run
   does), the time to draw one training batch from the cache (crop with augmentation and
   clicks for 3DSAM-adapter; a clip for SAM2-3dMed) is compared with one optimizer step of the
   tiny demo configurations (forward, backward, step). Target: loading <= 10 % of a step.
2. Full-size 3DSAM-adapter training (ViT-B, batch 1, 128^3 crop) with bfloat16/float16 autocast
   and activation checkpointing: peak GPU memory over a few steps. Target: <= 16 GB. Needs a
   CUDA device (random weights: the memory does not depend on their values); without one this
   part is reported as skipped.

    python bench/training_step.py                 # both parts
    python bench/training_step.py --skip-gpu      # only the data-loading figures
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LOADING_TARGET = 0.10
GPU_MEMORY_TARGET_GB = 16.0


def _median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def loading_versus_step(cases: int, repeats: int, threads: int) -> list[dict]:
    import torch

    from volsam.datasets import load_dataset
    from volsam.methods import method_names
    from volsam.phantoms import write_phantom_dataset
    from volsam.training.cache import CachedCases, VolumeCache
    from volsam.training.config import TrainingConfig
    from volsam.training.recipes import recipe_for

    torch.set_num_threads(threads)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        write_phantom_dataset(folder / "data", cases, seed=7)
        dataset = load_dataset(folder / "data")
        for model in method_names():
            # Each method's demo configuration, preprocessed and sampled as its recipe does.
            config = TrainingConfig(model=model, data=folder / "data", label="2", out=folder / "run",
                                    config="tiny-demo", train_encoder=True, preset="ct", click_protocol="lesion",
                                    progress=False)
            recipe = recipe_for(model)
            preprocessing = recipe.preprocessing_from_dict(recipe.preprocessing(config, dataset, dataset.training))
            cache = VolumeCache(folder / f"cache-{model}", preprocessing, 2)
            cache.prepare(dataset.training, progress=False)
            cached = CachedCases(cache, dataset.training)
            device = torch.device("cpu")
            task = recipe.make_task(config, cached, cached, preprocessing, device)
            config_name = config.config_name
            load, compute = _timings(task, device, repeats)
            results.append({"model": model, "config": config_name, "load_batch_s": round(load, 4),
                            "step_s": round(compute, 4), "ratio": round(load / compute, 4),
                            "target_met": load / compute <= LOADING_TARGET})
    return results


def _timings(task, device, repeats: int) -> tuple[float, float]:
    """Median seconds to draw one training sample from the cache, and of one optimizer step."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    items = task.training_items
    load = _median_seconds(lambda: task.training_sample(int(rng.integers(items)), rng), repeats * 3)
    optimizer = torch.optim.AdamW([p for p in task.model.parameters() if p.requires_grad], lr=1e-4)
    queue = iter([task.training_sample(i % items, np.random.default_rng(i)) for i in range(repeats + 1)])

    def step():
        loss, _ = task.loss(task.training_module, next(queue), device)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: kernel selection and allocator
    return load, _median_seconds(step, repeats)


def gpu_full_size(steps: int) -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    from volsam.models.sam3d_adapter import build_sam3d_adapter
    from volsam.training.adapter_task import AdapterTrainingForward
    from volsam.training.losses import adapter_loss
    from volsam.training.task import checkpoint_forward

    device = torch.device("cuda")
    model = build_sam3d_adapter("vit_b").to(device)  # official freezing applied
    forward = AdapterTrainingForward(model).train()
    checkpoint_forward(model.image_encoder.blocks)
    checkpoint_forward(model.mask_decoder.mlahead.heads())
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=4e-4)
    crop = torch.randn(1, 1, 128, 128, 128, device=device)
    target = (torch.rand(1, 128, 128, 128, device=device) > 0.95).long()
    points = torch.randint(0, 128, (30, 3), device=device).float()
    labels = torch.ones(30, dtype=torch.long, device=device)
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.autocast("cuda", dtype=dtype):
            loss = adapter_loss(forward(crop, points, labels), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30
    return {"device": torch.cuda.get_device_name(), "autocast": str(dtype).replace("torch.", ""),
            "activation_checkpointing": True, "peak_allocated_gb": round(peak, 2),
            "step_s_median": round(statistics.median(times[1:] or times), 3), "target_met": peak <= GPU_MEMORY_TARGET_GB}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3, help="phantom cases for the loading figures")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for the tiny steps")
    parser.add_argument("--gpu-steps", type=int, default=3)
    parser.add_argument("--skip-gpu", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    report = {"loading": loading_versus_step(args.cases, args.repeats, args.threads)}
    report["gpu_full_size_adapter"] = {"skipped": "--skip-gpu"} if args.skip_gpu else gpu_full_size(args.gpu_steps)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"data loading vs. one tiny-config step (target: loading <= {LOADING_TARGET:.0%} of a step)")
    for row in report["loading"]:
        print(f"  {row['model']:14s} {row['config']}: load {1000 * row['load_batch_s']:.1f} ms, step "
              f"{1000 * row['step_s']:.0f} ms, ratio {row['ratio']:.1%} {'ok' if row['target_met'] else 'MISSED'}")
    gpu = report["gpu_full_size_adapter"]
    print(f"full-size adapter training, batch 1, 128^3, autocast + activation checkpointing "
          f"(target: peak <= {GPU_MEMORY_TARGET_GB:g} GB)")
    if "skipped" in gpu:
        print(f"  skipped: {gpu['skipped']}")
    else:
        print(f"  {gpu['device']}, {gpu['autocast']}: peak {gpu['peak_allocated_gb']:.2f} GB, step "
              f"{gpu['step_s_median']:.2f} s {'ok' if gpu['target_met'] else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
