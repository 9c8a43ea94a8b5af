"""Benchmark: SAM2-3dMed propagation (volsam) against the stock ``sam2`` video predictor.

Both run the same SAM2.1 model with the same weights on the same synthetic CT volume: one
positive click on the middle slice, then propagation to both ends (early stop off, so both do
every slice). volsam reads slices from the volume in memory through
:class:`volsam.sessions.propagation_session.PropagationSession`; the stock predictor gets what
its package requires, a folder of JPEG frames, and the time to write them is counted. Each
(method, slice count) runs in a fresh subprocess, so its peak RSS is its own; on CUDA the peak
allocated GPU memory is reported too.

Figures: slices per second and the ratio volsam / stock (target on CPU: >= 1, not slower;
with ``--repeats`` the fastest run of each configuration counts). The ratio is also given by
process CPU time, which a machine shared with other work disturbs less than wall time;
peak memory at the smallest and largest slice count, and how much more volsam's peak grows
than the input volume and the output mask do (target: at most 10 % of its peak at the smallest
count).

    python bench/sam2_propagation.py                         # hiera-tiny at 512 px, 50 and 200 slices
    python bench/sam2_propagation.py --slices 10 40 --image-size 256 --rows 256 --cols 256

Weights are random unless ``--sam2-checkpoint`` names an official SAM2.1 checkpoint: speed and
memory do not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing volsam
    sys.path.insert(0, str(REPO))
METHODS = ("volsam", "stock")
SAM2_CONFIG_FILES = {"tiny": "sam2.1_hiera_t.yaml", "small": "sam2.1_hiera_s.yaml",
                     "base_plus": "sam2.1_hiera_b+.yaml", "large": "sam2.1_hiera_l.yaml"}
CT_WINDOW = (-160.0, 240.0)  # soft tissue 40/400, volsam's CT default


def synthetic_ct(num_slices: int, rows: int, cols: int) -> np.ndarray:
    """int16 HU volume (k, j, i): noisy soft tissue with a brighter ellipsoid through the middle."""
    rng = np.random.default_rng(0)
    volume = rng.normal(40.0, 30.0, size=(num_slices, rows, cols)).astype(np.int16)
    j, i = np.mgrid[:rows, :cols]
    for k in range(num_slices):
        scale = max(0.0, 1.0 - abs(k - num_slices / 2) / (num_slices / 2 + 1))
        inside = ((j - rows / 2) / (rows / 6 + 1)) ** 2 + ((i - cols / 2) / (cols / 5 + 1)) ** 2 <= scale
        volume[k][inside] += 120
    return volume


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20  # KiB on Linux, bytes on macOS


# --- children ------------------------------------------------------------------------------------
def run_volsam(args, volume: np.ndarray, device) -> dict:
    from volsam.geometry import Volume
    from volsam.models.sam2_3dmed.checkpoint import load_model
    from volsam.models.sam2_3dmed.tracker import TrackerConfig
    from volsam.sessions.propagation_session import PropagationSession, PropagationSessionConfig

    model = load_model(sam2_checkpoint=args.weights_file, image_size=args.image_size, device=device)
    loaded = peak_rss_mb()
    start, cpu_start = time.perf_counter(), time.process_time()
    session = PropagationSession(model, PropagationSessionConfig(tracker=TrackerConfig(early_stop_after=0)))
    buffer = np.zeros(volume.shape, dtype=np.uint8)
    session.open_volume(Volume.from_spacing(volume), buffer)
    middle = volume.shape[0] // 2
    session.add_point((volume.shape[2] / 2, volume.shape[1] / 2, middle), space="ijk")
    outcome = session.run()
    synchronize(device)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "slices": outcome.units_done + 1,
            "rss_after_model_mb": loaded,
            "mask_voxels": int(np.count_nonzero(buffer))}


def run_stock(args, volume: np.ndarray, device) -> dict:
    import torch
    from PIL import Image
    from sam2.build_sam import build_sam2_video_predictor

    predictor = build_sam2_video_predictor(
        f"configs/sam2.1/{SAM2_CONFIG_FILES[args.variant]}", ckpt_path=args.weights_file, device=str(device),
        hydra_overrides_extra=[f"++model.image_size={args.image_size}"])
    loaded = peak_rss_mb()
    start, cpu_start = time.perf_counter(), time.process_time()
    buffer = np.zeros(volume.shape, dtype=np.uint8)
    with tempfile.TemporaryDirectory() as frames:
        low, high = CT_WINDOW
        for k, plane in enumerate(volume):  # the package reads JPEG folders: <index>.jpg
            grey = np.clip((plane.astype(np.float32) - low) / (high - low) * 255.0, 0, 255).astype(np.uint8)
            Image.fromarray(grey).convert("RGB").save(Path(frames) / f"{k:05d}.jpg", quality=95)
        with torch.inference_mode():
            state = predictor.init_state(video_path=frames)
            middle = volume.shape[0] // 2
            predictor.add_new_points_or_box(state, middle, 1, points=[[volume.shape[2] / 2, volume.shape[1] / 2]],
                                            labels=[1])
            done = set()
            for reverse in (False, True):
                for index, _, masks in predictor.propagate_in_video(state, start_frame_idx=middle, reverse=reverse):
                    buffer[index] = (masks[0, 0] > 0).cpu().numpy()
                    done.add(index)
    synchronize(device)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "slices": len(done), "rss_after_model_mb": loaded,
            "mask_voxels": int(np.count_nonzero(buffer))}


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def child(args) -> None:
    import torch

    from volsam.devices import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    volume = synthetic_ct(args.num_slices, args.rows, args.cols)
    result = (run_volsam if args.child == "volsam" else run_stock)(args, volume, device)
    result.update(method=args.child, num_slices=args.num_slices, peak_rss_mb=peak_rss_mb(),
                  volume_mb=volume.nbytes / 2**20, mask_mb=volume.size / 2**20, threads=torch.get_num_threads(),
                  device=str(device))
    if device.type == "cuda":
        result["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    print("RESULT " + json.dumps(result))


# --- parent --------------------------------------------------------------------------------------
def make_weights(args, folder: Path) -> str:
    """An official-format checkpoint ({"model": state_dict}) with seeded random weights."""
    import torch

    from volsam.models.sam2_3dmed.build import build_sam2_base
    from volsam.models.sam2_3dmed.config import SAM2Architecture

    torch.manual_seed(0)
    model = build_sam2_base(SAM2Architecture(variant=args.variant, image_size=args.image_size))
    path = folder / f"random_sam2.1_{args.variant}.pt"
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def run_child(args, method: str, num_slices: int, weights: str) -> dict:
    command = [sys.executable, __file__, "--child", method, "--num-slices", str(num_slices),
               "--weights-file", weights, "--variant", args.variant, "--image-size", str(args.image_size),
               "--rows", str(args.rows), "--cols", str(args.cols), "--device", args.device,
               "--threads", str(args.threads or 0)]
    env = dict(os.environ, TQDM_DISABLE="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(REPO), check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{method} with {num_slices} slices failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def report(results: list[dict], counts: list[int]) -> None:
    by = {(r["method"], r["num_slices"]): r for r in results}
    print(f"\n{'method':8} {'slices':>6} {'seconds':>9} {'CPU s':>9} {'slices/s':>9} {'peak RSS MB':>12} "
          f"{'volume+mask MB':>15}"
          + ("  CUDA peak MB" if any("cuda_peak_allocated_mb" in r for r in results) else ""))
    for r in results:
        line = (f"{r['method']:8} {r['num_slices']:>6} {r['seconds']:>9.2f} {r['cpu_seconds']:>9.2f} "
                f"{r['slices'] / r['seconds']:>9.3f} "
                f"{r['peak_rss_mb']:>12.1f} {r['volume_mb'] + r['mask_mb']:>15.1f}")
        if "cuda_peak_allocated_mb" in r:
            line += f"  {r['cuda_peak_allocated_mb']:>12.1f}"
        print(line)
    print()
    for n in counts:
        ours, stock = by[("volsam", n)], by[("stock", n)]
        speed = (ours["slices"] / ours["seconds"]) / (stock["slices"] / stock["seconds"])
        work = (ours["slices"] / ours["cpu_seconds"]) / (stock["slices"] / stock["cpu_seconds"])
        print(f"{n} slices: speed volsam/stock = {speed:.2f}x by wall time, {work:.2f}x by CPU time "
              f"(target on CPU: >= 1); peak RSS volsam/stock = {ours['peak_rss_mb'] / stock['peak_rss_mb']:.2f}")
    small, large = min(counts), max(counts)
    for method in METHODS:
        a, b = by[(method, small)], by[(method, large)]
        growth = b["peak_rss_mb"] - a["peak_rss_mb"]
        data = (b["volume_mb"] + b["mask_mb"]) - (a["volume_mb"] + a["mask_mb"])
        excess = growth - data
        line = (f"{method}: peak RSS {small} -> {large} slices grows {growth:.1f} MB; volume+mask grow {data:.1f} MB; "
                f"beyond them {excess:+.1f} MB = {100 * excess / a['peak_rss_mb']:+.1f} % of the peak at {small}")
        if method == "volsam":
            line += f" (target: <= +10 %: {'met' if excess <= 0.10 * a['peak_rss_mb'] else 'NOT met'})"
        if "cuda_peak_allocated_mb" in a:
            line += (f"; CUDA peak {a['cuda_peak_allocated_mb']:.1f} -> {b['cuda_peak_allocated_mb']:.1f} MB")
        print(line)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=sorted(SAM2_CONFIG_FILES), default="tiny")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--slices", type=int, nargs="+", default=[50, 200], help="slice counts to compare")
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--cols", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration; the fastest counts")
    parser.add_argument("--sam2-checkpoint", help="official SAM2.1 checkpoint (default: random weights)")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--num-slices", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--weights-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if any(n < 2 for n in args.slices):
        raise SystemExit("--slices: every count must be at least 2")
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    counts = sorted(set(args.slices))
    with tempfile.TemporaryDirectory() as folder:
        weights = args.sam2_checkpoint or make_weights(args, Path(folder))
        print(f"SAM2.1 {args.variant} at {args.image_size} px, volume {args.rows} x {args.cols} per slice, "
              f"device {args.device}, threads {args.threads or 'default'}, "
              f"weights {'random' if not args.sam2_checkpoint else args.sam2_checkpoint}", flush=True)
        best: dict[tuple[str, int], dict] = {}
        for repeat in range(args.repeats):
            for position, n in enumerate(counts):
                # Alternate the order so that a drifting machine load favours neither method.
                order = METHODS if (position + repeat) % 2 == 0 else METHODS[::-1]
                for method in order:
                    result = run_child(args, method, n, weights)
                    print(f"  {method:7} {n:4} slices: {result['seconds']:.1f} s, peak RSS "
                          f"{result['peak_rss_mb']:.0f} MB", flush=True)
                    key = (method, n)
                    if key not in best or result["seconds"] < best[key]["seconds"]:
                        best[key] = result
    report([best[(m, n)] for n in counts for m in METHODS], counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
