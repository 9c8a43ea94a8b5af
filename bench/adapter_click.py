"""Click latency, its stage breakdown and peak memory of the 3DSAM-adapter session.

For each configuration (model size x device x patch path x precision) a fresh Python process
loads the model from a safetensors checkpoint (random weights, no optimizer states), opens a
synthetic CT volume of 512 x 512 x 300 voxels (int16, 0.8 x 0.8 x 2 mm) in an
:class:`AdapterSession` and measures:

* first click: crop sampling + image encoder + prompt encoder + decoder + the map back
  (tiny models after one warm-up pass, full-size ones without);
* refinement clicks inside the crop (cached encoder output), positive and negative in turn:
  the median, the mean stage breakdown (its share is the ``host_share_refine`` figure), and the
  last against the first (a refinement costs the same whatever the number of clicks before it);
* per click, the stages: preparation (crop sampling and intensity preset on the device),
  network (image encoder, prompt encoder, decoder), post-processing (negative-click rule, the
  map back onto the volume grid, threshold, kept object), copy back (the crop box's mask to
  the host), history (writing it into the caller's buffer with its undo patch) and the rest
  (click conversion, crop geometry, Python); the share that is not the network, in percent;
  and the volume's one copy to the device when it is opened;
* the patch stage alone (upsample -> 2D patch embedding -> depth conv, or its folded 3D conv);
* peak resident memory of that process (VmHWM; CUDA: also peak allocated GPU memory).

On CUDA every stage is timed between two synchronisations (which the session itself does not
make; ``bench/stages.py``), so the stages add up to a little more than an untimed click. The
machine's float32
matmul rate and load average are printed beside every row: timings scale with them, and
shared machines vary. The official implementation needs about 150 s and 7.2 GB for one click
of the full-size model in float32 on a 2-core CPU (spec, performance notes).

    python bench/adapter_click.py                      # the CPU target figures (tiny and vit_b)
    python bench/adapter_click.py --sizes tiny         # quick
    python bench/adapter_click.py --devices cuda --sizes vit_b --precisions bfloat16,float32 --warmup

With no arguments the last line is ``host_share_first=<percent> host_share_refine=<percent>``:
the share of a full-size float32 first and refinement click that is not the network.
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

from stages import StageClock, format_stages, load_average, matmul_gflops

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = {"first_click_s": 150.0, "peak_rss_gb": 7.2, "matmul_gflops": 165.0}
#: The session's stages as the bench times them (see the docstring).
STAGES = ("preparation", "network", "post-processing", "copy back", "history")
VOLUME_SHAPE = (300, 512, 512)  # k, j, i
VOLUME_SPACING = (0.8, 0.8, 2.0)  # i, j, k mm


def synthetic_volume():
    """A 512 x 512 x 300 CT-like int16 volume at 0.8 x 0.8 x 2 mm: soft tissue with a 15 mm
    'tumour' in the middle (built axis by axis: no full-size coordinate grids)."""
    import numpy as np

    from volsam.geometry import Volume

    depth, rows, cols = VOLUME_SHAPE
    sx, sy, sz = VOLUME_SPACING
    k = ((np.arange(depth, dtype=np.float32) - depth // 2) * sz) ** 2
    j = ((np.arange(rows, dtype=np.float32) - rows // 2) * sy) ** 2
    i = ((np.arange(cols, dtype=np.float32) - cols // 2) * sx) ** 2
    inside = (k[:, None, None] + j[None, :, None] + i[None, None, :]) < 15.0 ** 2
    hounsfield = np.random.default_rng(0).normal(40, 10, VOLUME_SHAPE).astype(np.int16)
    hounsfield[inside] += 50
    return Volume.from_spacing(hounsfield, VOLUME_SPACING, origin_ras=(-204.8, -204.8, -300.0))


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
    clock = StageClock(device, STAGES)
    clock.sync()
    begin = time.perf_counter()
    session.open_volume(volume)
    clock.sync()
    open_s = time.perf_counter() - begin
    clock.wrap(session, "crop_image", "preparation")
    clock.wrap(session.predictor, "embed", "network")
    clock.wrap(session.predictor, "predict", "network")
    clock.wrap(session, "_negative_rule", "post-processing")
    clock.wrap(session, "_map_to_volume", "post-processing")
    clock.wrap(session, "_to_host", "copy back")
    clock.wrap(session._history, "commit", "history")
    center = volume.ijk_to_ras_points(np.array([VOLUME_SHAPE[2] // 2, VOLUME_SHAPE[1] // 2, VOLUME_SHAPE[0] // 2],
                                               float))

    rate_before = matmul_gflops(spec["threads"])
    first = clock.measure(lambda: session.add_point(center))
    rate_after = matmul_gflops(spec["threads"])
    refinements = []
    for step in range(spec["repeats"]):
        point, positive = center + np.array([2.0 + step, -1.0, 1.5]), step % 2 == 0
        refinements.append(clock.measure(lambda point=point, positive=positive: session.add_point(point, positive)))
    crop_image = session.crop_image(session._grid(session.prompts.crops[0]))
    encoder_s = clock.measure(lambda: session.predictor.embed(crop_image))["total_s"]
    crop = crop_image[None, None]
    encoder = session.predictor.model.image_encoder
    with torch.inference_mode(), session.predictor._context():
        encoder.embed_patches(crop)  # warm-up
        patch_s = clock.measure(lambda: encoder.embed_patches(crop))["total_s"]
    median = sorted(refinements, key=lambda r: r["total_s"])[len(refinements) // 2]
    # The refinements' stages summed: a share that one click's noise on a busy machine moves less.
    refinement = {"total_s": sum(r["total_s"] for r in refinements) / len(refinements),
                  "stages": {name: sum(r["stages"][name] for r in refinements) / len(refinements)
                             for name in refinements[0]["stages"]}}
    refinement["host_share"] = 1.0 - refinement["stages"]["network"] / refinement["total_s"]
    result = {
        "load_s": load_s, "open_s": open_s, "first": first, "refinements": refinements,
        "first_click_s": first["total_s"], "encoder_s": encoder_s, "refinement_s": median["total_s"],
        "refinement": refinement, "patch_stage_s": patch_s, "peak_rss_gb": peak_rss_gb(),
        "matmul_gflops": (rate_before + rate_after) / 2, "load": load_average(),
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
    parser.add_argument("--paths", default="folded", help="folded, unfolded or both (the patch-path comparison)")
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=6, help="refinement clicks per configuration")
    parser.add_argument("--warmup", action="store_true",
                        help="warm every model up before its first click (default: tiny models only)")
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
          f"(the spec's official timing was taken at about 165); load average {load_average():.1f}; "
          f"volume {VOLUME_SHAPE[2]} x {VOLUME_SHAPE[1]} x {VOLUME_SHAPE[0]} int16", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        checkpoints = {}
        for size, device, path, precision in configurations(args.sizes.split(","), devices, args.paths.split(","),
                                                           args.precisions.split(",")):
            if size not in checkpoints:
                checkpoints[size] = str(write_checkpoint(size, Path(folder)))
            # Tiny models are timed after a warm-up pass (otherwise one-time kernel set-up is all
            # they measure); full-size first clicks include it, as a user's first click does,
            # unless --warmup (the GPU target is a warm session's first click on a new crop).
            spec = {"checkpoint": checkpoints[size], "device": device, "patch_path": path, "precision": precision,
                    "threads": args.threads, "repeats": args.repeats, "warmup": args.warmup or size == "tiny"}
            result = run_child(spec)
            rows.append({**spec, **result})
            for line in format_row(rows[-1]):
                print(line, flush=True)
    print()
    for line in ratios(rows):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    target = [r for r in rows if "error" not in r and Path(r["checkpoint"]).stem == "vit_b" and r["device"] == "cpu"
              and r["patch_path"] == "folded" and r["precision"] == "float32"]
    if target:
        print(f"host_share_first={100 * target[0]['first']['host_share']:.2f} "
              f"host_share_refine={100 * target[0]['refinement']['host_share']:.2f}")
    return 0


def format_row(row: dict) -> list[str]:
    name = f"{Path(row['checkpoint']).stem:6s} {row['device']:4s} {row['patch_path']:8s} {row['precision']:8s}"
    if "error" in row:
        return [f"{name}  error: {row['error']}"]
    text = (f"{name}  first click {row['first_click_s']:7.2f} s (encoder {row['encoder_s']:6.2f})  "
            f"refinement {row['refinement_s']:6.3f} s  patch stage {row['patch_stage_s']:6.3f} s  "
            f"peak RSS {row['peak_rss_gb']:5.2f} GB  (matmul {row['matmul_gflops']:.0f} GFLOP/s, "
            f"load {row['load']:.1f})")
    if "peak_cuda_gb" in row:
        text += f"  peak CUDA {row['peak_cuda_gb']:5.2f} GB"
    lines = [text, f"    open volume (one copy to the device): {1000 * row['open_s']:.1f} ms",
             f"    first click      {format_stages(row['first'])} (load {row['first']['load']:.1f})"]
    for n, click in enumerate(row["refinements"], start=2):
        lines.append(f"    click {n} ({'+' if n % 2 == 0 else '-'})      {format_stages(click)}")
    lines.append(f"    refinement mean  {format_stages(row['refinement'])}")
    return lines


def ratios(rows: list[dict]) -> list[str]:
    lines = []
    done = [r for r in rows if "error" not in r]
    for row in done:
        label = f"{Path(row['checkpoint']).stem} {row['device']} {row['patch_path']} {row['precision']}"
        times = [r["total_s"] for r in row["refinements"]]
        lines.append(f"{label}: refinement / first click = {row['refinement_s'] / row['first_click_s']:.1%}; "
                     f"not network: first {row['first']['host_share']:.1%}, refinement "
                     f"{row['refinement']['host_share']:.1%}; last / first refinement "
                     f"{times[-1] / times[0]:.2f} ({len(times)} refinements)")
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
                         f"({folded['first_click_s'] / bf16['first_click_s']:.2f}x); refinement "
                         f"{1000 * bf16['refinement_s']:.1f} vs {1000 * folded['refinement_s']:.1f} ms")
        if Path(folded["checkpoint"]).stem == "vit_b" and folded["device"] == "cpu":
            scaled = folded["first_click_s"] * folded["matmul_gflops"] / OFFICIAL["matmul_gflops"]
            lines.append(f"vit_b cpu float32 against the official implementation ({OFFICIAL['first_click_s']:.0f} s, "
                         f"{OFFICIAL['peak_rss_gb']} GB at {OFFICIAL['matmul_gflops']:.0f} GFLOP/s): first click "
                         f"{folded['first_click_s']:.1f} s here at {folded['matmul_gflops']:.0f} GFLOP/s, about "
                         f"{scaled:.0f} s scaled to that machine; peak memory {folded['peak_rss_gb']:.2f} GB")
    return lines


if __name__ == "__main__":
    sys.exit(main())
