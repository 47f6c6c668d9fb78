"""Analysis defaults that must be right without options: the Lie derivative of every student (also
transformers), zoom windows chosen from the data, curves of closed-form / trained layers, and the
downstream beta-sweep figure."""
from __future__ import annotations

import math

import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

from symclone.analysis import analyze_models, relative_lie_derivative
from symclone.analysis import plots
from symclone.analysis._figures import curve_data
from symclone.analysis._analyze_run import model_lie_derivative

D = torch.float64


# ---- Lie derivative -----------------------------------------------------------------------------------

def _c4_teacher(size: int = 8, fields: int = 1, depth: int = 1):
    from symclone.registry import create_teacher
    return create_teacher("gcnn_c4", fields=fields, depth=depth, size=size)


def _transformer(teacher):
    from symclone.registry import create_student
    return create_student("transformer", teacher=teacher, dim=16, depth=1, heads=2, patch=2)


def _smooth_image(n: int = 16, channels: int = 1) -> torch.Tensor:
    r = torch.arange(n, dtype=D) - (n - 1) / 2
    blob = torch.exp(-((r[:, None] - 2.5) ** 2 + (r[None, :] + 1.5) ** 2) / 6)
    return torch.stack([blob * (1 + c) for c in range(channels)])[None]


def test_transformer_student_lie_derivative_is_computed():
    teacher = _c4_teacher()
    student = _transformer(teacher)
    x = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(0))
    r = model_lie_derivative(student, x)
    assert math.isfinite(r["value"]) and r["value"] > 1e-3  # absolute position embeddings: not equivariant
    assert r["method"].startswith("jvp") and r["region"] == "full"
    # and the run analysis records it (with its method) instead of skipping it
    e = analyze_models(teacher, student, "unused", plots=False, support=None)["structure"]["layers"][0]
    assert math.isfinite(e["lie_derivative"]["student"]) and e["lie_derivative"]["student"] > 1e-3
    assert e["lie_derivative_method"]["student"].startswith("jvp")
    assert e["lie_derivative"]["teacher"] < 1e-5 and "lie_derivative_skipped" not in e


def test_rotation_lie_derivative_equivariant_vs_mlp_control():
    x = _smooth_image(16, 2)
    # exactly equivariant to continuous rotations: a pointwise (1x1) channel mixing commutes with Â
    mix = torch.nn.Conv2d(2, 3, 1).double()
    # also through scaled-dot-product attention: a gain computed by attention from the channel means
    # (exactly invariant: the circular generator sums to zero over the grid) times the image
    attn = torch.nn.MultiheadAttention(2, 1, batch_first=True).double()

    def attention_model(h: torch.Tensor) -> torch.Tensor:
        q = torch.stack([h.mean((-2, -1)), h.square().mean((-2, -1))], 1)  # (B, 2 tokens, C)
        w, _ = attn(q, q, q, need_weights=False)
        return h * torch.sigmoid(w.sum((1, 2)))[:, None, None, None]

    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 256, 2 * 256)).double()

    def control(h: torch.Tensor) -> torch.Tensor:
        return mlp(h).view(-1, 2, 16, 16)

    eq = relative_lie_derivative(mix, "rotation", x)
    assert relative_lie_derivative(attention_model, "rotation", x)["method"].startswith("jvp")
    eq_attn = relative_lie_derivative(attention_model, "rotation", x)
    ctl = relative_lie_derivative(control, "rotation", x)
    assert eq["value"] < 1e-12 and eq_attn["value"] < 1e-10, (eq, eq_attn)
    assert ctl["value"] > 0.1, ctl
    # the transformer student on the same generator: a finite number
    student = _transformer(_c4_teacher(size=16, fields=1)).double()
    tr = relative_lie_derivative(lambda h: student.layer_forward(1, h, pre_activation=True), "rotation", x[:, :1])
    assert math.isfinite(tr["value"]) and tr["value"] > 1e-3


class _NoForwardAD(torch.autograd.Function):
    """An op without a forward-mode derivative (old-style autograd.Function)."""

    @staticmethod
    def forward(ctx, h):
        return 2 * h

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad


class _Opaque(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def layer_forward(self, l, h, params=None, pre_activation=False):
        return _NoForwardAD.apply(self.inner.layer_forward(l, h, pre_activation=pre_activation))


def test_lie_derivative_falls_back_to_float64_finite_difference_and_records_why():
    from symclone.analysis._analyze_run import _lie
    from symclone.registry import create_student
    teacher = _c4_teacher()
    mlp = create_student("mlp", teacher=teacher, seed=2)
    x = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(3))
    ref = model_lie_derivative(mlp, x)
    fd = model_lie_derivative(_Opaque(mlp), x)
    assert ref["method"] == "jvp" and fd["method"].startswith("finite difference (float64")
    assert abs(fd["value"] - ref["value"]) < 1e-4 * ref["value"]
    res = _lie({"ok": mlp, "broken": object()}, x)
    assert set(res["lie_derivative"]) == {"ok"} and "broken" in res["lie_derivative_skipped"]


# ---- figures --------------------------------------------------------------------------------------------

def test_matrix_zoom_shows_the_nonzero_band_of_a_c4_layer():
    teacher = _c4_teacher(size=12, fields=4)
    Wt = teacher.as_dense(1).detach().double()  # (2304, 144), regular output: the old zoom was empty here
    W = Wt + 1e-3 * torch.randn(Wt.shape, dtype=D, generator=torch.Generator().manual_seed(0))
    fig = plots.matrix_figure(W, Wt)
    zoom = {ax.get_label(): ax for ax in fig.axes if ax.get_label().startswith("zoom")}
    assert set(zoom) == {"zoom learned W", "zoom teacher (unrolled conv)", "zoom |W − W_T|"}
    arr = zoom["zoom teacher (unrolled conv)"].get_images()[0].get_array()
    assert arr.shape == (64, 64)
    assert int((abs(arr) > 0).sum()) >= 64 * 9 // 2  # a 3x3 kernel: 9 taps per row, at least half in view
    assert float(abs(zoom["zoom learned W"].get_images()[0].get_array()).max()) > 0.1
    n_images = sum(len(ax.get_images()) for ax in fig.axes)
    n_colorbars = sum(1 for ax in fig.axes if getattr(ax, "_colorbar", None) is not None)
    assert n_images == 6 and n_colorbars == 6


# metrics as `symclone clone` writes them (closed-form solver: one logged point per layer)
_CLOSED = {"layers": [
    {"layer": 1, "solver": "closed_form", "feature_rel_error": 1.3e-07, "loss_curve": [[0, 1.1e-07]],
     "equivariance_error": {"teacher": 7.9e-08, "student": 1.1e-07, "untrained": 1.18, "group": "p4"}},
    {"layer": 2, "solver": "closed_form", "feature_rel_error": 5.7e-02, "loss_curve": [[0, 2.3e-06]],
     "equivariance_error": {"teacher": 0.0, "student": 7.7e-02, "untrained": 1.18, "group": "p4"}}]}
_ADAM = {"layers": [
    {"layer": l, "solver": "adam", "feature_rel_error": 0.9,
     "loss_curve": [[s, 1.1 - s / 400] for s in range(0, 101, 10)],
     "equivariance_error": {"teacher": 1e-7, "student": 1.1, "untrained": 1.2, "group": "p4"},
     "equivariance_curve": [[0, 1.3], [50, 0.6], [99, 0.5]]} for l in (1, 2)]}


def _bar_heights(ax) -> list[float]:
    return [p.get_height() for p in ax.patches]


def test_curves_of_a_closed_form_run_have_no_lone_point():
    fig = plots.curves_figure(**curve_data(_CLOSED))
    for ax in fig.axes:
        for line in ax.get_lines():
            assert len(line.get_xdata()) >= 2, (ax.get_title(), line.get_xdata(), line.get_ydata())
    titles = [ax.get_title() for ax in fig.axes]
    assert "training loss" not in titles and "no loss curve" in fig.get_suptitle()
    final = next(ax for ax in fig.axes if ax.get_title() == "final error per layer")
    assert _bar_heights(final) == pytest.approx([1.3e-07, 5.7e-02])
    eq = next(ax for ax in fig.axes if ax.get_title() == "final equivariance error")
    assert len(eq.patches) == 6 and min(_bar_heights(eq)) > 0  # the exact 0 sits at the log axis floor


def test_curves_of_a_trained_run_keep_curves_and_bars_apart():
    fig = plots.curves_figure(**curve_data(_ADAM))
    curve_axes = [ax for ax in fig.axes if ax.get_lines()]
    bar_axes = [ax for ax in fig.axes if ax.patches]
    assert len(curve_axes) == 2 and len(bar_axes) == 2 and not set(curve_axes) & set(bar_axes)
    for ax in curve_axes:
        assert ax.get_xlabel() == "step"
        assert all(len(line.get_xdata()) >= 3 for line in ax.get_lines())
    loss = next(ax for ax in curve_axes if ax.get_title() == "training loss")
    assert list(loss.get_lines()[0].get_xdata()) == list(range(0, 101, 10))


# ---- downstream beta sweep ------------------------------------------------------------------------------

def _row(task, model, mode, beta, acc, inv, **kw):
    r = dict(task=task, model=model, mode=mode, beta=beta, anchor="l2" if mode == "anchored" else None, sweep="main",
             primary="test", primary_accuracy=acc, invariance_error=inv, invariant_ceiling=None, n_train_actual=100)
    r.update(kw)
    return r


def _beta_data() -> dict:
    narrow = [_row("t2-breaking", "cloned-blocks", "anchored", b, 0.3, e)
              for b, e in ((1.0, 1.62), (10.0, 1.52), (100.0, 1.68), (1000.0, 1.53))]
    wide = [_row("c4-breaking", "cloned-blocks", "anchored", b, 0.3 + b / 1e4, e)
            for b, e in ((0.1, 1.1), (1.0, 0.9), (10.0, 0.1), (100.0, 1e-3))]
    single = [_row("c4-generalisation", "cloned-blocks", "anchored", 100.0, 0.32, 0.92),
              _row("c4-generalisation", "cloned-mlp", "anchored", 100.0, 0.35, 0.95),
              _row("c4-generalisation", "cloned-blocks", "frozen", None, 0.66, 1e-7)]
    return {"rows": single + wide + narrow}


def test_beta_figure_plots_every_beta_with_a_fitting_axis():
    from benchmarks._downstream_report import beta_figure
    data = _beta_data()
    fig = beta_figure(data)
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    axes = fig.axes
    tops = {ax.get_title().split(" ")[0]: ax for ax in axes if ax.get_title()}
    assert set(tops) == {"c4-generalisation", "c4-breaking", "t2-breaking"}
    for task, top in tops.items():
        bottom = next(ax for ax in axes if ax is not top and ax.get_shared_x_axes().joined(ax, top))
        want = sorted({r["beta"] for r in data["rows"] if r["task"] == task and r["mode"] == "anchored"})
        for ax in (top, bottom):
            got = sorted({float(b) for line in ax.get_lines() if len(line.get_xdata()) and line.get_marker() != "None"
                          for b in line.get_xdata()})
            assert got == want, (task, got)
        inv = [r["invariance_error"] for r in data["rows"] if r["task"] == task and r["mode"] == "anchored"]
        assert bottom.get_yscale() == ("log" if max(inv) / min(inv) >= 10 else "linear"), task
        legend = bottom.get_legend()
        assert legend is not None
        for ax in (top, bottom):  # outside the plotting area
            assert not legend.get_window_extent().overlaps(ax.get_window_extent()), task
    assert tops["t2-breaking"].get_xscale() == "log"  # betas 1..1000 span decades


def test_downstream_plots_only_redraws_without_running(tmp_path):
    from benchmarks.downstream import main
    from symclone.io import write_json
    out = tmp_path / "downstream.json"
    write_json(out, _beta_data())
    before = out.read_bytes()
    assert main(["--plots-only", "--out", str(out)]) == 0
    assert (tmp_path / "downstream_beta.png").stat().st_size > 0 and out.read_bytes() == before
