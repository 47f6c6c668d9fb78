"""The ``symclone`` command line: parses arguments and calls the library.

Every module in ``symclone/commands/`` that defines ``register(subparsers)`` adds one sub-command
(``register`` sets ``func`` via ``parser.set_defaults(func=...)``; ``func(args) -> int``).

Exit status: 0 on success; 2 for a user error (a ``ValueError`` — bad option, value, shape, dataset or
checkpoint — or an ``OSError`` such as a missing or unwritable path), printed as one line
``symclone COMMAND: error: ...`` on stderr; 130 when interrupted. Any other exception is a bug in symclone
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import warnings
from typing import Optional, Sequence

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``symclone clone: error: argument --mode: ...``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from . import commands

    parser = _Parser(prog="symclone", description="Symmetry cloning toolkit.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    parser.add_argument("--version", action="version", version=f"symclone {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(mod, "register"):
            mod.register(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("symclone")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # e3nn scripts its modules with torch.jit, which torch >= 2.10 flags as deprecated: not actionable here
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
    level = logging.WARNING - 10 * min(args.verbose + 1, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # dotted config overrides (--distill.lr=3e-4) are passed through as args.overrides
    bad = [e for e in extra if not (e.startswith("--") and "=" in e and "." in e.split("=")[0])]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.overrides = [e[2:] for e in extra]
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:  # user errors: one line, no traceback
        msg = " ".join(str(err).split()) or type(err).__name__
        print(f"symclone {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"symclone {args.command}: interrupted (rerun with --resume to continue)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
