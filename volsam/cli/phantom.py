"""``volsam phantom OUT_DIR``: write synthetic CT phantoms in nnU-Net v2 raw layout.

OUT_DIR receives imagesTr/, labelsTr/, dataset.json and phantoms.json (per-case lesion
centres in RAS mm and voxel ijk, diameters, contrasts, rims; see ``volsam.phantoms``).
``--variation full`` randomises every case's scanner look and lesion kinds; ``--modality mr``
gives MR-like intensities.
"""

from __future__ import annotations

from . import number_list

#: Grid rotation used by --oblique: degrees about R, then A, then S.
OBLIQUE_ROTATION_DEG_RAS = (12.0, -8.0, 20.0)
#: The largest phantom written: 512^3 voxels (a large CT) already needs several GiB to generate.
MAX_PHANTOM_VOXELS = 512 ** 3
#: The grid options (PhantomConfig field -> option) that --variation full draws per case.
GRID_OPTIONS = {"spacing_ijk": "--spacing", "size_ijk": "--size", "rotation_deg_ras": "--oblique",
                "flip_ijk": "--flip"}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "phantom", help="write synthetic CT phantoms with organ and tumour labels (nnU-Net layout)",
        description="Write synthetic CT-like phantoms (HU) with organ (1) and tumour (2) labels as an "
                    "nnU-Net v2 raw dataset, plus phantoms.json with every lesion's centre and size.")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="dataset folder (created if missing)")
    parser.add_argument("--cases", type=int, default=4, help="number of cases (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--spacing", type=number_list(3, "--spacing"), metavar="X,Y,Z",
                        help="voxel spacing along i, j, k in mm (default: 1.5,1.5,2.5)")
    parser.add_argument("--size", type=number_list(3, "--size"), metavar="I,J,K",
                        help="image size in voxels (default: 96,96,64)")
    parser.add_argument("--oblique", action="store_true",
                        help=f"rotate the voxel grid by {OBLIQUE_ROTATION_DEG_RAS} degrees about R, A, S")
    parser.add_argument("--flip", nargs="?", const="i", metavar="AXES",
                        help="reverse the index order of these axes (letters of 'ijk'; bare --flip: i, "
                             "a mirrored, left-handed grid)")
    parser.add_argument("--variation", choices=("none", "full"), default="none",
                        help="full: every case draws its own scanner look and lesion kinds (domain randomisation: "
                             "spacing 0.7-1 mm in-plane and 1-3 mm slices, oblique and flipped grids, noise 5-25 HU, "
                             "blur, organ intensities and texture, hypo- and hyperdense lesions of 15-45 HU, rims "
                             "around necrotic cores, clusters, lesions at the organ's edge); default: none")
    parser.add_argument("--modality", choices=("ct", "mr"), default="ct",
                        help="mr: MR-like intensities in arbitrary units (no HU, bias field); default: ct")
    parser.set_defaults(func=run)


def check_arguments(args) -> None:
    """What can be checked before numpy and the generator load (nothing is created before)."""
    from pathlib import Path

    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"OUT_DIR {out} is a file; expected a folder for the dataset (new, empty, or an earlier "
                         "phantom dataset to replace)")
    if args.cases < 1:
        raise ValueError(f"--cases must be a whole number >= 1, got {args.cases}")
    if args.seed < 0:
        raise ValueError(f"--seed must be a whole number >= 0, got {args.seed}")
    if args.spacing is not None and min(args.spacing) <= 0:
        raise ValueError(f"--spacing needs three positive mm values, got {','.join(f'{v:g}' for v in args.spacing)}")
    if args.size is not None:
        if not all(float(v).is_integer() and v >= 1 for v in args.size):
            raise ValueError(f"--size needs three whole numbers of voxels, got {args.size}")
        voxels = int(args.size[0]) * int(args.size[1]) * int(args.size[2])
        if voxels > MAX_PHANTOM_VOXELS:
            raise ValueError(f"--size {','.join(str(int(v)) for v in args.size)} is {voxels:,} voxels; expected at "
                             f"most {MAX_PHANTOM_VOXELS:,} (512^3)")


def run(args) -> int:
    check_arguments(args)
    from ..phantoms import VARIATION_FULL, PhantomConfig, write_phantom_dataset

    options = {}
    if args.spacing is not None:
        options["spacing_ijk"] = tuple(args.spacing)
    if args.size is not None:
        options["size_ijk"] = tuple(int(v) for v in args.size)
    if args.oblique:
        options["rotation_deg_ras"] = OBLIQUE_ROTATION_DEG_RAS
    if args.flip is not None:
        if not args.flip or set(args.flip) - set("ijk"):
            raise ValueError(f"--flip takes axis letters from 'ijk' (e.g. i or ik), got {args.flip!r}")
        options["flip_ijk"] = tuple(axis in args.flip for axis in "ijk")
    if args.variation == "full":
        if options:
            raise ValueError(f"--variation full draws each case's grid itself; drop "
                             f"{', '.join(sorted(GRID_OPTIONS[name] for name in options))}")
        options["variation"] = VARIATION_FULL
    options["modality"] = args.modality
    config = PhantomConfig(**options)
    phantoms = write_phantom_dataset(args.out_dir, args.cases, args.seed, config)
    lesion_count = sum(len(case["lesions"]) for case in phantoms["cases"].values())
    print(f"wrote {args.cases} phantoms with {lesion_count} lesions to {args.out_dir}")
    return 0
