"""Cloning at scale: the family closed form of a ``B = 9`` blocks student on
a 3×3 valid T(2) convolution (``side -> side - 2``), end to end (``distill``: probe, band of the second
moment, Gram join, solve, held-out evaluation, untrained baseline), as a multiple of one 1024³ fp32
matmul measured in the same process, and how its time and peak memory grow with the image side.

Rows (``results/clone_scale.json`` and the printed Markdown table come from the same run):

* ``family`` per side (20, 28, 40, 56; 112 with ``--big``): CPU seconds of this thread (one intra-op
  thread), ``/ matmul``: that over the matmul's seconds (goal at 28 px: <= 20), the roofline floor
  ``2 · n_eval · B·O·I / matmul rate`` (one evaluation pass over the student's dense-equivalent weights),
  peak resident-set growth, peak over the student's dense-equivalent weight bytes ``4 · B·O·I`` (goal at
  112 px: <= 3) and ``feature_rel_error`` on fresh kernels (goal <= 1e-3).
* ``function`` per side (20, 28; 40 without ``--quick``; 112 with ``--big``): the function closed form of
  an ``mlp`` student (``symclone clone --teacher cnn --student mlp``), end to end with the student's
  construction; ``method`` is ``ridge`` (normal equations, ``in_dim + 1 <= 2048``) or ``probe`` (the
  teacher's affine map read off the teacher and written into the weight in place; 112 px).
  ``peak_over_weights`` divides by the student's float32 weight bytes ``4 · O · (I + 1)``.
* ``function (projected)``: the *ridge* solve at 112 px, not run: its float64 FLOPs at the float64 matmul
  rate of this run and its memory estimate (what the probe avoids).
* ``scaling``: the log-log least-squares exponent of time and of peak memory against the side over
  20-56 px (goal: time <= 4, the student's own weight count ``∝ side⁴``).

    python -m benchmarks.clone_scale            # 20-56 px (a minute or two)
    python -m benchmarks.clone_scale --big      # + 112 px family and function clones (~30 s, ~3 GB)
    python -m benchmarks.clone_scale --quick    # 12-20 px (seconds; used by the tests and the suite)

``--device`` is accepted for the suite (``python -m benchmarks``); the rows are thread-CPU-time
measurements and always run on the CPU.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from ._util import format_table, matmul_rate, track_peak

GOAL_RATIO, GOAL_EXPONENT, GOAL_PEAK_OVER_WEIGHTS, GOAL_ERROR = 20.0, 4.0, 3.0, 1e-3
N_TRAIN, N_EVAL = 2048, 128


def fit_exponent(sides: list[float], values: list[float]) -> Optional[float]:
    """Least-squares slope of ``log value`` against ``log side`` (``None`` with fewer than two points).

    >>> round(fit_exponent([10, 20, 40], [3.0, 48.0, 768.0]), 6)
    4.0
    """
    pts = [(math.log(s), math.log(v)) for s, v in zip(sides, values) if v and v > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx > 0 else None


def _teacher(size: int):
    from symclone.registry import create_teacher

    return create_teacher("cnn", channels=1, depth=1, kernel_size=3, padding="valid", bias=False, size=size)


def _timed(fn) -> tuple[object, float, float, Optional[int]]:
    """``(fn(), thread CPU seconds, wall seconds, peak resident-set growth in bytes)``."""
    with track_peak("cpu") as rec:
        c0, w0 = time.thread_time(), time.perf_counter()
        out = fn()
        cpu, wall = time.thread_time() - c0, time.perf_counter() - w0
    return out, cpu, wall, rec["bytes"]


def family_row(size: int, matmul: dict) -> dict:
    """One family closed-form clone (student built inside the timed region, as the CLI does)."""
    from symclone.distill import DistillConfig, distill
    from symclone.registry import create_student

    t = _teacher(size)
    cfg = DistillConfig(mode="family", n_train=N_TRAIN, n_eval=N_EVAL, progress=False, device="cpu")

    def run():
        s = create_student("blocks", teacher=t, blocks=9)
        return s, distill(s, t, "gaussian", cfg)["layers"][0]

    (s, rec), cpu, wall, peak = _timed(run)
    layer = s.layers[0]
    dense_bytes = 4 * layer.B * layer.O * layer.I
    stored = sum(p.numel() * p.element_size() for p in layer.parameters()) + \
        sum(b.numel() * b.element_size() for b in layer.buffers())
    floor = 2 * N_EVAL * layer.B * layer.O * layer.I / matmul["flops_per_s"]
    cf = rec.get("closed_form", {})
    return {"row": "family", "side": size, "solver": rec["solver"], "storage": cf.get("storage"),
            "cpu_s": cpu, "wall_s": wall, "fit_s": rec["seconds"], "eval_s": rec.get("eval_seconds"),
            "over_matmul": cpu / matmul["seconds"], "floor_s": floor, "over_floor": cpu / floor,
            "peak_bytes": peak, "student_dense_bytes": dense_bytes, "student_stored_bytes": stored,
            "peak_over_weights": None if peak is None else peak / dense_bytes,
            "feature_rel_error": rec["feature_rel_error"], "probe_entries": cf.get("probe_entries")}


def function_row(size: int, matmul: dict) -> dict:
    """One function-mode closed form (``mlp`` student built inside the timed region, as the CLI does)."""
    from symclone.distill import DistillConfig, distill
    from symclone.registry import create_student

    t = _teacher(size)
    cfg = DistillConfig(n_train=N_TRAIN // 4, n_eval=N_EVAL, progress=False, device="cpu")

    def run():
        s = create_student("mlp", teacher=t)
        return s, distill(s, t, "gaussian", cfg)["layers"][0]

    (s, rec), cpu, wall, peak = _timed(run)
    del s
    I, O = size * size, (size - 2) ** 2
    weights = 4 * O * (I + 1)
    floor = 2 * N_EVAL * O * I / matmul["flops_per_s"]
    cf = rec.get("closed_form", {})
    return {"row": "function", "side": size, "solver": rec["solver"], "method": cf.get("method"),
            "storage": "dense", "cpu_s": cpu,
            "wall_s": wall, "fit_s": rec["seconds"], "eval_s": rec.get("eval_seconds"),
            "over_matmul": cpu / matmul["seconds"], "floor_s": floor, "over_floor": cpu / floor,
            "peak_bytes": peak, "student_dense_bytes": weights, "student_stored_bytes": weights,
            "peak_over_weights": None if peak is None else peak / weights,
            "feature_rel_error": rec["feature_rel_error"], "samples": cf.get("samples"),
            "probe_entries": cf.get("probe_entries")}


def function_projection(size: int, rate64: float) -> dict:
    """The function clone at ``size`` px, not run: its memory estimate (``function_closed_form_bytes`` for
    the ``n = closed_form_oversample · (I + 1)`` samples the engine would draw), whether that fits this
    machine now (``memory_obstacle``'s message if not) and its time projected from its float64 FLOPs
    (``n d²`` for ``X̃ᵀX̃`` by syrk, ``2 n d O`` for ``X̃ᵀY``, ``d³/3`` Cholesky, ``2 d² O`` solve; ``d = I + 1``)
    at the float64 matmul rate measured in this run."""
    from symclone.distill import DistillConfig
    from symclone.distill._solver import function_closed_form_bytes
    from symclone.memory import available_memory_bytes, memory_obstacle

    I, O = size * size, (size - 2) ** 2
    d = I + 1
    n = max(2 * N_TRAIN // 4, math.ceil(DistillConfig().closed_form_oversample * d))
    need = function_closed_form_bytes(I, O, n)
    why = memory_obstacle(f"the function closed form at {size} px", need)
    flops = n * d * d + 2 * n * d * O + d ** 3 / 3 + 2 * d * d * O
    weights = 4 * O * d
    return {"row": "function (projected)", "side": size, "solver": "closed_form", "method": "ridge", "storage": "dense",
            "cpu_s": flops / rate64, "flops": flops, "estimated_peak_bytes": need, "student_dense_bytes": weights,
            "peak_over_weights": need / weights, "fits": why is None, "obstacle": why,
            "available_bytes": available_memory_bytes(), "samples": n}


def run(quick: bool = False, big: bool = False, function: bool = True) -> dict:
    """All rows and the summary (see the module docstring)."""
    torch.set_num_threads(1)
    matmul = matmul_rate("cpu", n=1024)
    fam_sides = [12, 16, 20] if quick else [20, 28, 40, 56]
    fam = [family_row(s, matmul) for s in fam_sides]
    fn_sides = [12, 16] if quick else [20, 28, 40]
    fn = [function_row(s, matmul) for s in fn_sides] if function else []
    big_rows = [family_row(112, matmul)] if big else []
    fn_big = [function_row(112, matmul)] if big and function else []
    exp_t = fit_exponent([r["side"] for r in fam], [r["cpu_s"] for r in fam])
    exp_m = fit_exponent([r["side"] for r in fam], [r["peak_bytes"] or 0 for r in fam])
    exp_fn = fit_exponent([r["side"] for r in fn], [r["cpu_s"] for r in fn])
    proj = [function_projection(112, matmul_rate("cpu", torch.float64, n=1024)["flops_per_s"])] if fn else []
    at28 = next((r for r in fam if r["side"] == 28), None)
    summary = {
        "matmul_1024_s": matmul["seconds"], "matmul_gflops": matmul["flops_per_s"] / 1e9,
        "threads": torch.get_num_threads(), "clock": "thread_cpu_time",
        "family_28_over_matmul": None if at28 is None else at28["over_matmul"], "goal_over_matmul": GOAL_RATIO,
        "family_time_exponent": exp_t, "family_peak_exponent": exp_m, "function_time_exponent": exp_fn,
        "exponent_sides": fam_sides, "goal_exponent": GOAL_EXPONENT,
        "max_feature_rel_error": max(r["feature_rel_error"] for r in fam + fn + big_rows + fn_big),
    }
    if big_rows:
        summary["family_112_peak_over_weights"] = big_rows[0]["peak_over_weights"]
    if fn_big:
        summary.update(function_112_peak_over_weights=fn_big[0]["peak_over_weights"],
                       function_112_cpu_s=fn_big[0]["cpu_s"], function_112_method=fn_big[0]["method"])
    summary["goals_met"] = {
        "ratio_28": None if at28 is None else at28["over_matmul"] <= GOAL_RATIO,
        "exponent": exp_t is not None and exp_t <= GOAL_EXPONENT,
        "error": summary["max_feature_rel_error"] <= GOAL_ERROR,
        "family_112_memory": None if not big_rows else (big_rows[0]["peak_over_weights"] or 0) <= GOAL_PEAK_OVER_WEIGHTS,
        "function_112_memory": None if not fn_big else (fn_big[0]["peak_over_weights"] or 0) <= GOAL_PEAK_OVER_WEIGHTS,
    }
    return {"summary": summary, "rows": fam + big_rows + fn + fn_big + proj}


COLUMNS = ["row", "side", "storage", "method", "cpu_s", "over_matmul", "floor_s", "over_floor", "peak_mb", "peak_over_weights",
           "feature_rel_error"]


def table(res: dict) -> str:
    """The rows as a Markdown table (peak in MB; the projected row's peak is its estimate)."""
    rows = []
    for r in res["rows"]:
        peak = r.get("peak_bytes", r.get("estimated_peak_bytes"))
        rows.append(dict(r, peak_mb=None if peak is None else peak / 1e6))
    s = res["summary"]
    lines = [format_table(rows, COLUMNS), "",
             f"one 1024^3 fp32 matmul: {s['matmul_1024_s'] * 1e3:.1f} ms ({s['matmul_gflops']:.0f} GFLOP/s, "
             f"{s['threads']} thread); family clone at 28 px: "
             + ("-" if s["family_28_over_matmul"] is None else f"{s['family_28_over_matmul']:.1f}x")
             + f" (goal <= {GOAL_RATIO:g}x)",
             f"fitted exponents over {s['exponent_sides']} px: time side^{_f(s['family_time_exponent'])}, peak memory "
             f"side^{_f(s['family_peak_exponent'])} (goal <= side^{GOAL_EXPONENT:g}); function clone time "
             f"side^{_f(s['function_time_exponent'])}"]
    for r in res["rows"]:
        if r["row"].startswith("function (projected)"):
            lines.append(f"ridge function clone at {r['side']} px (not run): ~{_f(r['cpu_s'])} s projected from its "
                         f"{r['flops'] / 1e12:.1f} float64 TFLOP, "
                         f"{(r['estimated_peak_bytes'] or 0) / 1e9:.2f} GB estimated "
                         f"({_f(r['peak_over_weights'])}x the mlp's weights); "
                         + ("fits this machine" if r["fits"] else f"refused: {r['obstacle']}"))
    return "\n".join(lines)


def _f(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="12-20 px only (seconds)")
    p.add_argument("--big", action="store_true", help="also the 112 px family and function clones")
    p.add_argument("--device", default="cpu", help="cpu (or auto): the rows are CPU measurements")
    p.add_argument("--no-function", action="store_true", help="skip the function-mode rows")
    p.add_argument("--out", default="results/clone_scale.json")
    args = p.parse_args(argv)
    if args.device not in ("cpu", "auto"):
        print(f"clone_scale: --device {args.device} ignored; the cloning-scale rows are CPU measurements",
              file=sys.stderr)
    res = run(quick=args.quick, big=args.big and not args.quick, function=not args.no_function)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(table(res))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
