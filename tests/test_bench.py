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
from benchmarks._summary import time_to_target  # noqa: E402
from benchmarks._util import count_flops, format_table, parse_child_peak, peak_memory, timeit, track_peak  # noqa: E402


def test_count_flops_sees_inside_fused_transformer_layers():
    """An eval-mode ``nn.TransformerEncoderLayer`` takes PyTorch's fused fast path, invisible to the flop
    counter; ``count_flops`` must count its real work (control: the bare counter misses most of it)."""
    from torch.utils.flop_counter import FlopCounterMode

    layer = torch.nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True).eval()
    x = torch.randn(8, 5, 64)
    d, L, F = 64, 5, 128
    linear = 2 * 8 * L * (d * 3 * d + d * d + 2 * d * F)       # qkv, output projection, MLP
    attention = 2 * 2 * 8 * L * L * d                          # q kᵀ and attention · v
    with torch.no_grad():
        n = count_flops(lambda: layer(x))
    # the linear maps are always counted; the tiny L x L attention products only where torch's counter
    # knows the CPU attention kernel
    assert linear <= n <= linear + attention
    with torch.no_grad():
        with FlopCounterMode(display=False) as bare:
            layer(x)
    assert bare.get_total_flops() < 0.5 * (linear + attention)
    assert torch.backends.mha.get_fastpath_enabled()            # restored


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
    with track_peak("cpu") as rec:  # the allocator left as it is: a fresh 64 MB block is still seen
        x = torch.ones(16_000_000)
        x += 1
    if rec["bytes"] is not None:
        assert 48 * 2 ** 20 < rec["bytes"] < 400 * 2 ** 20
    with track_peak("cpu") as small:  # control: a tiny block does not show as tens of MB
        torch.ones(10).sum()
    if small["bytes"] is not None:
        assert small["bytes"] < 16 * 2 ** 20


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
    from symclone.trainer import fused_adamw_supported, make_optimizer

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


def _nbody_result(curve_learned, baselines=True):
    res = {"size": "small", "published": {"LPS": 0.004},
           "rows": [{"model": "transformer", "test_mse": 0.04, "valid_mse": 0.039, "train_cpu_s": 8.0,
                     "peak_bytes": 3 * 2 ** 20, "curve": [[5, 1.0, 0.2, 0.09], [10, 2.5, 0.1, 0.039],
                                                          [15, 4.0, 0.05, 0.045]]},
                    {"model": "learned", "test_mse": 0.03, "train_cpu_s": 12.0, "peak_bytes": 5 * 2 ** 20,
                     "curve": curve_learned},
                    {"model": "x", "error": "e"}]}
    if baselines:
        res["baselines"] = {"static_mse": 0.5, "linear_mse": 0.06, "linear_tau": 0.1}
    return res


def test_summarise_nbody_time_to_target_and_peaks():
    """Time-to-target from the recorded curve (first valid MSE <= the bare transformer's best), its ratio to
    the bare model's time, test MSE over the same run's extrapolation baseline, and every row's peak."""
    rec = {"module": "nbody", "status": "ok", "seconds": 30.0,
           "command": "-m benchmarks.nbody --quick --device cpu --out r.json",
           "peak_bytes": 900 * 2 ** 20,
           "result": _nbody_result([[5, 3.0, 0.2, 0.05], [10, 6.0, 0.1, 0.038], [15, 9.0, 0.1, 0.030]])}
    rows = summarise(rec, baseline_bytes=400 * 2 ** 20)
    ttt = {r["model"]: r for r in rows if r["bench"] == "n-body time-to-MSE"}
    assert ttt["transformer"]["target_mse"] == pytest.approx(0.039)  # the bare model's best, not its last
    assert ttt["transformer"]["seconds"] == 2.5 and ttt["transformer"]["ratio"] == pytest.approx(1.0)
    assert ttt["learned"]["seconds"] == 6.0 and ttt["learned"]["ratio"] == pytest.approx(6.0 / 2.5)
    assert ttt["learned"]["reached"] and ttt["learned"]["peak_mb"] == pytest.approx(5.0)
    mse = {r["case"]: r for r in rows if r["bench"] == "n-body test MSE"}
    assert mse["learned (small)"]["ratio"] == pytest.approx(0.03 / 0.06)  # vs constant velocity, same run
    assert mse["learned (small)"]["peak_mb"] == pytest.approx(5.0)
    assert mse["const-velocity extrapolation (small)"]["ratio"] == pytest.approx(0.06 / 0.5)
    mod = rows[-1]
    assert mod["bench"] == "module nbody" and mod["peak_mb"] == pytest.approx(500.0)
    assert mod["peak_rss_mb"] == pytest.approx(900.0) and mod["case"] == "-m benchmarks.nbody --quick"
    # a model that never reaches the target: its whole training time, flagged as a lower bound
    slow = summarise({"module": "nbody", "result": _nbody_result([[5, 3.0, 0.2, 0.08], [10, 7.0, 0.1, 0.05]],
                                                                 baselines=False)})
    r = next(r for r in slow if r.get("model") == "learned" and r["bench"] == "n-body time-to-MSE")
    assert not r["reached"] and r["seconds"] == 12.0 and r["ratio"] == pytest.approx(12.0 / 2.5)
    assert "lower bound" in r["ratio_is"] and "not reached" in r["case"]
    r = next(r for r in slow if r.get("model") == "learned" and r["bench"] == "n-body test MSE")
    assert r["ratio"] == pytest.approx(0.03 / 0.04)  # no baseline recorded: vs the bare model's test MSE
    # an explicit target (e.g. EGNN's 0.0071): nobody reaches it
    given = [r for r in summarise(rec, nbody_target=0.0071) if r["bench"] == "n-body time-to-MSE"]
    assert all(not r["reached"] and r["target_is"] == "given" for r in given)
    with pytest.raises(ValueError, match="target"):
        time_to_target([[5, 1.0, 0.1, 0.1]], 0.0)


def test_summarise_unknown_module_and_table():
    rows2 = summarise({"module": "clone", "status": "exit 1", "seconds": 3.0, "command": "-m benchmarks.clone"})
    assert rows2[0]["ratio_is"] == "exit 1" and rows2[0]["peak_mb"] is None
    rows = summarise({"module": "nbody", "result": _nbody_result([[5, 3.0, 0.2, 0.05]])}, 1)
    table = format_table(rows + rows2, roofline.COLUMNS)
    assert table.count("\n") == len(rows) + 2 and "n-body time-to-MSE" in table
    assert "peak_mb" in table.splitlines()[0]
    assert "roofline" not in discover() and "__main__" not in discover()


def test_child_wrapper_reports_the_module_peak(tmp_path):
    """A module run through benchmarks._child keeps its exit status and reports its process peak: 192 MB
    more for a module that fills 192 MB than for one that allocates nothing (control)."""
    import subprocess
    import sys
    from pathlib import Path

    from benchmarks.__main__ import HERE, _child_env

    env = _child_env(1)
    env["PYTHONPATH"] = str(tmp_path) + ":" + env["PYTHONPATH"]
    peaks = {}
    for mb in (0, 192):
        (tmp_path / f"alloc{mb}.py").write_text(f"import sys\nb = b'x' * ({mb} * 2 ** 20)\nsys.exit(3)\n")
        p = subprocess.run([sys.executable, "-m", "benchmarks._child", f"alloc{mb}"], cwd=Path(HERE).parent,
                           env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 3, p.stderr  # the module's own exit status
        peaks[mb] = parse_child_peak(p.stderr)
    if sys.platform.startswith("linux"):
        assert 180 * 2 ** 20 < peaks[192] - peaks[0] < 260 * 2 ** 20


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


@pytest.mark.parametrize("module", ["benchmarks._summary", "benchmarks._util"])
def test_benchmark_helper_doctests(module):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(module))
    assert res.attempted > 0 and res.failed == 0


def test_nbody_extrapolation_baselines_recover_the_step():
    """Positions moved by exactly 0.5 v: the fitted constant-velocity baseline is exact, no-motion is not."""
    from benchmarks.nbody import extrapolation_baselines

    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, 7, generator=g)
    y = x[..., :3] + 0.5 * x[..., 3:6]
    b = extrapolation_baselines((x[:30], y[:30]), (x[30:], y[30:]))
    assert b["linear_tau"] == pytest.approx(0.5) and b["linear_mse"] < 1e-10
    assert b["static_mse"] == pytest.approx(float((0.5 * x[30:, :, 3:6]).pow(2).mean()), rel=1e-5)


def test_nbody_integrator_baseline_reproduces_the_simulator_at_its_own_step():
    """M = 1,000 steps of 1e-3 is the simulator itself (targets reproduced up to the float32 inputs); one coarse
    step is far off (control)."""
    from benchmarks.nbody import integrator_baselines
    from symclone.data.nbody import nbody_tensors

    mse = integrator_baselines(nbody_tensors("test", size="tiny", root=None), steps=(1, 1000))
    assert mse["1000"] < 1e-3 < 1.0 < mse["1"]


def test_nbody_error_concentration_shares_and_distance_correlation():
    """Errors put on the systems with the closest pairs: the worst 1 % holds all of it and the correlation with
    the smallest distance is strongly negative; errors spread evenly: shares equal the fractions."""
    from benchmarks.nbody import error_concentration

    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, 7, generator=g)
    p = x[..., :3]
    closest = ((p.unsqueeze(2) - p.unsqueeze(1)).norm(dim=-1) + torch.eye(5) * 1e9).amin((1, 2))
    y = torch.zeros(200, 5, 3)
    pred = torch.zeros(200, 5, 3)
    pred[closest.argsort()[:2]] = 1.0                         # the two closest systems: all the error
    c = error_concentration(pred, x, y)
    assert c["worst_1pct_share"] == pytest.approx(1.0) and c["mse"] == pytest.approx(2 / 200)
    even = error_concentration(torch.ones(200, 5, 3), x, y)
    assert even["worst_5pct_share"] == pytest.approx(0.05) and even["worst_10pct_share"] == pytest.approx(0.10)
    graded = error_concentration((1.0 / closest)[:, None, None].expand(200, 5, 3), x, y)
    assert graded["corr_log_error_log_min_distance"] == pytest.approx(-1.0)


def test_reference_p4_action_equals_the_library_action():
    """The bench's former p4 action (masked rot90 + materialised-index gathers) and the library's
    (turns by block + row slices) agree bit for bit on random per-sample draws; control: other draws differ."""
    from symclone.groups import get_group

    G = get_group("p4", size=7)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 2, 7, 7, generator=gen)
    g = G.sample(50, gen)
    assert torch.equal(roofline.reference_p4_action(g, x), G.act(g, x))
    assert not torch.equal(roofline.reference_p4_action(G.sample(50, gen), x), G.act(g, x))


def test_clone_scale_is_a_suite_module_with_summary_rows():
    """``python -m benchmarks`` runs ``clone_scale`` (found by discover, ``--quick`` in quick mode) and turns its
    JSON into one table row per clone plus its status row."""
    from benchmarks.__main__ import discover, module_command

    assert "clone_scale" in discover()
    base, opts = module_command("clone_scale", True, "r.json", "cpu")
    assert base[-2:] == ["benchmarks.clone_scale", "--quick"] and opts == ["--device", "cpu", "--out", "r.json"]
    res = {"rows": [{"row": "family", "side": 20, "cpu_s": 0.1, "over_matmul": 7.0, "peak_bytes": 2 ** 20,
                     "peak_over_weights": 6.0, "feature_rel_error": 0.0},
                    {"row": "function (projected)", "side": 112, "method": "ridge", "cpu_s": 178.0,
                     "estimated_peak_bytes": 2 ** 30, "peak_over_weights": 11.1}]}
    rows = summarise({"module": "clone_scale", "status": "ok", "result": res, "seconds": 6.0})
    assert [r["bench"] for r in rows] == ["clone scale", "clone scale", "module clone_scale"]
    assert rows[0]["ratio"] == 7.0 and rows[1]["ratio"] is None and rows[1]["peak_mb"] == 1024.0
