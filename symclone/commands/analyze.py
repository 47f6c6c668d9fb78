"""``symclone analyze runs/NAME``: figures, report.md and structure metrics for a clone run."""
from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("analyze", help="weight-structure analysis, figures and report.md of a clone run")
    p.add_argument("run_dir", help="a run directory written by `symclone clone` (runs/NAME)")
    p.add_argument("--compare", nargs="*", default=[], metavar="RUN",
                   help="other runs of the same teacher whose students join the feature-map grid")
    p.add_argument("--support", default="auto",
                   help="data support for the masked metrics: auto (from the run's dataset), "
                        "fashion-mnist, mnist, or none")
    p.add_argument("--no-plots", action="store_true", help="metrics and report only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from symclone.analysis import analyze_run

    support = None if str(args.support).lower() == "none" else args.support
    res = analyze_run(args.run_dir, compare=args.compare, support=support, plots=not args.no_plots)
    for entry in res["structure"]["layers"]:
        res_str = ", ".join(f"{g} {v:.2e}" for g, v in (entry.get("residual") or {}).items())
        kern = (entry.get("toeplitz") or {}).get("kernel_rel_error")
        extra = f", kernel rel. error {kern:.2e}" if kern is not None else ""
        print(f"layer {entry['layer']}: residual {res_str or '-'}{extra}")
    print(f"wrote {res['report']} and {len(res['figures'])} figures")
    return 0
