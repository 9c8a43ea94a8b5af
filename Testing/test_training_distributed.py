"""Two CPU processes through torchrun (DistributedDataParallel over gloo) on a tiny configuration."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

from volsam.phantoms import PhantomConfig, write_phantom_dataset


def test_two_process_torchrun_training(tmp_path):
    data = tmp_path / "data"
    config = PhantomConfig(size_ijk=(48, 48, 32), spacing_ijk=(3.0, 3.0, 4.0), lesions_per_case=(1, 1),
                           lesion_diameter_median_mm=30.0, lesion_diameter_range_mm=(20.0, 40.0))
    write_phantom_dataset(data, 4, seed=9, config=config)
    cases = [f"phantom_{i:03d}" for i in range(4)]
    (data / "splits_final.json").write_text(json.dumps([{"train": cases, "val": cases[:1]}]))
    out = tmp_path / "run"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "volsam", "train", "--model", "sam3d-adapter", "--config", "tiny", "--train-encoder",
               "--data", str(data), "--label", "tumor", "--out", str(out), "--spacing", "3", "--epochs", "2",
               "--workers", "0", "--device", "cpu", "--no-progress"]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    # 4 cases shared by 2 processes, batch 1: 2 optimizer steps per epoch
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert (out / "last.safetensors").is_file() and (out / "resume.pt").is_file()
