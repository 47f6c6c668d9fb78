"""Figures of learned weight structure (matplotlib only here; no pyplot global state: every figure
is a standalone ``matplotlib.figure.Figure`` rendered by the Agg canvas). Each function writes
``<stem>.png`` and ``<stem>.pdf`` and returns the two paths.

(a) :func:`plot_matrix_vs_toeplitz` — learned W beside the teacher's unrolled Toeplitz matrix and
    ``|W − W_T|``, each full and in a zoomed window chosen from the data (paper Fig. 4);
(b) :func:`plot_feature_grid` — an input and its transforms × {teacher, cloned student, ...}
    (paper Figs. 5–6; C4 regular features shown as the max over the 4 orientations of field 0);
(c) :func:`plot_blocks` — the learned blocks W_b as images;
(d) :func:`plot_curves` — loss and equivariance error vs step (trained layers), final errors as bars;
(e) :func:`plot_kernels` — recovered vs teacher filters.

Every colour that encodes a value has a colour bar. ``matrix_figure`` and ``curves_figure`` build
the figures of (a) and (d) without writing them (for inspection and tests).

Examples
--------
>>> import tempfile, os, torch
>>> d = tempfile.mkdtemp()
>>> paths = plot_kernels(torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3), os.path.join(d, "k"))
>>> [os.path.getsize(p) > 0 for p in paths]
[True, True]
"""
from __future__ import annotations

from pathlib import Path
import math
from typing import Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = ["save_figure", "plot_matrix_vs_toeplitz", "plot_feature_grid", "plot_blocks", "plot_curves",
           "plot_kernels", "feature_image", "zoom_window", "matrix_figure", "curves_figure", "value_scale"]

Number = Union[int, float]


def save_figure(fig: Figure, stem: str | Path) -> list[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.pdf``; create the folder; return both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    return paths


def _np(t: torch.Tensor):  # -> numpy.ndarray
    """A float64 NumPy copy of ``t`` for matplotlib."""
    return t.detach().double().cpu().numpy()


def value_scale(values: Sequence[float], ratio: float = 10.0) -> str:
    """``"log"`` when the positive finite ``values`` span a factor of ``ratio`` (default: a decade) or
    more, else ``"linear"`` (zeros and negatives are ignored: the caller places them).

    Examples
    --------
    >>> value_scale([1.52, 1.68]), value_scale([1e-7, 0.5]), value_scale([0.0, 2.0]), value_scale([])
    ('linear', 'log', 'linear', 'linear')
    """
    pos = [float(v) for v in values if v is not None and math.isfinite(float(v)) and float(v) > 0]
    if len(pos) < 2:
        return "linear"
    return "log" if max(pos) / min(pos) >= ratio else "linear"


def zoom_window(M: torch.Tensor, size: int = 64, col_weight: Optional[torch.Tensor] = None
                ) -> tuple[int, int, int]:
    """``(row0, col0, size)`` of the ``size × size`` window of ``M`` (``(O, I)``, or ``(B, O, I)``
    summed over B) holding the most ``|M|`` mass, columns weighted by ``col_weight`` (``(I,)``,
    e.g. the data support) — so the zoom shows the matrix's structure, wherever it lies.

    Examples
    --------
    >>> M = torch.zeros(300, 100); M[200:210, 5:15] = 1.0
    >>> r0, c0, s = zoom_window(M, 32)
    >>> bool(M[r0:r0 + s, c0:c0 + s].sum() == 100), s
    (True, 32)
    """
    if M.ndim not in (2, 3):
        raise ValueError(f"M: expected a matrix (O, I) or blocks (B, O, I), got shape {tuple(M.shape)}")
    A = M.detach().abs().float()
    if A.ndim == 3:
        A = A.sum(0)
    O, I = A.shape
    s = max(1, min(int(size), O, I))
    if col_weight is not None:
        w = torch.as_tensor(col_weight).reshape(-1).to(A)
        if w.numel() != I:
            raise ValueError(f"col_weight: expected {I} entries (one per column), got {w.numel()}")
        if bool((A * w).sum() > 0):
            A = A * w
    stride = max(1, s // 8)
    pooled = F.avg_pool2d(A[None, None], kernel_size=s, stride=stride)[0, 0]
    k = int(torch.argmax(pooled))
    r0, c0 = (k // pooled.shape[1]) * stride, (k % pooled.shape[1]) * stride
    return r0, c0, s


def _colorbar(fig: Figure, im, ax, label: str = "") -> None:
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    cb.ax.tick_params(labelsize=7)
    if label:
        cb.set_label(label, fontsize=7)


def matrix_figure(W: torch.Tensor, W_teacher: Optional[torch.Tensor], window: int = 64, title: str = "",
                  col_weight: Optional[torch.Tensor] = None) -> Figure:
    """The figure of :func:`plot_matrix_vs_toeplitz` (not written). The zoom axes carry the label
    ``"zoom <panel name>"`` (``ax.get_label()``).

    Top row: the full learned ``W``, the teacher's unrolled matrix (same diverging colour scale) and
    ``|W − W_T|`` (its own scale); bottom row: the same window of each, chosen by
    :func:`zoom_window` on the teacher's matrix (the learned one without a teacher).
    """
    if W.ndim != 2:
        raise ValueError(f"W: expected a matrix (out_dim, in_dim), got shape {tuple(W.shape)}")
    mats = [("learned W", W, "W")]
    if W_teacher is not None:
        if tuple(W_teacher.shape) != tuple(W.shape):
            raise ValueError(f"W_teacher: expected W's shape {tuple(W.shape)}, got {tuple(W_teacher.shape)}")
        diff = (W.double() - W_teacher.double()).abs()
        rel = float(diff.norm() / (W_teacher.double().norm() or 1.0))
        mats += [("teacher (unrolled conv)", W_teacher, "W_T"), ("|W − W_T|", diff, f"rel. Frobenius {rel:.1e}")]
    r0, c0, s = zoom_window(W_teacher if W_teacher is not None else W, window, col_weight)
    n = len(mats)
    fig = Figure(figsize=(4.8 * n, 8.2), layout="constrained")
    vmax = max(float(m.abs().max()) for _, m, _ in mats[:2]) or 1.0
    for j, (name, M, note) in enumerate(mats):
        is_diff = name.startswith("|")
        kw = (dict(cmap="magma", vmin=0.0, vmax=float(M.max()) or 1.0) if is_diff
              else dict(cmap="RdBu_r", vmin=-vmax, vmax=vmax))
        ax = fig.add_subplot(2, n, j + 1)
        im = ax.imshow(_np(M), aspect="auto", interpolation="nearest", **kw)
        ax.add_patch(Rectangle((c0 - .5, r0 - .5), s, s, fill=False, edgecolor="lime" if is_diff else "k", lw=1.2))
        ax.set_title(f"{name} {tuple(M.shape)}" + (f"\n{note}" if is_diff else ""), fontsize=9)
        ax.set_xlabel("input index", fontsize=8)
        ax.set_ylabel("output index", fontsize=8)
        ax.set_label(name)
        _colorbar(fig, im, ax, "|difference|" if is_diff else "weight")
        az = fig.add_subplot(2, n, n + j + 1)
        im = az.imshow(_np(M[r0:r0 + s, c0:c0 + s]), extent=(c0 - .5, c0 + s - .5, r0 + s - .5, r0 - .5),
                       interpolation="nearest", **kw)
        az.set_title(f"zoom: rows {r0}:{r0 + s}, cols {c0}:{c0 + s}", fontsize=9)
        az.set_xlabel("input index", fontsize=8)
        az.set_ylabel("output index", fontsize=8)
        az.set_label(f"zoom {name}")
        _colorbar(fig, im, az, "|difference|" if is_diff else "weight")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_matrix_vs_toeplitz(W: torch.Tensor, W_teacher: Optional[torch.Tensor], stem: str | Path,
                            window: int = 64, title: str = "", col_weight: Optional[torch.Tensor] = None
                            ) -> list[Path]:
    """(a) The learned matrix beside the teacher's unrolled matrix and ``|W − W_T|``, full and zoomed
    (:func:`matrix_figure`); ``col_weight`` (``(in_dim,)``, e.g. the data support) steers the zoom."""
    return save_figure(matrix_figure(W, W_teacher, window, title, col_weight), stem)


def feature_image(h: torch.Tensor, regular: bool = False, channel: int = 0) -> torch.Tensor:
    """One ``(H, W)`` map of a feature ``(C, H, W)``: channel ``channel``, or for C4 regular fields
    the max over the 4 orientations of field ``channel``.

    Examples
    --------
    >>> feature_image(torch.arange(8.).view(8, 1, 1), regular=True, channel=1).item()
    7.0
    """
    if h.ndim != 3:
        raise ValueError(f"h: expected a feature map (C, H, W), got shape {tuple(h.shape)}")
    if regular:
        return h[4 * channel:4 * channel + 4].amax(0)
    return h[channel]


def plot_feature_grid(inputs: Sequence[tuple[str, torch.Tensor]],
                      rows: Mapping[str, Sequence[torch.Tensor]], stem: str | Path,
                      regular: bool = False, title: str = "") -> list[Path]:
    """(b) Row 0: the inputs ``(label, x (C, H, W))``; then one row per model with its feature map
    for each input (``rows[name][j]`` is the feature ``(C, H, W)`` for ``inputs[j]``)."""
    n = len(inputs)
    for name, feats in rows.items():
        if len(feats) != n:
            raise ValueError(f"rows: {name!r} has {len(feats)} feature maps for {n} inputs")
    fig = Figure(figsize=(1.9 * n + 2.0, 1.9 * (len(rows) + 1)), layout="constrained")
    imgs = [x[0] if x.ndim == 3 else x for _, x in inputs]
    lo, hi = min(float(m.min()) for m in imgs), max(float(m.max()) for m in imgs)
    axes = []
    for j, (label, _) in enumerate(inputs):
        ax = fig.add_subplot(len(rows) + 1, n, j + 1)
        im = ax.imshow(_np(imgs[j]), cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(label, fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
        if j == 0:
            ax.set_ylabel("input", fontsize=8)
        axes.append(ax)
    _colorbar(fig, im, axes)
    for i, (name, feats) in enumerate(rows.items(), start=1):
        maps = [feature_image(f, regular) for f in feats]
        vmax = max(float(m.abs().max()) for m in maps) or 1.0
        vmin = min(0.0, min(float(m.min()) for m in maps))
        axes = []
        for j, m in enumerate(maps):
            ax = fig.add_subplot(len(rows) + 1, n, i * n + j + 1)
            im = ax.imshow(_np(m), cmap="viridis", vmin=vmin, vmax=vmax)
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
            axes.append(ax)
        _colorbar(fig, im, axes)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, stem)


def plot_blocks(blocks: torch.Tensor, stem: str | Path, window: Optional[int] = 64, title: str = "",
                max_blocks: int = 15) -> list[Path]:
    """(c) Each learned block ``W_b`` (``blocks: (B, O, I)``; the first ``max_blocks``) as an image
    with its own colour bar; ``window`` zooms each block onto the region where it is largest
    (:func:`zoom_window`; blocks of a C4 layer act on different rows); ``None``: the whole matrix."""
    if blocks.ndim != 3:
        raise ValueError(f"blocks: expected (B, out_dim, in_dim), got {tuple(blocks.shape)}")
    B = min(blocks.shape[0], max_blocks)
    cols = min(B, 5)
    rows = -(-B // cols)
    fig = Figure(figsize=(2.9 * cols, 2.6 * rows + 0.4), layout="constrained")
    for b in range(B):
        if window is None:
            M, where = blocks[b], ""
        else:
            r0, c0, s = zoom_window(blocks[b], window)
            M, where = blocks[b, r0:r0 + s, c0:c0 + s], f" rows {r0}:{r0 + s}, cols {c0}:{c0 + s}"
        v = float(M.abs().max())
        ax = fig.add_subplot(rows, cols, b + 1)
        im = ax.imshow(_np(M), cmap="RdBu_r", vmin=-(v or 1.0), vmax=v or 1.0, interpolation="nearest",
                       aspect="auto")
        ax.set_title(f"W_{b + 1}{where}" + ("" if v else " (zero)"), fontsize=7)
        ax.set_xticks([]), ax.set_yticks([])
        _colorbar(fig, im, ax)
    fig.suptitle(title or ("blocks (zoom)" if window is not None else "blocks"), fontsize=9)
    return save_figure(fig, stem)


_WHO_COLOURS = {"teacher": "C2", "student": "C0", "untrained": "C3"}


def _who(label: str) -> str:
    return next((w for w in _WHO_COLOURS if w in label), "")


def _bars(ax, values: Mapping[str, float], colours: Sequence[str], ylabel: str) -> None:
    """Labelled bars (value written above each); log axis when the values span decades."""
    names, vals = list(values), [float(v) for v in values.values()]
    scale = value_scale(vals)
    pos = [v for v in vals if v > 0]
    floor = (min(pos) / 10 if pos else 1e-16) if scale == "log" else 0.0
    heights = [v if (v > 0 or scale == "linear") else floor for v in vals]
    ax.bar(range(len(names)), heights, color=list(colours), tick_label=names)
    for i, v in enumerate(vals):
        ax.annotate(f"{v:.1e}" if v else "0", (i, heights[i]), ha="center", va="bottom", fontsize=6,
                    xytext=(0, 1), textcoords="offset points")
    ax.set_yscale(scale)
    if scale == "log":
        ax.set_ylim(bottom=floor)
    ax.tick_params(axis="x", labelsize=7, rotation=25)
    ax.set_ylabel(ylabel, fontsize=8)


def curves_figure(losses: Mapping[str, Sequence[float]],
                  equivariance: Optional[Mapping[str, Union[Sequence[float], float]]] = None,
                  steps: Optional[Mapping[str, Sequence[float]]] = None,
                  final_errors: Optional[Mapping[str, float]] = None,
                  eq_steps: Optional[Mapping[str, Sequence[float]]] = None, title: str = "") -> Figure:
    """The figure of :func:`plot_curves` (not written): separate panels for curves against step and
    for per-layer final values, each only when there is something to show.

    Parameters
    ----------
    losses : loss curve per name; a curve needs two or more points. A one-point "curve" (a
        closed-form layer) is shown as a bar instead — unless ``final_errors`` is given, which then
        holds every layer's final value.
    equivariance : per name, a curve (sequence) or a final value (number).
    steps, eq_steps : x values of the loss / equivariance curves (default 0, 1, ...).
    final_errors : final relative error per layer (bars), e.g. ``{"layer 1 (closed form)": 1e-7}``.

    Examples
    --------
    >>> fig = curves_figure({"layer 1": [0.5]}, {"L1 student": 1e-7, "L1 untrained": 1.0})
    >>> [ax.get_title() for ax in fig.axes]
    ['final error per layer', 'final equivariance error']
    >>> sum(len(line.get_xdata()) == 1 for ax in fig.axes for line in ax.get_lines())
    0
    """
    curves = {k: [float(v) for v in ys] for k, ys in losses.items() if len(ys) >= 2}
    finals = dict(final_errors) if final_errors is not None else \
        {k: float(ys[-1]) for k, ys in losses.items() if len(ys) == 1}
    eq = dict(equivariance or {})
    eq_curves = {k: [float(v) for v in ys] for k, ys in eq.items() if isinstance(ys, (list, tuple)) and len(ys) >= 2}
    eq_bars = {k: float(v) for k, v in eq.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    eq_bars.update({k: float(v[-1]) for k, v in eq.items() if isinstance(v, (list, tuple)) and len(v) == 1})
    panels = [p for p, has in (("loss", curves), ("final", finals), ("eq", eq_curves), ("eqbar", eq_bars)) if has]
    n = max(1, len(panels))
    ncols = 2 if n == 4 else n
    nrows = -(-n // ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.6 * nrows + 0.4), layout="constrained")
    if not panels:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no loss or equivariance values recorded", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
    for i, panel in enumerate(panels, start=1):
        ax = fig.add_subplot(nrows, ncols, i)
        if panel in ("loss", "eq"):
            data, xs_of = (curves, steps) if panel == "loss" else (eq_curves, eq_steps)
            for name, ys in data.items():
                xs = list((xs_of or {}).get(name) or range(len(ys)))
                ax.plot(xs, ys, label=name, marker="o" if len(ys) < 20 else None, ms=3)
            ax.set_yscale(value_scale([y for ys in data.values() for y in ys]))
            ax.set_xlabel("step", fontsize=8)
            ax.set_ylabel("training loss (relative)" if panel == "loss" else "relative equivariance error",
                          fontsize=8)
            ax.set_title("training loss" if panel == "loss" else "equivariance error during training (monitor)",
                         fontsize=9)
            ax.legend(fontsize=7, loc="best")
        elif panel == "final":
            _bars(ax, finals, ["C0"] * len(finals), "relative error")
            ax.set_title("final error per layer", fontsize=9)
        else:
            colours = [_WHO_COLOURS.get(_who(k), "C7") for k in eq_bars]
            _bars(ax, eq_bars, colours, "relative equivariance error")
            ax.set_title("final equivariance error", fontsize=9)
    if not curves and finals:
        title = (title + "\n" if title else "") + "no loss curve (closed-form layers): final errors as bars"
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_curves(losses: Mapping[str, Sequence[float]], stem: str | Path,
                equivariance: Optional[Mapping[str, Union[Sequence[float], float]]] = None,
                steps: Optional[Mapping[str, Sequence[float]]] = None, title: str = "",
                final_errors: Optional[Mapping[str, float]] = None,
                eq_steps: Optional[Mapping[str, Sequence[float]]] = None) -> list[Path]:
    """(d) Loss and equivariance error vs step for trained layers, final errors per layer as bars
    (:func:`curves_figure`)."""
    return save_figure(curves_figure(losses, equivariance, steps, final_errors, eq_steps, title), stem)


def plot_kernels(recovered: torch.Tensor, teacher: Optional[torch.Tensor], stem: str | Path,
                 max_filters: int = 8, title: str = "") -> list[Path]:
    """(e) Recovered filters (top row) vs the teacher's (bottom row), one column per (out, in) pair."""
    if recovered.ndim != 4:
        raise ValueError(f"recovered: expected (C_out, C_in, k, k), got {tuple(recovered.shape)}")
    pairs = [(o, i) for o in range(recovered.shape[0]) for i in range(recovered.shape[1])][:max_filters]
    banks = [("recovered", recovered)] + ([("teacher", teacher)] if teacher is not None else [])
    v = max(float(b.abs().max()) for _, b in banks) or 1.0
    fig = Figure(figsize=(1.5 * len(pairs) + 1.4, 1.6 * len(banks) + 0.5), layout="constrained")
    for r, (name, bank) in enumerate(banks):
        for j, (o, i) in enumerate(pairs):
            ax = fig.add_subplot(len(banks), len(pairs), r * len(pairs) + j + 1)
            im = ax.imshow(_np(bank[o, i]), cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"out {o}, in {i}", fontsize=7)
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
    _colorbar(fig, im, fig.axes, "weight")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, stem)
