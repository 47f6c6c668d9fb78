"""Timing, peak memory, FLOP counting and the machine's matmul rate for the benchmark suite.

Every figure the suite reports is a ratio of two measurements taken in the same process, e.g. a step's
time over its roofline floor ``FLOPs / measured matmul rate``. FLOPs come from
``torch.utils.flop_counter.FlopCounterMode`` on the real step (forward + backward), not from formulas.
Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the increase of the process's peak
resident set (``VmHWM`` after resetting it through ``/proc/self/clear_refs``) over the resident set
before the call, measured with the glibc heap cache off (see ``symclone.runtime.tune_cpu_allocator``) so
that reused free memory cannot hide an allocation; allocations below 128 KiB may still be reused unseen.
:func:`track_peak` measures the same increase around a longer run (an n-body model's training) without
touching the allocator, so that the timing it wraps is unchanged. A benchmark module run by the suite
reports its whole process's peak resident set (``getrusage(RUSAGE_SELF).ru_maxrss``, with its own
children's) through :data:`PEAK_MARK` on stderr (see ``benchmarks/_child.py``).
"""
from __future__ import annotations

import re
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import torch

__all__ = ["timeit", "clock_name", "peak_memory", "track_peak", "process_peak_bytes", "parse_child_peak", "PEAK_MARK",
           "count_flops", "matmul_rate", "sync", "format_table", "fmt"]

#: the line a benchmark module run through ``benchmarks/_child.py`` writes last on stderr: its peak RSS in KiB
PEAK_MARK = "SYMCLONE_BENCH_PEAK_RSS_KB="


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


#: the largest ``VmHWM`` (KiB) seen before :func:`_reset_hwm` reset it: :func:`process_peak_bytes` is the
#: process's peak over its whole life even after the per-call measurements reset the high-water mark
_HWM_KB = {"max": 0}


def _malloc_trim() -> None:
    """Return the C heap's free pages to the system (glibc; a no-op elsewhere)."""
    try:
        from symclone.runtime import _libc

        lib = _libc()
    except (ImportError, OSError):
        return
    if lib is not None and hasattr(lib, "malloc_trim"):
        lib.malloc_trim(0)


def _reset_hwm() -> None:
    """Reset the resident-set high-water mark ``VmHWM`` (Linux; ``OSError`` elsewhere), remembering it."""
    _HWM_KB["max"] = max(_HWM_KB["max"], _status_kb("VmHWM") or 0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def peak_memory(fn: Callable[[], Any], device: torch.device | str = "cpu") -> tuple[Any, Optional[int]]:
    """``(fn(), peak bytes)``: :func:`track_peak` around one call (CUDA allocator peak, or the CPU resident-set
    peak increase; None if unknown). On CPU the glibc heap cache is off during the call (large blocks by
    ``mmap``, free heap released) so that the resident set follows live tensors, and restored afterwards."""
    dev = torch.device(device)
    if dev.type == "cuda":
        with track_peak(dev) as rec:
            out = fn()
        return out, rec["bytes"]
    from symclone.runtime import cpu_allocator_tuned, tune_cpu_allocator

    tuned = cpu_allocator_tuned()
    tune_cpu_allocator(False)
    try:
        with track_peak(dev) as rec:
            out = fn()
    finally:
        if tuned:
            tune_cpu_allocator(True)
    return out, rec["bytes"]


@contextmanager
def track_peak(device: torch.device | str = "cpu") -> Iterator[dict]:
    """Peak memory of the code in the ``with`` block, in ``rec["bytes"]`` on exit (``None`` if unknown).

    CUDA: ``max_memory_allocated`` minus the allocation at entry (after ``reset_peak_memory_stats``). CPU
    (Linux): the process's resident-set high-water mark ``VmHWM``, reset at entry through
    ``/proc/self/clear_refs``, minus the resident set ``VmRSS`` at entry. Unlike :func:`peak_memory` (this
    block with the heap cache off) the allocator's settings are left as they are, so that what the block times runs as it would alone; free
    heap memory is returned to the system at entry (glibc ``malloc_trim(0)``) so that an earlier block's
    freed memory, reused unseen, does not hide this block's peak (free memory the block itself reuses is
    not counted twice: the figure is the block's resident-set growth).

    >>> with track_peak("cpu") as rec:
    ...     x = torch.ones(4_000_000)                   # 16 MB
    >>> rec["bytes"] is None or rec["bytes"] > 8 * 2 ** 20
    True
    """
    dev = torch.device(device)
    rec: dict = {"bytes": None}
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        yield rec
        torch.cuda.synchronize(dev)
        rec["bytes"] = int(torch.cuda.max_memory_allocated(dev) - base)
        return
    try:
        _malloc_trim()
        _reset_hwm()
        base = _status_kb("VmRSS")
    except OSError:
        base = None
    yield rec
    peak = _status_kb("VmHWM") if base is not None else None
    if peak is not None:
        rec["bytes"] = max(0, peak - base) * 1024


def process_peak_bytes() -> int:
    """Peak resident set of this process over its life, or of any child it waited for, in bytes.

    Linux: the largest ``VmHWM`` of this process (including the values :func:`peak_memory` and
    :func:`track_peak` reset); ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used there because the kernel
    carries the parent's resident set at ``fork`` into the child's. Children: ``RUSAGE_CHILDREN`` (KiB on
    Linux, bytes on macOS). Elsewhere: ``ru_maxrss`` of this process.

    >>> process_peak_bytes() > 2 ** 20
    True
    """
    import resource

    scale = 1 if sys.platform == "darwin" else 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale
    hwm = _status_kb("VmHWM")
    own = max(hwm, _HWM_KB["max"]) * 1024 if hwm is not None else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return int(max(own, children))


def parse_child_peak(stderr: str) -> Optional[int]:
    """Bytes of the last :data:`PEAK_MARK` line in a module's ``stderr`` (``None`` if it wrote none).

    >>> parse_child_peak("log\\n" + PEAK_MARK + "2048\\n")
    2097152
    >>> parse_child_peak("Traceback ...") is None
    True
    """
    found = None
    for line in stderr.splitlines():
        if line.startswith(PEAK_MARK):
            try:
                found = int(line[len(PEAK_MARK):].strip()) * 1024
            except ValueError:
                continue
    return found


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of one call (matmul/conv/einsum/bmm, forward and backward).

    The call runs with PyTorch's fused transformer/attention fast path switched off
    (``torch.backends.mha.set_fastpath_enabled(False)``): the counter does not see inside the fused
    ``_transformer_encoder_layer_fwd`` kernel, so an ``nn.TransformerEncoderLayer`` in eval mode counted as
    almost free (3 MFLOP instead of 66 for the n-body transformer student at batch 32: a floor 22x too low).
    The decomposed ops do the same arithmetic, so the count is the layer's real work.
    """
    from torch.utils.flop_counter import FlopCounterMode

    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return int(counter.get_total_flops())


def matmul_rate(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, n: Optional[int] = None,
                min_time: float = 0.5) -> dict:
    """Measured FLOP/s of an ``n × n`` matmul (``2n³`` FLOPs) on ``device`` in ``dtype``, and the peak memory of
    one product (``peak_bytes``, :func:`peak_memory`: the ``n × n`` output)."""
    dev = torch.device(device)
    n = n or (8192 if dev.type == "cuda" else 1024)
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    t = timeit(lambda: a @ b, dev, min_time=min_time)
    _, peak = peak_memory(lambda: a @ b, dev)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "seconds": t, "flops_per_s": 2 * n ** 3 / t,
            "peak_bytes": peak}


def fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if x == 0:
            return "0"
        return f"{x:.3g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.2e}"
    return str(x)


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of ``rows`` restricted to ``columns`` (``|`` inside a cell escaped as ``\\|``).

    >>> print(format_table([{"a": "x|y", "b": 0.5}], ["a", "b"]))
    | a    | b   |
    |------|-----|
    | x\\|y | 0.5 |
    """
    cells = [[fmt(r.get(c)).replace("|", "\\|") for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    return "\n".join(out)
