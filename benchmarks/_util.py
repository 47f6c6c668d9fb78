"""Timing, peak memory, FLOP counting and the machine's matmul rate for the benchmark suite.

Every figure the suite reports is a ratio of two measurements taken in the same process, e.g. a step's
time over its roofline floor ``FLOPs / measured matmul rate``. FLOPs come from
``torch.utils.flop_counter.FlopCounterMode`` on the real step (forward + backward), not from formulas.
Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the increase of the process's peak
resident set (``VmHWM`` after resetting it through ``/proc/self/clear_refs``) over the resident set
before the call (a lower bound when freed memory is reused).
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
           max_reps: int = 1000, min_reps: int = 3) -> float:
    """Fastest seconds per call of ``fn`` (after ``warmup`` calls), repeating for at least ``min_time``
    seconds (on the clock of :func:`clock_name`). The minimum, not the median: on a shared machine the
    noise only ever adds time, so the fastest repetition is the best estimate of the code's own cost."""
    clock = _clock(device)
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    t_start = clock()
    while len(times) < max_reps and (len(times) < min_reps or clock() - t_start < min_time):
        t0 = clock()
        fn()
        sync(device)
        times.append(clock() - t0)
    return min(times)


def _status_kb(field: str) -> Optional[int]:
    try:
        m = re.search(rf"{field}:\s+(\d+)\s*kB", open("/proc/self/status").read())
    except OSError:
        return None
    return int(m.group(1)) if m else None


_MMAP_FIXED = False


def _fix_mmap_threshold() -> None:
    """glibc: serve allocations >= 1 MiB by mmap (returned to the OS on free) instead of a dynamically
    growing threshold, so the resident set follows the tensors that are alive (CPU peak measurement)."""
    global _MMAP_FIXED
    if _MMAP_FIXED:
        return
    _MMAP_FIXED = True
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


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
    _fix_mmap_threshold()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return fn(), None
    base = _status_kb("VmRSS")
    out = fn()
    peak = _status_kb("VmHWM")
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
