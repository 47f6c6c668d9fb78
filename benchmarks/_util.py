"""Timing, peak memory, FLOP counting and the machine's matmul rate for the benchmark suite.

Every figure the suite reports is a ratio of two measurements taken in the same process, e.g. a step's
time over its roofline floor ``FLOPs / measured matmul rate``. FLOPs come from
``torch.utils.flop_counter.FlopCounterMode`` on the real step (forward + backward), not from formulas.
Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the increase of the process's peak
resident set (``VmHWM`` after resetting it through ``/proc/self/clear_refs``) over the resident set
before the call, measured with the glibc heap cache off (see ``symclone.runtime.tune_cpu_allocator``) so
that reused free memory cannot hide an allocation; allocations below 128 KiB may still be reused unseen.
"""
from __future__ import annotations

import re
import time
from typing import Any, Callable, Optional

import torch

__all__ = ["timeit", "clock_name", "peak_memory", "count_flops", "matmul_rate", "sync", "format_table", "fmt"]


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _clock(device: torch.device | str) -> Callable[[], float]:
    """CPU with one intra-op thread: this thread's CPU time (robust on a shared machine: time spent
    descheduled is not counted); otherwise wall-clock time (CUDA: after a synchronize)."""
    if torch.device(device).type == "cpu" and torch.get_num_threads() == 1:
        return time.thread_time
    return time.perf_counter


def clock_name(device: torch.device | str) -> str:
    return "thread_cpu_time" if _clock(device) is time.thread_time else "wall"


def timeit(fn: Callable[[], Any], device: torch.device | str = "cpu", min_time: float = 0.5, warmup: int = 1,
           max_reps: int = 1000, min_reps: int = 3, min_sample: float = 1e-3) -> float:
    """Fastest seconds per call of ``fn`` (after ``warmup`` calls), repeating for at least ``min_time``
    seconds (on the clock of :func:`clock_name`). The minimum, not the median: on a shared machine the
    noise only ever adds time, so the fastest repetition is the best estimate of the code's own cost.

    Each sample times a batch of ``n`` back-to-back calls, with ``n`` doubled until one batch lasts at
    least ``min_sample`` seconds, so that calls shorter than the clock's tick (CPU-time clocks on some
    kernels advance in scheduler ticks) are still measured rather than read as zero."""
    clock = _clock(device)
    for _ in range(warmup):
        fn()
    sync(device)

    def batch(n: int) -> float:
        t0 = clock()
        for _ in range(n):
            fn()
        sync(device)
        return clock() - t0

    n, elapsed = 1, batch(1)
    while elapsed < min_sample and n < 2 ** 20:
        n *= 2
        elapsed = batch(n)
    times: list[float] = [elapsed / n]
    t_start = clock()
    while len(times) < max_reps and (len(times) < min_reps or clock() - t_start < min_time):
        times.append(batch(n) / n)
    best = min(times)
    if best <= 0.0:  # a clock that never advanced: fall back to wall time rather than report zero cost
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync(device)
        best = max((time.perf_counter() - t0) / n, 1e-12)
    return best


def _status_kb(field: str) -> Optional[int]:
    try:
        m = re.search(rf"{field}:\s+(\d+)\s*kB", open("/proc/self/status").read())
    except OSError:
        return None
    return int(m.group(1)) if m else None


def peak_memory(fn: Callable[[], Any], device: torch.device | str = "cpu") -> tuple[Any, Optional[int]]:
    """``(fn(), peak bytes)``: CUDA allocator peak, or the CPU resident-set peak increase (None if unknown)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        out = fn()
        torch.cuda.synchronize()
        return out, int(torch.cuda.max_memory_allocated(dev) - base)
    from symclone.runtime import cpu_allocator_tuned, tune_cpu_allocator

    tuned = cpu_allocator_tuned()
    tune_cpu_allocator(False)  # large blocks by mmap, free heap released: the resident set follows live tensors
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        base = _status_kb("VmRSS")
        out = fn()
        peak = _status_kb("VmHWM")
    except OSError:
        return fn(), None
    finally:
        if tuned:
            tune_cpu_allocator(True)
    if base is None or peak is None:
        return out, None
    return out, max(0, peak - base) * 1024


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of one call (matmul/conv/einsum/bmm, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_rate(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, n: Optional[int] = None,
                min_time: float = 0.5) -> dict:
    """Measured FLOP/s of an ``n × n`` matmul (``2n³`` FLOPs) on ``device`` in ``dtype``."""
    dev = torch.device(device)
    n = n or (8192 if dev.type == "cuda" else 1024)
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    t = timeit(lambda: a @ b, dev, min_time=min_time)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "seconds": t, "flops_per_s": 2 * n ** 3 / t}


def fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if x == 0:
            return "0"
        return f"{x:.3g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.2e}"
    return str(x)


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of ``rows`` restricted to ``columns``."""
    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    return "\n".join(out)
