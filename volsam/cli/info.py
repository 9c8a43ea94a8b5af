"""``volsam info IMAGE``: what an image is, geometry first."""

from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("info", help="print an image's shape, spacing, origin, direction and range",
                                   description="Print an image's size, spacing, origin, direction, "
                                               "orientation code and intensity range.")
    parser.add_argument("image", help="NIfTI, NRRD, MHA/MHD file or DICOM series folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--allow-gaps", action="store_true",
                        help="read a DICOM series with missing slices by resampling it onto a uniform grid")
    parser.set_defaults(func=run)


def describe(volume) -> dict:
    array = volume.array
    return {
        "size_ijk": list(volume.shape_ijk),
        "spacing_mm": [round(float(s), 6) for s in volume.spacing],
        "origin_ras": [round(float(v), 4) for v in volume.origin_ras],
        "direction_ras": [[round(float(v), 6) for v in row] for row in volume.direction_ras],
        "orientation": volume.orientation_code,
        "dtype": str(array.dtype),
        "min": float(array.min()),
        "max": float(array.max()),
    }


def run(args) -> int:
    from .checks import check_input_image

    check_input_image(args.image, "IMAGE")
    from ..io import read_image

    info = describe(read_image(args.image, allow_gaps=args.allow_gaps))
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"image:       {args.image}")
    print(f"size (ijk):  {' x '.join(map(str, info['size_ijk']))}")
    print(f"spacing:     {' x '.join(f'{s:g}' for s in info['spacing_mm'])} mm")
    print(f"origin:      {', '.join(f'{v:g}' for v in info['origin_ras'])} (RAS mm)")
    print("direction:   " + "  ".join("(" + ", ".join(f"{v:g}" for v in col) + ")"
                                       for col in zip(*info["direction_ras"])) + "  (i, j, k axes in RAS)")
    print(f"orientation: {info['orientation']}")
    print(f"intensity:   {info['min']:g} .. {info['max']:g} ({info['dtype']})")
    return 0
