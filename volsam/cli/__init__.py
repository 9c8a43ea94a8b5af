"""The ``volsam`` command line: one module per verb, each with ``add_parser`` and ``run``.

Verb modules import torch and the models inside ``run`` only, so ``volsam --help`` and
``volsam info`` work before the heavy packages are installed.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from .. import __version__

#: Verb modules in the order ``--help`` lists them.
VERBS = ("info", "phantom", "metrics", "segment", "weights", "train", "evaluate", "demo", "app")

#: Options whose value is a comma-separated list of numbers, which may start with a minus sign
#: (RAS coordinates often do); argparse would read "-88.1,101.3,17.7" as an unknown option.
NUMBER_LIST_OPTIONS = ("--point", "--negative", "--box", "--spacing", "--size")
_NUMBER_LIST = re.compile(r"^-[0-9.]")


def _join_negative_values(argv: list[str]) -> list[str]:
    joined, index = [], 0
    while index < len(argv):
        token = argv[index]
        if (token in NUMBER_LIST_OPTIONS and index + 1 < len(argv)
                and _NUMBER_LIST.match(argv[index + 1])):
            joined.append(f"{token}={argv[index + 1]}")
            index += 2
        else:
            joined.append(token)
            index += 1
    return joined


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="volsam", description="Click-to-3D tumour segmentation with volumetric Segment-Anything models.")
    parser.add_argument("--version", action="version", version=f"volsam {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        try:
            module = importlib.import_module(f"{__name__}.{verb}")
        except ModuleNotFoundError as error:
            if error.name == f"{__name__}.{verb}":
                continue  # a verb not built yet in this checkout
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, PermissionError) as error:
        message = str(error).strip().replace("\n", " ")
        print(f"volsam {args.verb}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"volsam {args.verb}: interrupted", file=sys.stderr)
        return 130


def parse_number_list(text: str, count: int, what: str) -> tuple[float, ...]:
    """Parse "x,y,z" into floats; raises argparse.ArgumentTypeError with a clear message."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != count or not all(map(_finite, values)):
        raise argparse.ArgumentTypeError(
            f"{what} needs {count} comma-separated numbers, e.g. {','.join(['-12.5'] * count)}; got {text!r}")
    return values


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


def number_list(count: int, what: str):
    """An argparse ``type`` for a list of ``count`` numbers."""
    def parse(text: str):
        return parse_number_list(text, count, what)
    parse.__name__ = what
    return parse
