"""How much SAM2-3dMed's propagation reads its memory: Dice with it and with it zeroed.

For every lesion of a dataset (nnU-Net layout, tumour label 2, e.g. ``volsam phantom DIR --seed
2031 --variation full``): one click at the lesion's centre through the evaluation's predictor
(a prompt on its slice, then a propagation both ways), once as users get it and once with every
memory the propagated slices read (the memory encoder's features and the object pointers)
replaced by zeros. A model that tracks its object loses Dice without its memory; one that
segments each slice's most lesion-like blob and lets the kept-object rule chain them does not.
Printed per lesion and as means: Dice both ways, the share of lesions whose mask changed and
the ratio of the means.

Run: ``python bench/sam2_memory_use.py [WEIGHTS] DATA [MAX_CASES]`` (WEIGHTS: a checkpoint, or
``demo``, the default).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@contextlib.contextmanager
def memory_zeroed():
    """Propagation with every memory it reads zeroed (this benchmark's ablation only)."""
    import torch

    from volsam.models.sam2_3dmed import tracker

    original = tracker.sam2_memory_view

    def zeroed_view(conditioning, recent, position_encoding):
        view = original(conditioning, recent, position_encoding)
        for entries in view.values():
            for entry in entries.values():
                if entry["maskmem_features"] is not None:
                    entry["maskmem_features"] = torch.zeros_like(entry["maskmem_features"])
                entry["obj_ptr"] = torch.zeros_like(entry["obj_ptr"])
        return view

    tracker.sam2_memory_view = zeroed_view
    try:
        yield
    finally:
        tracker.sam2_memory_view = original


def main(argv: list[str]) -> None:
    import torch

    from volsam.clicks import SimulatedClick, lesions_of
    from volsam.evaluation.predictors import PredictorOptions, load_predictor
    from volsam.io import read_image
    from volsam.metrics import dice

    if len(argv) == 1 or (len(argv) == 2 and argv[1].isdigit()):
        argv = ["demo", *argv]
    weights, data = argv[0], Path(argv[1])
    limit = int(argv[2]) if len(argv) > 2 else None
    torch.set_grad_enabled(False)
    predictor = load_predictor(PredictorOptions(model="sam2-3dmed", weights=weights, device="cpu"), "center")
    rows = []
    for image_path in sorted((data / "imagesTr").glob("*_0000.nii.gz"))[:limit]:
        case = image_path.name[:-len("_0000.nii.gz")]
        image = read_image(image_path)
        numbered, lesions = lesions_of(read_image(data / "labelsTr" / f"{case}.nii.gz").array == 2, image.spacing)
        for lesion in lesions:
            truth = numbered == lesion.number
            click = [SimulatedClick(tuple(lesion.center_kji), True)]
            predictor.open(image)
            with_memory = predictor.add_clicks(click) > 0
            with memory_zeroed():
                predictor.open(image)
                without = predictor.add_clicks(click) > 0
            rows.append((dice(with_memory, truth), dice(without, truth), not np.array_equal(with_memory, without)))
            print(f"{case} lesion {lesion.number}: Dice {rows[-1][0]:.3f} with memory, {rows[-1][1]:.3f} without",
                  flush=True)
    mean = np.array(rows, float).mean(axis=0)
    print(f"sam2-3dmed {weights}: {len(rows)} lesions; Dice {mean[0]:.3f} with memory, {mean[1]:.3f} zeroed "
          f"(ratio {mean[1] / max(mean[0], 1e-9):.3f}); masks changed by zeroing: {mean[2]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
