"""The ``volsam`` command line: one module per verb, each with ``add_parser`` and ``run``.

Verb modules import nothing heavy at module level (no numpy, torch, SimpleITK): ``volsam
--help``, ``--version`` and every verb's ``--help`` load in a fraction of a second, and each
``run`` checks its arguments and input paths (``volsam.cli.checks``) before it imports the
packages that do the work, so a typo is reported at once.

Errors and warnings are one line on stderr ("volsam VERB: error: ..."); an error exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import math
import re
import sys
import warnings

from .. import __version__

#: Verb modules in the order ``--help`` lists them.
VERBS = ("info", "phantom", "metrics", "segment", "weights", "train", "evaluate", "demo", "app")

#: Options whose value is a comma-separated list of numbers, which may start with a minus sign
#: (RAS coordinates often do); argparse would read "-88.1,101.3,17.7" as an unknown option.
NUMBER_LIST_OPTIONS = ("--point", "--negative", "--box", "--spacing", "--size")
_NUMBER_LIST = re.compile(r"^-[0-9.]")

#: Errors that describe a bad input or a bad environment, reported as one line with exit 2.
#: MemoryError is here because an input too large for this computer is an input problem.
USER_ERRORS = (ValueError, OSError, MemoryError)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (the usage is in ``--help``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class SetOnce(argparse.Action):
    """A single-valued option given twice is an error, not "the last one wins" (a repeated
    ``--space`` would otherwise silently apply to every point)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, f"_{self.dest}_given", False):
            raise argparse.ArgumentError(self, "given more than once; give it once")
        setattr(namespace, f"_{self.dest}_given", True)
        setattr(namespace, self.dest, values)


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
    parser = OneLineParser(
        prog="volsam", description="Click-to-3D tumour segmentation with volumetric Segment-Anything models.")
    parser.add_argument("--version", action="version", version=f"volsam {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        importlib.import_module(f"{__name__}.{verb}").add_parser(subparsers)
    return parser


def _one_line_warnings(verb: str):
    """A ``warnings.showwarning`` that prints "volsam VERB: warning: ..." on one line."""
    def show(message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split())
        print(f"volsam {verb}: warning: {text}", file=sys.stderr if file is None else file)
    return show


def main(argv: list[str] | None = None) -> int:
    argv = _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the verb's parser, so that the message names the verb
        verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        (verbs.choices.get(args.verb) or parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    warnings.showwarning = _one_line_warnings(args.verb)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as error:
        message = " ".join(str(error).split()) or type(error).__name__
        if isinstance(error, MemoryError):
            message = f"not enough memory ({message}); try a smaller input"
        elif isinstance(error, OSError) and error.filename and str(error.filename) not in message:
            message = f"{error.filename}: {message}"
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
    return math.isfinite(value)


def number_list(count: int, what: str):
    """An argparse ``type`` for a list of ``count`` numbers."""
    def parse(text: str):
        return parse_number_list(text, count, what)
    parse.__name__ = what
    return parse
