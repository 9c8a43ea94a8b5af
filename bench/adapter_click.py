"""Click latency and peak memory of the 3DSAM-adapter session.

For each configuration (model size x device x patch path x precision) a fresh Python process
loads the model from a safetensors checkpoint (random weights, no optimizer states), opens a
synthetic CT volume in an :class:`AdapterSession` and measures:

* first click: crop resampling + image encoder + prompt encoder + decoder + mapping back
  (tiny models after one warm-up pass, full-size ones without);
* refinement click: a second click inside the crop (cached encoder output), median of repeats;
* patch stage alone (upsample -> 2D patch embedding -> depth conv, or its folded 3D conv);
* peak resident memory of that process (VmHWM; CUDA: also peak allocated GPU memory).

The official implementation needs about 150 s and 7.2 GB for one click of the full-size model
in float32 on a 2-core CPU (spec, performance notes). The machine's float32 matmul rate is
printed first: timings scale with it, and shared machines vary.

    python bench/adapter_click.py                      # tiny and full size, CPU (+ CUDA if present)
    python bench/adapter_click.py --sizes tiny         # quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = {"first_click_s": 150.0, "peak_rss_gb": 7.2, "matmul_gflops": 165.0}


def matmul_gflops(threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    start = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2 * 2048 ** 3 / (time.perf_counter() - start) / 1e9


def synthetic_volume():
    """A 0.8 x 0.8 x 2 mm CT-like volume: soft tissue with a 15 mm 'tumour'."""
    import numpy as np

    from volsam.geometry import Volume

    shape = (100, 240, 240)  # k, j, i
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    radius = np.sqrt(((i - 120) * 0.8) ** 2 + ((j - 120) * 0.8) ** 2 + ((k - 50) * 2.0) ** 2)
    hounsfield = np.where(radius < 15, 90.0, 40.0).astype(np.float32)
    hounsfield += np.random.default_rng(0).normal(0, 10, shape).astype(np.float32)
    return Volume.from_spacing(hounsfield, (0.8, 0.8, 2.0), origin_ras=(-96.0, -96.0, -100.0))


def peak_rss_gb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    from the parent across fork and exec, so a child would report the parent's size."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024 ** 2
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def child(spec: dict) -> dict:
    import numpy as np
    import torch

    from volsam.models.sam3d_adapter.checkpoints import from_checkpoint
    from volsam.sessions.adapter_session import AdapterSession, AdapterSessionOptions

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    start = time.perf_counter()
    model = from_checkpoint(spec["checkpoint"], patch_path=spec["patch_path"], device=device)
    load_s = time.perf_counter() - start
    session = AdapterSession(model, device, AdapterSessionOptions(precision=spec["precision"], max_growth_crops=0))
    if spec["warmup"]:
        session.warmup()
    volume = synthetic_volume()
    session.open_volume(volume)
    center = volume.ijk_to_ras_points(np.array([120.0, 120.0, 50.0]))

    def timed(function):
        if device.type == "cuda":
            torch.cuda.synchronize()
        begin = time.perf_counter()
        result = function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - begin, result

    rate_before = matmul_gflops(spec["threads"])
    first_s, _ = timed(lambda: session.add_point(center))
    rate_after = matmul_gflops(spec["threads"])
    refinements = []
    for step in range(spec["repeats"]):
        point, positive = center + np.array([2.0 + step, -1.0, 1.5]), step % 2 == 0
        seconds, _ = timed(lambda point=point, positive=positive: session.add_point(point, positive))
        refinements.append(seconds)
    crop_image = session.crop_image(session._grid(session.prompts.crops[0]))
    encoder_s, _ = timed(lambda: session.predictor.embed(crop_image))
    crop = torch.from_numpy(crop_image)[None, None].to(device)
    encoder = session.predictor.model.image_encoder
    with torch.inference_mode(), session.predictor._context():
        encoder.embed_patches(crop)  # warm-up
        patch_s, _ = timed(lambda: encoder.embed_patches(crop))
    result = {
        "load_s": load_s, "first_click_s": first_s, "encoder_s": encoder_s,
        "refinement_s": float(np.median(refinements)), "patch_stage_s": patch_s,
        "peak_rss_gb": peak_rss_gb(),
        "matmul_gflops": (rate_before + rate_after) / 2,
    }
    if device.type == "cuda":
        result["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1024 ** 3
    return result


def write_checkpoint(size: str, folder: Path) -> Path:
    import torch

    from volsam.models.sam3d_adapter import build_sam3d_adapter
    from volsam.models.sam3d_adapter.checkpoints import save_checkpoint

    torch.manual_seed(0)
    model = build_sam3d_adapter(size)
    with torch.no_grad():  # non-trivial relative tables, so the attention does real work
        for name, parameter in model.named_parameters():
            if "rel_pos" in name:
                parameter.normal_(0, 0.02)
    return save_checkpoint(model, folder / f"{size}.safetensors", {"data": "random weights for benchmarking"})


def run_child(spec: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]))
    completed = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                               capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "failed"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def configurations(sizes, devices, paths, precisions):
    for size in sizes:
        for device in devices:
            for path in paths:
                for precision in precisions:
                    if precision == "float16" and device == "cpu":
                        continue
                    if path == "unfolded" and precision != "float32":
                        continue  # the patch-path comparison is made in float32
                    yield size, device, path, precision


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,vit_b")
    parser.add_argument("--devices", default=None, help="comma list (default: cpu, plus cuda when available)")
    parser.add_argument("--paths", default="folded,unfolded")
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="refinement clicks per configuration")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    sys.path.insert(0, str(REPO))
    import torch

    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"float32 matmul rate on {args.threads} threads: {matmul_gflops(args.threads):.0f} GFLOP/s "
          f"(the spec's official timing was taken at about 165)")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        checkpoints = {}
        for size, device, path, precision in configurations(args.sizes.split(","), devices, args.paths.split(","),
                                                           args.precisions.split(",")):
            if size not in checkpoints:
                checkpoints[size] = str(write_checkpoint(size, Path(folder)))
            # Tiny models are timed after a warm-up pass (otherwise one-time kernel set-up is all
            # they measure); full-size first clicks include it, as a user's first click does.
            spec = {"checkpoint": checkpoints[size], "device": device, "patch_path": path, "precision": precision,
                    "threads": args.threads, "repeats": args.repeats, "warmup": size == "tiny"}
            result = run_child(spec)
            rows.append({**spec, **result})
            print(format_row(rows[-1]), flush=True)
    print()
    for line in ratios(rows):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def format_row(row: dict) -> str:
    name = f"{Path(row['checkpoint']).stem:6s} {row['device']:4s} {row['patch_path']:8s} {row['precision']:8s}"
    if "error" in row:
        return f"{name}  error: {row['error']}"
    text = (f"{name}  first click {row['first_click_s']:7.2f} s (encoder {row['encoder_s']:6.2f})  "
            f"refinement {row['refinement_s']:6.2f} s  patch stage {row['patch_stage_s']:6.3f} s  "
            f"peak RSS {row['peak_rss_gb']:5.2f} GB  (matmul {row['matmul_gflops']:.0f} GFLOP/s)")
    if "peak_cuda_gb" in row:
        text += f"  peak CUDA {row['peak_cuda_gb']:5.2f} GB"
    return text


def ratios(rows: list[dict]) -> list[str]:
    lines = []
    done = [r for r in rows if "error" not in r]
    for row in done:
        label = f"{Path(row['checkpoint']).stem} {row['device']} {row['patch_path']} {row['precision']}"
        lines.append(f"{label}: refinement / first click = {row['refinement_s'] / row['first_click_s']:.1%}")
    for folded in [r for r in done if r["patch_path"] == "folded" and r["precision"] == "float32"]:
        for unfolded in [r for r in done if r["patch_path"] == "unfolded" and r["checkpoint"] == folded["checkpoint"]
                         and r["device"] == folded["device"]]:
            lines.append(f"{Path(folded['checkpoint']).stem} {folded['device']}: patch stage folded is "
                         f"{unfolded['patch_stage_s'] / folded['patch_stage_s']:.1f}x faster than unfolded; "
                         f"first click {unfolded['first_click_s'] / folded['first_click_s']:.2f}x, peak RSS "
                         f"{unfolded['peak_rss_gb']:.2f} -> {folded['peak_rss_gb']:.2f} GB")
        for bf16 in [r for r in done if r["precision"] == "bfloat16" and r["checkpoint"] == folded["checkpoint"]
                     and r["device"] == folded["device"] and r["patch_path"] == "folded"]:
            lines.append(f"{Path(folded['checkpoint']).stem} {folded['device']}: bfloat16 first click "
                         f"{bf16['first_click_s']:.2f} s vs float32 {folded['first_click_s']:.2f} s "
                         f"({folded['first_click_s'] / bf16['first_click_s']:.2f}x)")
        if Path(folded["checkpoint"]).stem == "vit_b" and folded["device"] == "cpu":
            scaled = folded["first_click_s"] * folded["matmul_gflops"] / OFFICIAL["matmul_gflops"]
            lines.append(f"vit_b cpu float32 against the official implementation ({OFFICIAL['first_click_s']:.0f} s, "
                         f"{OFFICIAL['peak_rss_gb']} GB at {OFFICIAL['matmul_gflops']:.0f} GFLOP/s): first click "
                         f"{folded['first_click_s']:.1f} s here at {folded['matmul_gflops']:.0f} GFLOP/s, about "
                         f"{scaled:.0f} s scaled to that machine; peak memory {folded['peak_rss_gb']:.2f} GB")
    return lines


if __name__ == "__main__":
    sys.exit(main())
