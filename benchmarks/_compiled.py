"""Eager vs ``torch.compile`` on the bare n-body transformer student (a row pair of ``benchmarks.roofline``).

Both rows divide the forward's time by its roofline floor (FLOPs counted with the fused attention fast path
off, :func:`benchmarks._util.count_flops`, over the fp32 matmul rate of the same run). The compiled row also
reports the one-off compile time (``compile_s``, CPU seconds) and the largest difference from eager.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from ._util import count_flops, peak_memory, timeit

__all__ = ["compiled_rows"]


def compiled_rows(dev: torch.device, rate: float, row: Callable[..., dict], batch: int = 32) -> list[dict]:
    """Rows ``n-body transformer B=batch eager`` and ``... torch.compile`` (inductor, static shapes)."""
    from symclone.registry import create_student, create_teacher

    torch.manual_seed(0)
    teacher = create_teacher("e3nn")
    model = create_student("transformer", teacher=teacher).to(dev).eval()
    x = torch.randn(batch, *teacher.feature_shapes[0], device=dev)
    rows = []
    with torch.no_grad():
        flops = count_flops(lambda: model(x))
        eager = timeit(lambda: model(x), dev, min_time=0.5)
        _, peak = peak_memory(lambda: model(x), dev)
        rows.append(row("compile", f"n-body transformer B={batch} eager", eager, eager / (flops / rate),
                        "time / roofline floor", batch / eager, "samples/s", peak, flops=flops))
        c0 = time.process_time()
        compiled = torch.compile(model, dynamic=False)
        reference = model(x)
        diff = float((compiled(x) - reference).abs().max())
        compile_s = time.process_time() - c0
        t = timeit(lambda: compiled(x), dev, min_time=0.5)
        rows.append(row("compile", f"n-body transformer B={batch} torch.compile", t, t / (flops / rate),
                        "time / roofline floor", batch / t, "samples/s", None, flops=flops,
                        compile_s=round(compile_s, 1), eager_over_compiled=eager / t, max_abs_diff=diff))
    return rows
