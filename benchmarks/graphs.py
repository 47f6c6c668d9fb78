"""Graph benchmarks (issue 9): EXP-iso, GRAPH8c and EXP-classify for bare MLP / uniform / canonical /
learned S_n symmetrization and a 1-WL message-passing baseline.

    python -m benchmarks.graphs                 # full protocols (long: tens of CPU-minutes)
    python -m benchmarks.graphs --quick         # smoke run (< 1 minute): few seeds, data subsets
    python -m benchmarks.graphs --only exp-iso --stochastic-seeds 20

Deterministic models (mlp, canonical, mp) always get ``--seeds`` seeds; the stochastic samplers
(uniform, learned) get ``--stochastic-seeds`` on EXP (they cost k = 10 network evaluations per
graph and draw). Seconds are CPU seconds of this process (``time.process_time``, 1 torch thread).
Prints a Markdown table and writes JSON (``--out``, default ``results/graphs.json``); per-run
state goes to ``runs/graphs`` so an interrupted run resumes with ``--resume``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from symclone.graphs._classify import ClassifyConfig, exp_classify
from symclone.graphs._embed import MODEL_NAMES
from symclone.graphs._protocols import ProtocolConfig, exp_iso, graph8c
from symclone.graphs._report import results_table
from symclone.io import read_json, write_json

STOCHASTIC = ("uniform", "learned")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default="exp-iso,graph8c,exp-classify")
    p.add_argument("--models", default=",".join(MODEL_NAMES))
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument("--stochastic-seeds", type=int, default=20, help="EXP-iso seeds for uniform/learned")
    p.add_argument("--g8c-stochastic-seeds", type=int, default=100, help="GRAPH8c seeds for uniform/learned")
    p.add_argument("--classify-seconds", type=float, default=0.0,
                   help="optional CPU-time cap per EXP-classify run (0, the default: none; the budget is epochs)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="family-wise error rate of the EXP-iso in-distribution test (default 0.05)")
    p.add_argument("--correction", default="holm", choices=("holm", "bonferroni", "none"),
                   help="multiple-testing correction of the in-distribution test ('none': the 3-stderr rule)")
    p.add_argument("--out", default="results/graphs.json")
    p.add_argument("--state", default=None, help="resume-state folder (runs/graphs[_quick])")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--data-root", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    only = set(args.only.split(","))
    models = [m for m in args.models.split(",") if m]
    quick = args.quick
    seeds = 3 if quick else args.seeds
    limit_exp, limit_g8c = (40, 1500) if quick else (None, None)
    out = Path(args.out)
    prev = read_json(out) if args.resume and out.is_file() else {}
    res = {k: prev.get(k, []) for k in ("exp_iso", "graph8c", "exp_classify")}
    res["quick"] = quick
    state = Path(args.state or ("runs/graphs_quick" if quick else "runs/graphs"))
    state.mkdir(parents=True, exist_ok=True)
    progress = sys.stderr.isatty()

    def save(key, row):
        res[key] = [r for r in res[key] if r["model"] != row["model"]] + [row]
        write_json(out, res)
        print(key, row, flush=True)

    for key, fn, lim, st_seeds in (("exp_iso", exp_iso, limit_exp, args.stochastic_seeds),
                                   ("graph8c", graph8c, limit_g8c, args.g8c_stochastic_seeds)):
        if key.replace("_", "-").replace("graph8c", "graph8c") not in only:
            continue
        for m in models:
            if args.resume and any(r["model"] == m for r in res[key]):
                continue
            n = (min(seeds, st_seeds) if quick else st_seeds) if m in STOCHASTIC else seeds
            pcfg = ProtocolConfig(seeds=n, alpha=args.alpha, correction=args.correction)
            row = fn([m], pcfg, args.data_root, state / key, args.resume, progress, lim)[0]
            save(key, row)
    if "exp-classify" in only and not quick:
        for m in models:
            if args.resume and any(r["model"] == m for r in res["exp_classify"]):
                continue
            cfg = ClassifyConfig(max_seconds=args.classify_seconds or None)
            save("exp_classify", exp_classify(m, cfg, args.data_root, state / "classify", args.resume, progress))
    print(results_table(res["exp_iso"], res["graph8c"], res["exp_classify"]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
