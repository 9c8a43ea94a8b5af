"""``volsam app``: VolumetricSAM in the browser (trame-slicer), on this computer or a GPU server."""

from __future__ import annotations

from pathlib import Path


def add_parser(subparsers) -> None:
    from ..methods import method_names

    parser = subparsers.add_parser(
        "app", help="segment in the browser: Slicer views, both methods, paint, undo, save (needs volsam[web])",
        description="Serve VolumetricSAM as a web page: the image in Slicer's slice and 3D views, SAMAdapt3D and "
                    "SAM2Volume in a side panel, paint and erase in the same undo history, save as .seg.nrrd or "
                    "NIfTI. Without IMAGE it opens a built-in CT-like phantom with the demo models. It listens on "
                    "127.0.0.1 only, unless --host says otherwise; then a browser must present the access token "
                    "printed at start (in the URL).")
    parser.add_argument("image", nargs="?", type=Path, metavar="IMAGE|DICOM_DIR",
                        help="NIfTI, NRRD or MHA file, or a folder with one DICOM series (default: the demo phantom)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0: any free port)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; any other address requires the token)")
    parser.add_argument("--token", help="access token to require (default: a random one when --host is not loopback)")
    parser.add_argument("--method", choices=method_names(), default=method_names()[0],
                        help="method selected at start (both are in the panel)")
    parser.add_argument("--weights", action="append", type=_method_weights, default=[], metavar="METHOD=FILE",
                        help="weights of one method, e.g. sam3d-adapter=kits/last.pth.tar (repeatable; "
                             "default: each method's demo model)")
    parser.add_argument("--sam-checkpoint", help="SAM ViT-B checkpoint, for 3DSAM-adapter files without the encoder")
    parser.add_argument("--sam2-checkpoint", help="SAM 2.1 checkpoint, for SAM2-3dMed files without the encoder")
    parser.add_argument("--preset", help="3DSAM-adapter intensity preset (kits, lits, pancreas, colon, ct)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder that Save writes to (default: .)")
    parser.add_argument("--volume-rendering", action="store_true",
                        help="render the image in the 3D view (slow without a GPU)")
    parser.set_defaults(func=run)


def _method_weights(text: str) -> tuple[str, str]:
    """``METHOD=FILE`` -> (method name, file); argparse reports the error."""
    import argparse

    from ..methods import get_method

    name, separator, weights = text.partition("=")
    if not separator or not weights:
        raise argparse.ArgumentTypeError(f"expected METHOD=FILE (e.g. sam2-3dmed=best.safetensors), got {text!r}")
    try:
        return get_method(name).name, weights
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run(args) -> int:
    import os

    from ..web.access import access_for
    from ..web.config import AppConfig

    try:
        import trame_slicer  # noqa: F401
    except ImportError:
        raise ValueError("the browser app needs the web extra: pip install 'volsam[web]'") from None
    if args.image is not None and not args.image.exists():
        raise ValueError(f"no such image file or DICOM folder: {args.image}")
    if not args.out.is_dir():
        raise ValueError(f"--out folder {args.out} does not exist")
    access = access_for(args.host, args.port, args.token)
    config = AppConfig(image=args.image, method=args.method,
                       weights=dict(args.weights),
                       sam_checkpoint=args.sam_checkpoint, sam2_checkpoint=args.sam2_checkpoint, preset=args.preset,
                       device=args.device, save_dir=args.out, volume_rendering=args.volume_rendering)
    # trame would also read options from our command line; ours are passed explicitly.
    os.environ.setdefault("TRAME_ARGS", "")
    if not os.environ.get("DISPLAY"):  # headless server: render offscreen
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkOSOpenGLRenderWindow")
    from ..web.app import serve

    if access.token:
        print(f"access token: {access.token} (a browser without it is refused)", flush=True)
    serve(config, access, announce=lambda line: print(line, flush=True))
    return 0
