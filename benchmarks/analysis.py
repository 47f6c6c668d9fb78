"""Benchmark of ``structure_residual`` (issue 5): seconds and peak extra memory on

* the dense matrix of an escnn C4 lifting layer, 1 -> 8 regular fields on 28x28 (25088 x 784);
* the dense matrix of a 3x3 circular conv 1 -> 8 channels on 28x28 (T(2), 6272 x 784);

each as a ratio to one dense matmul ``W @ M`` with a 784 x 784 ``M`` timed in the same run, plus
the generic ``group.act`` path against the fast path on a smaller p4 problem.

Peak memory = the largest resident set size sampled every ~0.5 ms during the call minus the size
before it (torch CPU allocations are invisible to ``tracemalloc``), also given in units of size(W).

    python -m benchmarks.analysis [--quick] [--out results/analysis.json] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from symclone.analysis import structure_residual

PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def measure(fn: Callable[[], object], repeats: int = 3) -> dict:
    """Median seconds and max sampled peak extra RSS (bytes) of ``fn`` over ``repeats`` calls."""
    times, peaks = [], []
    for _ in range(repeats):
        base = _rss()
        peak = [base]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss())
                time.sleep(0.0005)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        peak[0] = max(peak[0], _rss())
        stop.set()
        th.join()
        del out
        times.append(dt)
        peaks.append(peak[0] - base)
    return {"seconds": statistics.median(times), "peak_bytes": max(peaks)}


def lifting_matrix(size: int, fields: int) -> torch.Tensor:
    """escnn R2Conv (trivial -> ``fields`` C4 regular fields, 3x3, circular) on basis images."""
    from escnn import gspaces, nn as enn

    torch.manual_seed(0)
    gs = gspaces.rot2dOnR2(4)
    conv = enn.R2Conv(enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, fields * [gs.regular_repr]), 3,
                      padding=1, padding_mode="circular", bias=False).eval()
    n = size * size
    with torch.no_grad():
        out = conv(enn.GeometricTensor(torch.eye(n).view(n, 1, size, size), conv.in_type)).tensor
    return out.reshape(n, -1).T.contiguous()


def conv_matrix(size: int, channels: int) -> torch.Tensor:
    n = size * size
    k = torch.randn(channels, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    basis = F.pad(torch.eye(n).view(n, 1, size, size), (1, 1, 1, 1), mode="circular")
    return F.conv2d(basis, k).reshape(n, -1).T.contiguous()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16x16 grids, 4 fields (seconds)")
    ap.add_argument("--out", default="results/analysis.json")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    size, fields = (16, 4) if args.quick else (28, 8)
    n = size * size
    cases = []
    Wc = lifting_matrix(size, fields)
    Wt = conv_matrix(size, fields)
    M = torch.randn(n, n)
    for label, W, runs in [
        (f"C4 lifting {tuple(Wc.shape)}", Wc, [("p4", "regular"), ("c4", "regular"), ("t2", "regular")]),
        (f"T(2) conv {tuple(Wt.shape)}", Wt, [("t2", "image")]),
    ]:
        base = measure(lambda: W @ M)
        wbytes = W.numel() * W.element_size()
        out_shape = (W.shape[0] // n, size, size)
        for group, rep in runs:
            r = structure_residual(W, group, (1, size, size), out_shape, "image", rep)
            m = measure(lambda: structure_residual(W, group, (1, size, size), out_shape, "image", rep))
            cases.append({"matrix": label, "group": group, "path": "fast", "residual": r,
                          "seconds": m["seconds"], "peak_MB": m["peak_bytes"] / 2**20,
                          "peak_x_size_W": m["peak_bytes"] / wbytes, "matmul_seconds": base["seconds"],
                          "matmul_peak_MB": base["peak_bytes"] / 2**20,
                          "time_ratio_vs_matmul": m["seconds"] / base["seconds"],
                          "memory_ratio_vs_matmul": m["peak_bytes"] / max(base["peak_bytes"], 1)})
    # generic group.act path vs fast path, smaller p4 problem
    s = 8 if args.quick else 12
    Wg = lifting_matrix(s, 2).double()
    for path in ("fast", "generic"):
        m = measure(lambda: structure_residual(Wg, "p4", (1, s, s), (8, s, s), "image", "regular",
                                               method=path), repeats=1)
        cases.append({"matrix": f"C4 lifting {tuple(Wg.shape)} float64", "group": "p4", "path": path,
                      "residual": structure_residual(Wg, "p4", (1, s, s), (8, s, s), "image", "regular", method=path),
                      "seconds": m["seconds"], "peak_MB": m["peak_bytes"] / 2**20,
                      "peak_x_size_W": m["peak_bytes"] / (Wg.numel() * 8)})
    res = {"threads": args.threads, "quick": args.quick, "torch": torch.__version__, "cases": cases}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    head = f"{'matrix':34s} {'group':5s} {'path':7s} {'residual':>9s} {'s':>7s} {'peak MB':>8s} {'xW':>5s} " \
           f"{'t/matmul':>8s} {'mem/matmul':>10s}"
    print(head)
    print("-" * len(head))
    for c in cases:
        tr = f"{c['time_ratio_vs_matmul']:8.2f}" if "time_ratio_vs_matmul" in c else f"{'-':>8s}"
        mr = f"{c['memory_ratio_vs_matmul']:10.2f}" if "memory_ratio_vs_matmul" in c else f"{'-':>10s}"
        print(f"{c['matrix']:34s} {c['group']:5s} {c['path']:7s} {c['residual']:9.1e} {c['seconds']:7.3f} "
              f"{c['peak_MB']:8.1f} {c['peak_x_size_W']:5.2f} {tr} {mr}")
    base_rows = {c["matrix"]: c for c in cases if "matmul_seconds" in c}
    for label, c in base_rows.items():
        print(f"matmul W @ M ({n}x{n}) for {label}: {c['matmul_seconds']:.3f} s, {c['matmul_peak_MB']:.1f} MB")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
