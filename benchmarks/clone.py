"""Cloning speed: seconds to reach feature_rel_error 1e-3, closed form vs Adam (function mode) and
vs the paper's recipe scaled down (family mode); throughput as a fraction of this machine's fp32
matmul rate measured in the same run.

    python -m benchmarks.clone            # 28x28 (paper sizes)
    python -m benchmarks.clone --quick    # 12x12 / 16x16, a minute or two
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from symclone.distill import DistillConfig, distill
from symclone.registry import create_student, create_teacher

TARGET = 1e-3


def matmul_rate(n: int = 1024, reps: int = 5) -> float:
    """Measured fp32 GEMM rate in FLOP/s (best of ``reps``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def _row(name, rec, seconds, flops_per_sample, samples, rate, reached):
    sps = samples / seconds if seconds > 0 else float("nan")
    return {"method": name, "seconds": seconds, "feature_rel_error": rec["feature_rel_error"],
            "reached_1e-3": reached, "samples": samples, "samples_per_s": sps,
            "matmul_fraction": sps * flops_per_sample / rate, "steps": rec.get("steps")}


def function_mode(size: int, max_steps: int, rate: float) -> list[dict]:
    t = create_teacher("cnn", channels=1, depth=1, kernel_size=3, padding="circular", bias=False, size=size)
    d = size * size
    rows = []
    s = create_student("mlp", teacher=t)
    n = 2 * max(1024, 2 * d)
    rec = distill(s, t, "gaussian", DistillConfig(n_train=n // 2, n_eval=128, progress=False))["layers"][0]
    rows.append(_row("function: closed form (ridge, Cholesky)", rec, rec["seconds"], 2 * (d + 1) ** 2 + 2 * (d + 1) * d,
                     n, rate, rec["feature_rel_error"] <= TARGET))
    s = create_student("mlp", teacher=t)
    bs = 128
    cfg = DistillConfig(solver="adam", lr=1e-2, steps=max_steps, batch_size=bs, n_train=n // 2, n_eval=128,
                        stop_rel_error=TARGET / 2, progress=False, log_every=50)
    rec = distill(s, t, "gaussian", cfg)["layers"][0]
    rows.append(_row("function: Adam (lr 1e-2, batch 128)", rec, rec["seconds"], 6 * d * d, rec["steps"] * bs, rate,
                     rec["feature_rel_error"] <= TARGET))
    return rows


def family_mode(size: int, max_steps: int, rate: float) -> list[dict]:
    t = create_teacher("cnn", channels=1, depth=1, kernel_size=3, padding="valid", bias=False, size=size)
    I, O = size * size, (size - 2) ** 2
    rows = []
    for B in (9, 7):
        s = create_student("blocks", teacher=t, blocks=B)
        rec = distill(s, t, "gaussian", DistillConfig(mode="family", n_train=2048, n_eval=128, progress=False))["layers"][0]
        rows.append(_row(f"family: closed form (SVD), B={B}", rec, rec["seconds"], 2 * 9 * I * O, 9 * (I + 1), rate,
                         rec["feature_rel_error"] <= TARGET))
    K, N = 16, 32
    s = create_student("blocks", teacher=t, blocks=9)
    cfg = DistillConfig(mode="family", solver="adam", lr=1e-2, grad_clip=1.0, steps=max_steps, batch_size=N,
                        kernels_per_step=K, n_eval=128, stop_rel_error=TARGET / 2, progress=False, log_every=50)
    rec = distill(s, t, "gaussian", cfg)["layers"][0]
    per_pair = 3 * (2 * 9 * O * I / K + 2 * 9 * O)  # student fwd+bwd per (kernel, image) pair
    rows.append(_row(f"family: paper recipe (AdamW 1e-2, clip 1, {K} kernels x {N} images), B=9", rec,
                     rec["seconds"], per_pair, rec["steps"] * K * N, rate, rec["feature_rel_error"] <= TARGET))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="results/clone.json")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default; 1 is robust on a shared machine)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size_f, size_p, steps = (16, 12, 600) if args.quick else (28, 28, 2000)
    rate = matmul_rate()
    rows = function_mode(size_f, steps, rate) + family_mode(size_p, steps, rate)
    res = {"matmul_gflops": rate / 1e9, "threads": torch.get_num_threads(), "target_rel_error": TARGET,
           "function_size": size_f, "family_size": size_p, "rows": rows}
    cf = rows[0]["seconds"]
    # lower bounds when the iterative method did not reach the target within its budget
    res["speedup_closed_form_vs_adam_function"] = rows[1]["seconds"] / cf if cf > 0 else None
    res["speedup_closed_form_vs_paper_recipe_family"] = rows[-1]["seconds"] / rows[2]["seconds"]
    res["speedups_are_lower_bounds"] = {"function": not rows[1]["reached_1e-3"], "family": not rows[-1]["reached_1e-3"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"fp32 matmul: {rate / 1e9:.1f} GFLOP/s ({torch.get_num_threads()} threads); target rel error {TARGET:g}")
    print(f"{'method':<72} {'s to 1e-3':>10} {'rel err':>9} {'samples/s':>10} {'of matmul':>9}")
    for r in rows:
        when = f"{r['seconds']:.2f}" if r["reached_1e-3"] else f">{r['seconds']:.1f}"
        print(f"{r['method']:<72} {when:>10} {r['feature_rel_error']:>9.2e} "
              f"{r['samples_per_s']:>10.0f} {r['matmul_fraction']:>9.1%}")
    print("(>: not reached within the step budget; the time shown is the whole budget)")
    lb = res["speedups_are_lower_bounds"]
    print(f"closed form vs Adam (function): {'>=' if lb['function'] else ''}"
          f"{res['speedup_closed_form_vs_adam_function']:.0f}x faster; closed form vs paper recipe (family): "
          f"{'>=' if lb['family'] else ''}{res['speedup_closed_form_vs_paper_recipe_family']:.0f}x faster")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
