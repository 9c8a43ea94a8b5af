"""The demo models (size, provenance, loading by the name ``demo``) and ``volsam demo``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from volsam.demo import save_figure
from volsam.geometry import Volume

DEMO_MODELS = Path(__file__).resolve().parents[1] / "volsam" / "demo_models"
FILES = {"sam3d-adapter": DEMO_MODELS / "sam3d_adapter_demo.safetensors",
         "sam2-3dmed": DEMO_MODELS / "sam2_3dmed_demo.safetensors"}


def test_figure_shows_three_planes(tmp_path):
    array = np.full((20, 30, 40), 40.0, np.float32)
    truth = np.zeros(array.shape, bool)
    truth[6:14, 10:20, 15:28] = True
    array[truth] = 90.0
    volume = Volume.from_spacing(array, (1.0, 1.2, 2.5))
    predicted = np.roll(truth, 1, axis=2)
    save_figure(volume, {"sam3d-adapter": predicted, "sam2-3dmed": truth}, truth, (10, 15, 21), tmp_path / "f.png")
    from matplotlib.image import imread

    image = imread(tmp_path / "f.png")
    assert image.shape[0] > 300 and image.shape[1] > 900


def test_demo_models_are_small_and_record_their_command():
    from volsam.models.sam2_3dmed.checkpoint import read_checkpoint
    from volsam.models.sam3d_adapter.checkpoints import project_parts
    from volsam.weights.loading import load_checkpoint

    readme = (DEMO_MODELS / "README.md").read_text()
    provenance = {"sam3d-adapter": project_parts(load_checkpoint(FILES["sam3d-adapter"]))[2],
                  "sam2-3dmed": read_checkpoint(FILES["sam2-3dmed"])[0].provenance}
    for model, path in FILES.items():
        assert path.stat().st_size <= 20 * 2 ** 20
        command = provenance[model]["command"]
        assert command.startswith("volsam train --model " + model) and command in readme
        # Trained from scratch, possibly in stages: each stage starts from the last one's weights
        # (--init), and the README's first stage for the model starts from random weights.
        initialisation = provenance[model]["initialisation"]
        assert initialisation == "random (trained from scratch)" or initialisation.endswith("(a run of this project)")
        stages = [line for line in readme.splitlines() if line.startswith("volsam train --model " + model)]
        assert "--init" not in stages[0]
        assert all("checkpoint" not in stage for stage in stages)


def test_volsam_demo_runs_both_models(tmp_path):
    result = subprocess.run([sys.executable, "-m", "volsam", "demo", "--out", str(tmp_path), "--device", "cpu"],
                            check=False, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    dices = dict(re.findall(r"^(sam3d-adapter|sam2-3dmed): Dice ([0-9.]+)", result.stderr, flags=re.MULTILINE))
    assert set(dices) == {"sam3d-adapter", "sam2-3dmed"}
    assert float(dices["sam3d-adapter"]) > 0.6, result.stderr
    assert float(dices["sam2-3dmed"]) > 0.6, result.stderr
    for name in ("phantom.nii.gz", "phantom_labels.nii.gz", "sam3d_adapter_mask.nii.gz", "sam2_3dmed_mask.nii.gz",
                 "demo.png"):
        assert (tmp_path / name).is_file()
