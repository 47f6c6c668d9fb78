"""``symclone bench [--quick] [--device auto]``: run the benchmark suite (``python -m benchmarks``).

Prints one table (hot paths against the machine's measured matmul rate, symmetrization and Reynolds
costs, closed form vs SGD, n-body time-to-MSE, the other benchmark modules' results) and writes
``results/bench_<device>[_quick].json`` (on CUDA also ``benchmarks/results/cuda[_quick].json``, the copy
kept in the repository); ``--device`` is forwarded to every benchmark module that takes it. The
``benchmarks/`` folder sits next to the ``symclone`` package in a source checkout (editable install);
it is not part of a wheel.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

__all__ = ["register", "run", "load_suite"]


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="run the benchmark suite (speed, scale, roofline ratios)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, skip slow modules (< 5 min on 2 CPU cores)")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (default: auto)")
    p.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (default 1: per-core numbers)")
    p.add_argument("--only", nargs="*", default=None, help="'roofline' and/or benchmark module names")
    p.add_argument("--skip", nargs="*", default=[], help="benchmark modules to skip")
    p.add_argument("--results", default="results", help="folder for the JSON files (default: results)")
    p.set_defaults(func=run)


def load_suite():
    """Import ``benchmarks.__main__`` (from the source checkout that holds this package if needed)."""
    try:
        return importlib.import_module("benchmarks.__main__")
    except ModuleNotFoundError:
        root = Path(__file__).resolve().parents[2]
        if not (root / "benchmarks" / "__main__.py").is_file():
            raise FileNotFoundError(f"benchmarks/ not found next to the symclone package ({root}); the suite "
                                    "needs a source checkout installed with 'pip install -e .'") from None
        sys.path.insert(0, str(root))
        return importlib.import_module("benchmarks.__main__")


def run(args) -> int:
    if args.overrides:
        raise ValueError(f"bench: unexpected options {args.overrides}")
    argv = ["--device", args.device, "--threads", str(args.threads), "--results", args.results]
    if args.quick:
        argv.append("--quick")
    if args.only is not None:
        argv += ["--only", *args.only]
    if args.skip:
        argv += ["--skip", *args.skip]
    return int(load_suite().main(argv) or 0)
