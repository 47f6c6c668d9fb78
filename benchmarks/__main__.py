"""The benchmark suite: ``python -m benchmarks [--quick] [--device auto]`` (also ``symclone bench``).

Runs the scale/roofline measurements of :mod:`benchmarks.roofline` in this process, then every other
benchmark module present (``benchmarks/<name>.py``: clone, teachers, analysis, nbody, downstream, ...)
in its own subprocess as ``python -m benchmarks.<name> [--quick] --device <device> --out
results/suite/<name>[_quick].json`` (options a module rejects are dropped and it is rerun without them, so
CPU-only modules still run on a GPU machine). Known result files are summarised as rows of the same table
(n-body time-to-MSE, cloning at scale from ``clone_scale``, Reynolds cost; see ``benchmarks/_summary.py``) and
every module gets a status row with its process's memory peak over a bare interpreter's
(``benchmarks/_child.py``). Prints one Markdown table and writes
``results/bench_<device>[_quick].json``; on CUDA it also writes the copy meant for the repository,
``benchmarks/results/<device>[_quick].json`` (``cuda.json``; CPU results stay under ``results/`` only).
``--quick`` skips ``downstream`` (training runs), runs two of the n-body models, and stops starting
modules once 285 s are spent (under 5 minutes on a 2-core CPU).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from ._summary import summarise
from ._util import format_table, parse_child_peak

__all__ = ["main", "discover", "run_module", "summarise", "module_command", "drop_rejected", "COMMITTED",
           "baseline_peak"]

HERE = Path(__file__).resolve().parent
OWN = {"roofline", "__main__", "__init__"}
SLOW_IN_QUICK = {"downstream"}


#: modules known to take longest run last, so a --quick time budget cuts them rather than the cheap ones
LAST = ("nbody", "graphs", "downstream")
QUICK_BUDGET_S = 285.0
#: extra arguments in --quick mode (n-body: two of its models, so time-to-MSE fits the 5-minute budget)
QUICK_ARGS = {"nbody": ["--models", "transformer,learned"]}
#: where GPU results are kept in the repository (``benchmarks/results/<device>.json``)
COMMITTED = HERE / "results"


def discover() -> list[str]:
    """Benchmark modules next to this file (``benchmarks/<name>.py``, not private, not the suite itself),
    cheap ones first."""
    names = [p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_") and p.stem not in OWN]
    return sorted(names, key=lambda n: (LAST.index(n) + 1 if n in LAST else 0, n))


def module_command(name: str, quick: bool, out: Optional[Path] = None,
                   device: Optional[str] = None) -> tuple[list, list]:
    """``(base, options)`` of a module's command line: ``python -m benchmarks.<name> [--quick ...]`` and the
    options it may reject (``--device``, ``--out``)."""
    base = [sys.executable, "-m", f"benchmarks.{name}"] + (["--quick"] + QUICK_ARGS.get(name, []) if quick else [])
    opts: list[str] = []
    if device is not None:
        opts += ["--device", str(device)]
    if out is not None:
        opts += ["--out", str(out)]
    return base, opts


def drop_rejected(opts: list[str], stderr: str) -> Optional[list[str]]:
    """``opts`` without the ``--flag value`` pairs argparse reported as ``unrecognized arguments`` in ``stderr``;
    ``None`` when none of them was rejected (the failure is the module's own).

    >>> drop_rejected(["--device", "cuda", "--out", "x.json"], "error: unrecognized arguments: --device cuda")
    ['--out', 'x.json']
    >>> drop_rejected(["--out", "x.json"], "Traceback ...") is None
    True
    """
    line = next((ln for ln in stderr.splitlines() if "unrecognized arguments:" in ln), None)
    if line is None:
        return None
    rejected = set(line.split("unrecognized arguments:", 1)[1].split())
    keep, dropped = [], False
    for flag, value in zip(opts[::2], opts[1::2]):
        if flag in rejected:
            dropped = True
        else:
            keep += [flag, value]
    return keep if dropped else None


def _child_env(threads: int) -> dict:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(HERE.parent) + os.pathsep +
                os.environ.get("PYTHONPATH", ""))


def _wrapped(cmd: list) -> list:
    """``python -m M ARGS`` run through ``benchmarks._child``, which reports the process's memory peak."""
    return cmd[:1] + ["-m", "benchmarks._child"] + cmd[2:]


def baseline_peak(threads: int = 1) -> Optional[int]:
    """Peak resident bytes of a child interpreter that only imports torch and symclone (``None`` if unknown):
    what every module's process peak contains before the module does anything."""
    try:
        p = subprocess.run([sys.executable, "-m", "benchmarks._child", "--baseline"], cwd=HERE.parent,
                           env=_child_env(threads), capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return None
    return parse_child_peak(p.stderr) if p.returncode == 0 else None


def run_module(name: str, quick: bool, out: Path, timeout: float, threads: int,
               device: Optional[str] = None) -> dict:
    """``python -m benchmarks.<name> [--quick] [--device D] --out OUT`` in a subprocess (through
    ``benchmarks._child``); returns status, seconds, the process's memory peak (``peak_bytes``), its JSON and
    output tail. Options the module does not declare are dropped and it is rerun."""
    base, opts = module_command(name, quick, out, device)
    env = _child_env(threads)
    t0 = time.perf_counter()
    rec: dict = {"module": name, "command": " ".join(base[1:] + opts)}
    for _ in range(3):
        try:
            p = subprocess.run(_wrapped(base + opts), cwd=HERE.parent, env=env, capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            rec.update(status=f"timeout after {timeout:.0f}s", returncode=None)
            break
        rec.update(returncode=p.returncode, stdout_tail=(p.stdout + p.stderr)[-4000:],
                   peak_bytes=parse_child_peak(p.stderr))
        fewer = drop_rejected(opts, p.stderr) if p.returncode == 2 else None
        if fewer is not None:
            opts = fewer  # the module lacks some of the options: rerun without them
            rec["command"] = " ".join(base[1:] + opts)
            continue
        rec["status"] = "ok" if p.returncode == 0 else f"exit {p.returncode}"
        if "--out" in opts and out.exists():
            try:
                rec["result"] = json.loads(out.read_text())
            except (OSError, ValueError):
                pass
        break
    rec["seconds"] = time.perf_counter() - t0
    return rec


def main(argv: Optional[Sequence[str]] = None) -> int:
    from symclone.io import write_json
    from symclone.runtime import resolve_device

    from . import roofline

    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, skip slow modules (< 5 min on 2 CPU cores)")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (default 1: per-core numbers)")
    p.add_argument("--only", nargs="*", default=None,
                   help="run only these parts: 'roofline' and/or module names (default: all)")
    p.add_argument("--skip", nargs="*", default=[], help="modules to skip")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per module (default: 3600; --quick: 200 and the suite's 285 s budget)")
    p.add_argument("--results", default="results", help="folder for the JSON files")
    p.add_argument("--nbody-target", type=float, default=None,
                   help="validation MSE for the n-body time-to-MSE rows (default: the bare transformer's best "
                        "in the same run)")
    args = p.parse_args(argv)
    if args.nbody_target is not None and not (args.nbody_target > 0 and args.nbody_target != float("inf")):
        p.error(f"--nbody-target: expected a positive finite MSE, got {args.nbody_target}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    dev = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    suffix = "_quick" if args.quick else ""
    results = Path(args.results)
    t0 = time.perf_counter()
    wanted = set(args.only) if args.only is not None else None
    out: dict = {"device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else
                 _cpu_name(), "torch": torch.__version__, "quick": args.quick, "threads": args.threads,
                 "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])}
    rows: list[dict] = []
    if wanted is None or "roofline" in wanted:
        rf = roofline.run(quick=args.quick, device=str(dev))
        out["roofline"] = rf
        out["clock"] = rf["clock"]
        rows += rf["rows"]
    out["modules"] = {}
    for name in discover():
        if (wanted is not None and name not in wanted) or name in args.skip:
            continue
        if args.quick and name in SLOW_IN_QUICK and (wanted is None or name not in wanted):
            out["modules"][name] = {"module": name, "status": "skipped in --quick",
                                    "command": f"-m benchmarks.{name}"}
            continue
        timeout = args.timeout or (200.0 if args.quick else 3600.0)
        if args.quick and args.timeout is None:
            left = QUICK_BUDGET_S - (time.perf_counter() - t0)
            if left < 30:
                out["modules"][name] = {"module": name, "status": "skipped: --quick time budget spent",
                                        "command": f"-m benchmarks.{name} --quick"}
                continue
            timeout = min(timeout, left)
        # own folder: never overwrite the result files the modules' owners write by default
        out["modules"][name] = run_module(name, args.quick, results / "suite" / f"{name}{suffix}.json", timeout,
                                          args.threads, device=str(dev))
    # what every module's process holds before it does anything (torch + symclone imported): subtracted from
    # the modules' process peaks; measured only when a module reported one
    base_peak = baseline_peak(args.threads) if any(r.get("peak_bytes") for r in out["modules"].values()) else None
    out["baseline_peak_rss_mb"] = None if base_peak is None else base_peak / 2 ** 20
    for rec in out["modules"].values():
        rows += summarise(rec, base_peak, args.nbody_target)
    out["rows"] = rows
    out["seconds"] = time.perf_counter() - t0
    table = format_table(rows, roofline.COLUMNS)
    out["table"] = table
    print(table)
    dest = results / f"bench_{dev.type}{suffix}.json"
    write_json(dest, out)
    wrote = str(dest)
    if dev.type == "cuda":  # GPU results are kept in the repository (benchmarks/results/<device>.json)
        committed = COMMITTED / f"{dev.type}{suffix}.json"
        write_json(committed, out)
        wrote += f" and {committed}"
    print(f"\n{len(rows)} rows in {out['seconds']:.0f} s on {out['device_name']} ({out.get('clock', 'wall')} clock, "
          f"{args.threads} thread(s)); wrote {wrote}")
    return 0


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"cpu ({os.cpu_count()} cores)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
