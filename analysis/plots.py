"""Figures of learned weight structure (matplotlib only here; no pyplot global state: every figure
is a standalone ``matplotlib.figure.Figure`` rendered by the Agg canvas). Each function writes
``<stem>.png`` and ``<stem>.pdf`` and returns the two paths.

(a) :func:`plot_matrix_vs_toeplitz` — learned W beside the teacher's unrolled Toeplitz matrix with a
    zoomed window (paper Fig. 4);
(b) :func:`plot_feature_grid` — an input and its transforms × {teacher, cloned student, ...}
    (paper Figs. 5–6; C4 regular features shown as the max over the 4 orientations of field 0);
(c) :func:`plot_blocks` — the learned blocks W_b as images;
(d) :func:`plot_curves` — loss and equivariance error vs step;
(e) :func:`plot_kernels` — recovered vs teacher filters.

>>> import tempfile, os, torch
>>> d = tempfile.mkdtemp()
>>> paths = plot_kernels(torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3), os.path.join(d, "k"))
>>> [os.path.getsize(p) > 0 for p in paths]
[True, True]
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = ["save_figure", "plot_matrix_vs_toeplitz", "plot_feature_grid", "plot_blocks", "plot_curves",
           "plot_kernels", "feature_image", "zoom_window"]


def save_figure(fig: Figure, stem: str | Path) -> list[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.pdf``; create the folder; return both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    return paths


def _np(t: torch.Tensor):
    return t.detach().double().cpu().numpy()


def zoom_window(out_dim: int, in_dim: int, size: int = 64) -> tuple[int, int, int]:
    """``(row0, col0, size)`` of a window in the middle of the band of a conv-like matrix."""
    size = max(1, min(size, out_dim, in_dim))
    r0 = max(0, min(out_dim - size, out_dim // 2 - size // 2))
    c0 = int(round((r0 + size / 2) * in_dim / out_dim - size / 2))
    return r0, max(0, min(in_dim - size, c0)), size


def plot_matrix_vs_toeplitz(W: torch.Tensor, W_teacher: Optional[torch.Tensor], stem: str | Path,
                            window: int = 64, title: str = "") -> list[Path]:
    """(a) The learned matrix beside the teacher's unrolled matrix, full and zoomed (same colour scale)."""
    mats = [("learned W", W)] + ([("teacher (unrolled conv)", W_teacher)] if W_teacher is not None else [])
    r0, c0, s = zoom_window(W.shape[0], W.shape[1], window)
    fig = Figure(figsize=(4.2 * len(mats), 7.6))
    vmax = max(float(m.abs().max()) for _, m in mats) or 1.0
    for j, (name, M) in enumerate(mats):
        ax = fig.add_subplot(2, len(mats), j + 1)
        ax.imshow(_np(M), cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
        ax.add_patch(Rectangle((c0, r0), s, s, fill=False, edgecolor="k", lw=1.2))
        ax.set_title(f"{name} {tuple(M.shape)}", fontsize=9)
        ax.set_xlabel("input index")
        ax.set_ylabel("output index")
        az = fig.add_subplot(2, len(mats), len(mats) + j + 1)
        az.imshow(_np(M[r0:r0 + s, c0:c0 + s]), cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                  extent=(c0 - .5, c0 + s - .5, r0 + s - .5, r0 - .5), interpolation="nearest")
        az.set_title(f"zoom rows {r0}:{r0 + s}, cols {c0}:{c0 + s}", fontsize=9)
    fig.subplots_adjust(hspace=0.35)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, stem)


def feature_image(h: torch.Tensor, regular: bool = False, channel: int = 0) -> torch.Tensor:
    """One ``(H, W)`` map of a feature ``(C, H, W)``: channel ``channel``, or for C4 regular fields
    the max over the 4 orientations of field ``channel``.

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
    fig = Figure(figsize=(1.9 * n + 1.4, 1.9 * (len(rows) + 1)))
    for j, (label, x) in enumerate(inputs):
        ax = fig.add_subplot(len(rows) + 1, n, j + 1)
        ax.imshow(_np(x[0] if x.ndim == 3 else x), cmap="gray")
        ax.set_title(label, fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
        if j == 0:
            ax.set_ylabel("input", fontsize=8)
    for i, (name, feats) in enumerate(rows.items(), start=1):
        maps = [feature_image(f, regular) for f in feats]
        vmax = max(float(m.abs().max()) for m in maps) or 1.0
        for j, m in enumerate(maps):
            ax = fig.add_subplot(len(rows) + 1, n, i * n + j + 1)
            ax.imshow(_np(m), cmap="viridis", vmin=min(0.0, float(m.min())), vmax=vmax)
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, stem)


def plot_blocks(blocks: torch.Tensor, stem: str | Path, window: Optional[int] = 64, title: str = "",
                max_blocks: int = 15) -> list[Path]:
    """(c) Each learned block ``W_b`` (``blocks: (B, O, I)``; the first ``max_blocks``) as an image;
    ``window`` zooms into the band (``None``: the whole matrix)."""
    if blocks.ndim != 3:
        raise ValueError(f"blocks: expected (B, out_dim, in_dim), got {tuple(blocks.shape)}")
    B = min(blocks.shape[0], max_blocks)
    cols = min(B, 5)
    rows = -(-B // cols)
    r0, c0, s = zoom_window(blocks.shape[1], blocks.shape[2], window or max(blocks.shape[1:]))
    if window is None:
        r0, c0 = 0, 0
    fig = Figure(figsize=(2.4 * cols, 2.4 * rows + 0.4))
    for b in range(B):
        M = blocks[b, r0:r0 + s, c0:c0 + s] if window else blocks[b]
        v = float(M.abs().max()) or 1.0
        ax = fig.add_subplot(rows, cols, b + 1)
        ax.imshow(_np(M), cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest", aspect="auto")
        ax.set_title(f"W_{b + 1}", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title or (f"blocks, rows {r0}:{r0 + s}, cols {c0}:{c0 + s}" if window else "blocks"), fontsize=9)
    return save_figure(fig, stem)


def plot_curves(losses: Mapping[str, Sequence[float]], stem: str | Path,
                equivariance: Optional[Mapping[str, Sequence[float] | float]] = None,
                steps: Optional[Mapping[str, Sequence[float]]] = None, title: str = "") -> list[Path]:
    """(d) Loss vs step (log scale) per curve, and equivariance error vs step (curves) or per model
    (bars, when only final values are known)."""
    fig = Figure(figsize=(10, 3.6))
    ax = fig.add_subplot(1, 2, 1)
    for name, ys in losses.items():
        if len(ys):
            xs = (steps or {}).get(name) or list(range(len(ys)))
            ax.plot(xs, ys, label=name, marker="o" if len(ys) < 20 else None)
    if any(y > 0 for ys in losses.values() for y in ys):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training loss", fontsize=9)
    if losses:
        ax.legend(fontsize=7)
    ax2 = fig.add_subplot(1, 2, 2)
    eq = dict(equivariance or {})
    curves = {k: v for k, v in eq.items() if isinstance(v, (list, tuple))}
    bars = {k: float(v) for k, v in eq.items() if isinstance(v, (int, float))}
    for name, ys in curves.items():
        ax2.plot(range(len(ys)), ys, label=name, marker="o" if len(ys) < 20 else None)
    if bars:
        ax2.bar(range(len(bars)), [max(v, 1e-16) for v in bars.values()], tick_label=list(bars), color="C1")
        ax2.tick_params(axis="x", labelsize=7, rotation=20)
    if curves or bars:
        ax2.set_yscale("log")
    else:
        ax2.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax2.transAxes)
    ax2.set_ylabel("relative equivariance error")
    ax2.set_title("equivariance error", fontsize=9)
    if curves:
        ax2.set_xlabel("step")
        ax2.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, stem)


def plot_kernels(recovered: torch.Tensor, teacher: Optional[torch.Tensor], stem: str | Path,
                 max_filters: int = 8, title: str = "") -> list[Path]:
    """(e) Recovered filters (top row) vs the teacher's (bottom row), one column per (out, in) pair."""
    if recovered.ndim != 4:
        raise ValueError(f"recovered: expected (C_out, C_in, k, k), got {tuple(recovered.shape)}")
    pairs = [(o, i) for o in range(recovered.shape[0]) for i in range(recovered.shape[1])][:max_filters]
    banks = [("recovered", recovered)] + ([("teacher", teacher)] if teacher is not None else [])
    v = max(float(b.abs().max()) for _, b in banks) or 1.0
    fig = Figure(figsize=(1.5 * len(pairs) + 0.8, 1.6 * len(banks) + 0.3))
    for r, (name, bank) in enumerate(banks):
        for j, (o, i) in enumerate(pairs):
            ax = fig.add_subplot(len(banks), len(pairs), r * len(pairs) + j + 1)
            ax.imshow(_np(bank[o, i]), cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"out {o}, in {i}", fontsize=7)
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, stem)
