"""The ``symclone`` command line: parses arguments and calls the library.

Every module in ``symclone/commands/`` that defines ``register(subparsers)`` adds one sub-command
(``register`` sets ``func`` via ``parser.set_defaults(func=...)``; ``func(args) -> int``).
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


def build_parser() -> argparse.ArgumentParser:
    from . import commands

    parser = argparse.ArgumentParser(prog="symclone", description="Symmetry cloning toolkit.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(mod, "register"):
            mod.register(sub)
    return parser


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
    except (ValueError, FileNotFoundError) as err:
        print(f"symclone {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"symclone {args.command}: interrupted (rerun with --resume to continue)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
