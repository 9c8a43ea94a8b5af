"""``volsam train``: fine-tune (or train from scratch) either model on a labelled dataset.

Multi-GPU / multi-node: start it through torchrun, e.g.
``torchrun --nproc-per-node 4 -m volsam train ...`` (DistributedDataParallel; nccl on GPUs,
gloo on CPUs).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ..methods import method_names


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="fine-tune SAMAdapt3D / SAM2Volume on your own labelled data",
        description="Train on a dataset in the nnU-Net v2 / MSD layout (dataset.json, imagesTr, labelsTr, optional "
                    "splits_final.json). Writes last/best checkpoints, log.csv and a cache of preprocessed volumes "
                    "to --out. Multi-GPU: torchrun --nproc-per-node N -m volsam train ...")
    parser.add_argument("--model", required=True, choices=method_names())
    parser.add_argument("--data", required=True, type=Path, help="dataset folder (holds dataset.json)")
    parser.add_argument("--label", required=True, help="target label: a value (2) or a name from dataset.json (tumor)")
    parser.add_argument("--out", required=True, type=Path, help="run folder (created)")
    parser.add_argument("--config", help="model configuration: sam3d-adapter vit_b (default), tiny, tiny-demo; "
                                         "sam2-3dmed tiny (default), small, base_plus, large, tiny-test, tiny-demo")
    parser.add_argument("--sam-checkpoint", type=Path, help="SAM ViT-B checkpoint (sam_vit_b_01ec64.pth) that "
                                                            "initialises and freezes the adapter's encoder")
    parser.add_argument("--sam2-checkpoint", type=Path, help="official SAM2.1 checkpoint for the frozen image encoder")
    parser.add_argument("--init", type=Path, help="start from a checkpoint of this project (same --config), e.g. to "
                                                  "fine-tune a trained model further")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="epochs (one sample per training case each); default 500 for "
                                                   "sam3d-adapter (the paper's), 100 for sam2-3dmed")
    length.add_argument("--steps", type=int, help="optimizer steps instead of epochs")
    parser.add_argument("--crop", type=int, help="crop size in voxels (sam3d-adapter; the configuration's by default, "
                                                 "128 for vit_b)")
    parser.add_argument("--batch-size", type=int, default=1, help="samples per optimizer step (default 1)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (bfloat16, or float16 with loss scaling "
                                                           "on GPUs without bfloat16)")
    parser.add_argument("--grad-checkpoint", action="store_true", help="activation checkpointing (less memory)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--train-encoder", action="store_true",
                        help="also train the normally frozen encoder (off by default: fine-tuning keeps it frozen as "
                             "the papers do; for models trained from scratch)")
    data = parser.add_argument_group("data")
    data.add_argument("--splits", type=Path, help="splits file (default: splits_final.json or splits.json in --data, "
                                                  "else a fixed 70/10/20 train/val/test split)")
    data.add_argument("--fold", type=int, default=0, help="fold of the splits file (default 0)")
    data.add_argument("--spacing", type=float, default=1.0, help="sam3d-adapter resampling in mm (default 1, the paper's)")
    data.add_argument("--preset", default="auto", choices=("auto", "kits", "lits", "pancreas", "colon", "ct"),
                      help="sam3d-adapter clip range and z-score: the paper's dataset constants, ct (their mean, the "
                           "segment default), or auto (from the training foreground, nnU-Net style)")
    data.add_argument("--augmentation", choices=("zoom3d", "inplane", "robust", "none"),
                      help="augmentation (sam3d-adapter default: the preset's, zoom3d for auto; sam2-3dmed: none "
                           "or robust); robust: zoom per axis plus random contrast, noise and blur")
    data.add_argument("--reverse-contrast", type=float, default=0.0, metavar="SHARE",
                      help="share of training samples (0 to 1, default 0) whose lesion's contrast against the "
                           "tissue around it is reversed, so hypo- and hyperdense lesions are learnt alike")
    data.add_argument("--object-copies", type=float, default=0.0, metavar="SHARE",
                      help="share of sam2-3dmed clips (0 to 1, default 0) with a copy of the object pasted beside "
                           "it on every slice, which only the model's memory of the prompted slice tells apart")
    data.add_argument("--lesion-sampling", default="case", choices=("case", "size"),
                      help="which lesion a training sample is centred on: case (each training case once per "
                           "epoch, each of its lesions equally often; default) or size (a size bin, < 10, 10-20, "
                           "20-30 or >= 30 mm, drawn uniformly, then one of its lesions)")
    data.add_argument("--clicks", dest="click_protocol", default="3dsam", choices=("3dsam", "lesion", "iterative"),
                      help="sam3d-adapter training clicks: 3dsam (the paper's: 10 foreground + 20 random, target = all "
                           "foreground of the crop), lesion (one lesion is the target, labelled clicks) or iterative "
                           "(lesion, plus the iterative protocol's corrective click on the model's own prediction)")
    data.add_argument("--clip-length", type=int, default=8, help="sam2-3dmed slices per clip (default 8)")
    data.add_argument("--window", choices=("soft_tissue", "lung", "bone", "percentile"),
                      help="sam2-3dmed intensity window (default: soft_tissue for CT, percentile otherwise)")
    data.add_argument("--cache-dir", type=Path, help="cache of preprocessed volumes (default: OUT/cache)")
    data.add_argument("--max-validation-cases", type=int, help="validate on at most this many cases")
    parser.add_argument("--lr", type=float, help="learning rate (default: 4e-4 for sam3d-adapter; 1e-4 for the SAM2 "
                                                 "parts of sam2-3dmed, whose new heads train at 1e-3 or at --lr "
                                                 "if higher)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and sampling (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="data-loading processes (default 1; 0 loads in the "
                                                               "training process)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--export-official", action="store_true",
                        help="also write last/best.pth.tar in the official 3DSAM-adapter layout (vit_b only)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.set_defaults(func=run)


def check_arguments(args) -> None:
    """Paths and numbers checked before torch loads (a typo is reported at once)."""
    from .checks import check_input_file, check_positive_number

    if not args.data.is_dir():
        raise ValueError(f"--data {args.data}: no such folder; expected a dataset folder holding dataset.json "
                         "(nnU-Net v2 / MSD layout)")
    if not (args.data / "dataset.json").is_file():
        raise ValueError(f"--data {args.data}: no dataset.json in it; expected a dataset folder in the nnU-Net v2 / "
                         "MSD layout (dataset.json, imagesTr, labelsTr)")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file; expected a folder for the run")
    for option, path in (("--init", args.init), ("--sam-checkpoint", args.sam_checkpoint),
                         ("--sam2-checkpoint", args.sam2_checkpoint), ("--splits", args.splits)):
        if path is not None:
            check_input_file(path, option, "an existing file")
    check_positive_number(args.lr, "--lr")
    check_positive_number(args.spacing, "--spacing")


def run(args) -> int:
    check_arguments(args)
    from ..training import TrainingConfig, train

    config = TrainingConfig(
        model=args.model, data=args.data, label=args.label, out=args.out, config=args.config,
        sam_checkpoint=args.sam_checkpoint, sam2_checkpoint=args.sam2_checkpoint, init=args.init, epochs=args.epochs,
        steps=args.steps, crop=args.crop, batch_size=args.batch_size, amp=args.amp,
        grad_checkpoint=args.grad_checkpoint, resume=args.resume, train_encoder=args.train_encoder,
        split_file=args.splits, fold=args.fold, spacing_mm=args.spacing, preset=args.preset,
        augmentation=args.augmentation, click_protocol=args.click_protocol, lesion_sampling=args.lesion_sampling,
        reverse_contrast=args.reverse_contrast, object_copies=args.object_copies, clip_length=args.clip_length,
        window=args.window, learning_rate=args.lr, seed=args.seed, workers=args.workers, device=args.device,
        cache_dir=args.cache_dir, max_validation_cases=args.max_validation_cases,
        export_official=args.export_official, progress=args.progress,
        command="volsam " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    result = train(config)
    if result.history:
        last = result.history[-1]
        print(f"trained {result.steps_done} steps ({result.epochs_done} epochs): last loss {last['train_loss']:.4f}, "
              f"validation Dice {last['val_dice']:.4f}; checkpoints in {result.out}", file=sys.stderr)
    return 0
