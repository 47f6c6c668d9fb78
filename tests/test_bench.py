"""Benchmark-suite helpers: timing/memory/FLOP utilities, the suite's summaries, the CLI command, and
that distill's family-cloning loss equals the naive pre-speed-up one (value and gradient)."""
from __future__ import annotations

import json

import pytest
import torch

from symclone.commands.bench import load_suite

load_suite()  # puts the checkout's benchmarks/ on sys.path when it is not importable from the cwd
from benchmarks import roofline  # noqa: E402
from benchmarks.__main__ import discover, summarise  # noqa: E402
from benchmarks._util import count_flops, format_table, peak_memory, timeit  # noqa: E402


def test_count_flops_and_timeit():
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    assert count_flops(lambda: a @ b) == 2 * 64 * 32 * 16
    assert timeit(lambda: a @ b, min_time=0.01) > 0


def test_peak_memory_sees_a_large_temporary():
    def f():
        x = torch.ones(8_000_000)  # 32 MB
        return float((x * 2).sum())

    out, peak = peak_memory(f)
    assert out == 16_000_000.0
    if peak is not None:  # Linux: the resident-set peak
        assert 20 * 2 ** 20 < peak < 400 * 2 ** 20


@pytest.mark.parametrize("name,kw", [("cnn", {"paper_layer": True, "size": 10}),
                                     ("gcnn_c4", {"fields": 1, "depth": 1, "size": 8})])
def test_distill_family_loss_equals_naive_reference(name, kw):
    """The library's family loss (one K·C_out conv, fused mse_loss, dot-product denominator) against the
    pre-speed-up implementation written out in the bench (grouped conv over an expanded input, explicit
    difference and y²): same value and gradient; a different kernel draw (control) gives another loss."""
    from symclone.distill import build_pair
    from symclone.distill._family import family_loss_fn

    torch.manual_seed(0)
    teacher, student = build_pair(name, "blocks", kw)
    for p in teacher.parameters():
        p.requires_grad_(False)
    h = torch.randn(32, *teacher.feature_shapes[0])
    lib = family_loss_fn(student, teacher, 1, h, True, 8, 4, seed=3)
    ref = roofline.reference_family_loss_fn(student, teacher, 1, h, 8, 4, seed=3)
    other = roofline.reference_family_loss_fn(student, teacher, 1, h, 8, 4, seed=4)
    for step in (0, 5):
        W = student.layers[0].W
        W.grad = None
        a = ref(step)
        a.backward()
        ga = W.grad.clone()
        W.grad = None
        b = lib(step)
        b.backward()
        assert float(a) > 0.1
        assert abs(float(a) - float(b)) < 1e-5 * float(a)
        torch.testing.assert_close(W.grad, ga, rtol=1e-4, atol=1e-7)
        assert abs(float(other(step)) - float(a)) > 1e-3 * float(a)  # control: the check can fail


def test_make_optimizer_fused_equals_unfused():
    from symclone.distill._train import fused_adamw_supported, make_optimizer

    torch.manual_seed(0)
    w0, g = torch.randn(5, 7), torch.randn(5, 7)
    p1, p2 = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    opt = make_optimizer([p1], "adam", 1e-2, 1e-2)
    ref = torch.optim.AdamW([p2], lr=1e-2, weight_decay=1e-2, fused=False)
    assert opt.param_groups[0]["fused"] is (True if fused_adamw_supported([p1]) else None)
    for _ in range(3):
        for p, o in ((p1, opt), (p2, ref)):
            p.grad = g.clone()
            o.step()
    torch.testing.assert_close(p1, p2, rtol=1e-6, atol=1e-7)
    assert not torch.equal(p1, w0)
    assert not fused_adamw_supported([torch.zeros(2, dtype=torch.int64)])  # guard: falls back to unfused
    assert make_optimizer([torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))], "sgd", 0.1, 0.0)


def test_summarise_nbody_and_unknown_and_table():
    rec = {"module": "nbody", "result": {"size": "small", "rows": [{"model": "learned", "test_mse": 0.008,
                                                                     "train_cpu_s": 12.0}, {"model": "x",
                                                                                            "error": "e"}]}}
    rows = summarise(rec)
    assert len(rows) == 1 and rows[0]["ratio"] == pytest.approx(2.0)
    rows2 = summarise({"module": "clone", "status": "exit 1", "seconds": 3.0, "command": "-m benchmarks.clone"})
    assert rows2[0]["ratio_is"] == "exit 1"
    table = format_table(rows + rows2, roofline.COLUMNS)
    assert table.count("\n") == 3 and "n-body time-to-MSE" in table
    assert "roofline" not in discover() and "__main__" not in discover()


def test_bench_cli_rates_only(tmp_path, capsys):
    from symclone.cli import main

    rc = main(["bench", "--only", "none", "--device", "cpu", "--results", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "bench_cpu.json").read_text())
    assert res["device"] == "cpu" and res["modules"] == {} and res["rows"] == []
    assert main(["bench", "--device", "cuda"] if not torch.cuda.is_available() else ["bench", "--only", "x",
                                                                                    "--results", str(tmp_path)]) in (0, 2)


def test_rates_row_is_measured():
    rows, rate = roofline.bench_rates(torch.device("cpu"), quick=True)
    assert rate > 1e8  # > 0.1 GFLOP/s: a real measurement, not a constant
    assert rows[0]["throughput"] == pytest.approx(rate / 1e9)
    assert rows[1]["ratio"] == pytest.approx(rows[1]["throughput"] / rows[0]["throughput"])
