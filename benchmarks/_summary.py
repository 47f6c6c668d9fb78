"""Rows of the suite's table from the benchmark modules' result files (``python -m benchmarks``).

Every ratio compares two measurements of the same run:

* n-body: per model, the CPU seconds of its training until the validation MSE first reaches a common
  target (from the ``curve`` the n-body benchmark records at every evaluation) over the bare
  transformer's time to the same target; the target is the bare transformer's best validation MSE of
  the run (or ``--nbody-target``). A model that never reaches it reports its whole training time, the
  ratio then being a lower bound. Its test MSE is divided by the MSE of constant-velocity extrapolation
  on the same test set (the module's ``baselines``).
* cloning at scale (``benchmarks/clone_scale.py``): per row (family / function clone at one image side)
  its thread CPU seconds over one 1024³ fp32 matmul of the same run, its peak resident-set growth and,
  in ``throughput``, its peak over the student's weight bytes (goal at 112 px: <= 3); the projected ridge
  row (not run) reports its estimate.
* peak memory: each model's / call's own peak where the module measures it, and for every module the
  peak resident set of its process minus that of a bare interpreter importing torch and symclone
  (``benchmarks/_child.py``), measured in the same run.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

__all__ = ["summarise", "time_to_target", "nbody_rows", "clone_scale_rows", "module_row", "MIB", "BARE_NBODY"]

MIB = float(2 ** 20)
#: options of a module's command line left out of its row's ``case`` (the JSON keeps the whole command)
_HIDDEN = ("--out", "--device")
#: the model the n-body rows are compared with (the unsymmetrized backbone)
BARE_NBODY = "transformer"


def _mb(nbytes: Optional[float]) -> Optional[float]:
    return None if nbytes is None else nbytes / MIB


def time_to_target(curve: Sequence[Sequence[float]], target: float) -> Optional[float]:
    """CPU seconds at the first evaluation whose validation MSE is at most ``target`` (``None``: never).

    ``curve`` rows are ``[epoch, cpu_seconds, train_loss, valid_mse]`` as recorded by
    ``symclone.symmetrize._train.train_regressor``; the time is :math:`t_{i^*}` with
    :math:`i^* = \\min\\{i : \\mathrm{mse}_i \\le T\\}`.

    >>> time_to_target([[5, 1.0, 0.3, 0.09], [10, 2.0, 0.2, 0.05], [15, 3.0, 0.1, 0.04]], 0.05)
    2.0
    >>> time_to_target([[5, 1.0, 0.3, 0.09]], 0.05) is None
    True
    """
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise ValueError(f"target: expected a positive finite MSE, got {target!r}")
    for point in curve:
        if len(point) < 4:
            raise ValueError(f"curve: expected [epoch, cpu_seconds, train_loss, valid_mse] rows, got {point!r}")
        if point[3] <= target:
            return float(point[1])
    return None


def nbody_rows(res: dict, target: Optional[float] = None, bare: str = BARE_NBODY) -> list[dict]:
    """Table rows of an n-body result (``benchmarks/nbody.py`` JSON): per model its time to the target
    validation MSE over the bare model's, its test MSE over constant-velocity extrapolation's, and the
    extrapolation baseline itself; ``peak_mb`` is each model's own memory peak.

    ``target``: validation MSE to reach; default the bare model's best of this run (without a bare model:
    the largest best, which every model reaches).

    >>> res = {"size": "small", "baselines": {"static_mse": 0.2, "linear_mse": 0.05},
    ...        "rows": [{"model": "transformer", "test_mse": 0.04, "train_cpu_s": 4.0, "peak_bytes": 2 ** 20,
    ...                  "curve": [[5, 1.0, 0.1, 0.06], [10, 2.0, 0.1, 0.04]]},
    ...                 {"model": "learned", "test_mse": 0.03, "train_cpu_s": 6.0, "peak_bytes": 2 ** 21,
    ...                  "curve": [[5, 3.0, 0.1, 0.05], [10, 5.0, 0.1, 0.03]]}]}
    >>> [(r["bench"], r["seconds"], round(r["ratio"], 3), r["peak_mb"]) for r in nbody_rows(res)][:4]
    [('n-body time-to-MSE', 2.0, 1.0, 1.0), ('n-body time-to-MSE', 5.0, 2.5, 2.0), ('n-body test MSE', 4.0, 0.8, 1.0), ('n-body test MSE', 6.0, 0.6, 2.0)]
    """
    models = [r for r in res.get("rows", []) if isinstance(r, dict) and "test_mse" in r]
    if not models:
        return []
    size = res.get("size", "")
    ref = next((r for r in models if r.get("model") == bare), None)
    if target is not None:
        how = "given"
    elif ref is not None and ref.get("curve"):
        target, how = min(p[3] for p in ref["curve"]), f"{bare}'s best valid MSE"
    else:
        bests = [min(p[3] for p in r["curve"]) for r in models if r.get("curve")]
        target, how = (max(bests), "loosest best valid MSE") if bests else (None, "")
    rows: list[dict] = []
    if target is not None:
        t_ref = time_to_target(ref.get("curve") or [], target) if ref is not None else None
        for r in models:
            t = time_to_target(r.get("curve") or [], target)
            secs = t if t is not None else r.get("train_cpu_s")
            ratio = secs / t_ref if (secs is not None and t_ref) else None
            ratio_is = "" if ratio is None else f"CPU s / {bare}'s" + ("" if t is not None else " (lower bound)")
            rows.append({"bench": "n-body time-to-MSE",
                         "case": f"{r['model']} ({size}) to valid MSE {target:.3g}" + ("" if t is not None else
                                                                                       ", not reached"),
                         "seconds": secs, "unit": "", "ratio": ratio, "ratio_is": ratio_is,
                         "peak_mb": _mb(r.get("peak_bytes")), "model": r["model"],
                         "target_mse": target, "target_is": how, "reached": t is not None})
    lin = (res.get("baselines") or {}).get("linear_mse")
    for r in models:
        ref_mse, what = (lin, "MSE / const-velocity extrap.") if lin else \
            ((ref["test_mse"], f"MSE / {bare}'s") if ref is not None else (None, ""))
        rows.append({"bench": "n-body test MSE", "case": f"{r['model']} ({size})", "seconds": r.get("train_cpu_s"),
                     "throughput": r["test_mse"], "unit": "test MSE",
                     "ratio": r["test_mse"] / ref_mse if ref_mse else None, "ratio_is": what if ref_mse else "",
                     "peak_mb": _mb(r.get("peak_bytes")), "model": r["model"],
                     "mse_vs_published": {k: r["test_mse"] / v for k, v in (res.get("published") or {}).items()}})
    if lin:
        static = res["baselines"].get("static_mse")
        rows.append({"bench": "n-body test MSE", "case": f"const-velocity extrapolation ({size})", "seconds": None,
                     "throughput": lin, "unit": "test MSE", "ratio": lin / static if static else None,
                     "ratio_is": "MSE / no-motion MSE" if static else "", "peak_mb": None})
    return rows


def clone_scale_rows(res: dict) -> list[dict]:
    """Table rows of a cloning-scale result (``benchmarks/clone_scale.py`` JSON): one per clone (family or
    function, per image side) with its CPU seconds, ``ratio`` = CPU s over one 1024³ fp32 matmul, the peak
    over the student's weights as ``throughput`` and the feature error in ``case``; the projected ridge row
    (not run) gives its projected seconds and estimated peak.

    >>> res = {"rows": [{"row": "function", "side": 112, "method": "probe", "cpu_s": 9.0, "over_matmul": 600.0,
    ...                  "peak_bytes": 3 * 2 ** 20, "peak_over_weights": 2.5, "feature_rel_error": 4.6e-08},
    ...                 {"row": "function (projected)", "side": 112, "method": "ridge", "cpu_s": 178.0,
    ...                  "estimated_peak_bytes": 2 ** 21, "peak_over_weights": 11.1}]}
    >>> [(r["case"], r["seconds"], r["throughput"], r["peak_mb"]) for r in clone_scale_rows(res)]
    [('function 112 px (probe), err 4.6e-08', 9.0, 2.5, 3.0), ('function (projected) 112 px (ridge), not run', 178.0, 11.1, 2.0)]
    """
    rows = []
    for r in res.get("rows", []):
        if not isinstance(r, dict) or "row" not in r or "side" not in r:
            continue
        projected = "estimated_peak_bytes" in r
        how = f" ({r['method']})" if r.get("method") else ""
        err = r.get("feature_rel_error")
        case = f"{r['row']} {r['side']} px{how}" + (", not run" if projected else
                                                      f", err {err:.2g}" if err is not None else "")
        rows.append({"bench": "clone scale", "case": case, "seconds": r.get("cpu_s"),
                     "throughput": r.get("peak_over_weights"), "unit": "peak / weights",
                     "ratio": None if projected else r.get("over_matmul"),
                     "ratio_is": "projected (not run)" if projected else "CPU s / 1024^3 matmul",
                     "peak_mb": _mb(r.get("estimated_peak_bytes" if projected else "peak_bytes")),
                     "feature_rel_error": err, "side": r["side"], "row": r["row"]})
    return rows


def module_row(rec: dict, baseline_bytes: Optional[int] = None) -> dict:
    """The status row of one module run: its wall seconds, exit status and process memory peak
    (``peak_mb``: over the bare interpreter's ``baseline_bytes`` when known; ``peak_rss_mb``: absolute).

    >>> row = module_row({"module": "clone", "status": "ok", "seconds": 3.0, "peak_bytes": 300 * 2 ** 20,
    ...                   "command": "-m benchmarks.clone --quick --device cpu --out r.json"}, 200 * 2 ** 20)
    >>> row["peak_mb"], row["case"]
    (100.0, '-m benchmarks.clone --quick')
    """
    peak = rec.get("peak_bytes")
    over = None if peak is None else (peak - baseline_bytes if baseline_bytes is not None else peak)
    words = str(rec.get("command", "")).split()
    case = " ".join(w for i, w in enumerate(words) if w not in _HIDDEN and (i == 0 or words[i - 1] not in _HIDDEN))
    return {"bench": f"module {rec['module']}", "case": case, "seconds": rec.get("seconds"),
            "ratio_is": rec.get("status", ""), "peak_mb": _mb(over), "peak_rss_mb": _mb(peak),
            "peak_is": "process peak RSS - bare interpreter's" if baseline_bytes is not None and peak is not None
            else "process peak RSS" if peak is not None else ""}


def summarise(rec: dict, baseline_bytes: Optional[int] = None, nbody_target: Optional[float] = None) -> list[dict]:
    """Rows of the suite table for one module's result: its specific rows (n-body, cloning scale, analysis), then its
    status row with the process memory peak (see :func:`module_row`)."""
    name, res = rec["module"], rec.get("result") or {}
    rows: list[dict] = []
    if name == "nbody" and isinstance(res.get("rows"), list):
        rows += nbody_rows(res, nbody_target)
    if name == "clone_scale" and isinstance(res.get("rows"), list):
        rows += clone_scale_rows(res)
    if name == "analysis" and isinstance(res.get("cases"), list):
        for c in res["cases"]:
            if "time_ratio_vs_matmul" in c:
                rows.append({"bench": "reynolds (analysis)", "case": f"{c['group']} {c['matrix']}",
                             "seconds": c["seconds"], "ratio": c["time_ratio_vs_matmul"],
                             "ratio_is": "time / W@M (n x n)", "peak_mb": c.get("peak_MB")})
    rows.append(module_row(rec, baseline_bytes))
    return rows
