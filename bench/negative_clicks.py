"""What one negative click does: the share of a leak it removes, for either method.

For every lesion of a dataset (nnU-Net layout, tumour label 2, e.g. ``volsam phantom DIR --seed
2031 --variation full``): one positive click at the lesion's centre; where the mask has a false
positive of at least 8 voxels, one negative click at the centre of the largest one. The clicks
go through the evaluation's predictor, the session users click in (SAM2-3dMed: each click is a
prompt on its slice followed by a propagation both ways). Printed per lesion and as means: the
share of that false positive removed, the share of the lesion's first mask kept, and Dice
before and after.

Run: ``python bench/negative_clicks.py [--model sam2-3dmed] [WEIGHTS] DATA [MAX_CASES]``
(model: sam3d-adapter by default; WEIGHTS: a checkpoint, or ``demo``, the default).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MIN_LEAK_VOXELS = 8


def main(argv: list[str]) -> None:
    import torch

    from volsam.clicks import SimulatedClick, largest_region, lesions_of, region_center
    from volsam.evaluation.predictors import PredictorOptions, load_predictor
    from volsam.io import read_image
    from volsam.metrics import dice

    model = "sam3d-adapter"
    if argv[:1] == ["--model"]:
        model, argv = argv[1], argv[2:]
    if len(argv) == 1 or (len(argv) == 2 and argv[1].isdigit()):
        argv = ["demo", *argv]
    weights, data = argv[0], Path(argv[1])
    limit = int(argv[2]) if len(argv) > 2 else None
    torch.set_grad_enabled(False)
    predictor = load_predictor(PredictorOptions(model=model, weights=weights, device="cpu"), "iterative")
    rows = []
    for image_path in sorted((data / "imagesTr").glob("*_0000.nii.gz"))[:limit]:
        case = image_path.name[:-len("_0000.nii.gz")]
        image = read_image(image_path)
        numbered, lesions = lesions_of(read_image(data / "labelsTr" / f"{case}.nii.gz").array == 2, image.spacing)
        for lesion in lesions:
            truth = numbered == lesion.number
            predictor.open(image)
            first = predictor.add_clicks([SimulatedClick(tuple(lesion.center_kji), True)]) > 0
            leak = largest_region(first & ~truth)
            if leak is None or leak.sum() < MIN_LEAK_VOXELS:
                continue
            centre = tuple(int(v) for v in region_center(leak, image.spacing))
            after = predictor.add_clicks([SimulatedClick(centre, False)]) > 0
            removed = 1 - (after & leak).sum() / leak.sum()
            kept = (after & truth).sum() / max(1, (first & truth).sum())
            rows.append((removed, kept, dice(first, truth), dice(after, truth)))
            print(f"{case} lesion {lesion.number}: {int(truth.sum())} voxels, leak {int(leak.sum())}: "
                  f"removed {removed:.2f}, lesion kept {kept:.2f}, Dice {rows[-1][2]:.3f} -> {rows[-1][3]:.3f}",
                  flush=True)
    if not rows:
        print("no lesion leaked")
        return
    mean = np.array(rows, float).mean(axis=0)
    print(f"{model}: lesions with a leak: {len(rows)}; leak removed {mean[0]:.3f}, lesion kept {mean[1]:.3f}, "
          f"Dice {mean[2]:.3f} -> {mean[3]:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
