"""Which figures a run gets, built from the models (the drawing itself lives in ``plots``).

:func:`transformed_inputs` picks group elements that make the symmetry visible (quarter turns for
C4/p4 teachers, shifts for t2) and :func:`feature_rows` evaluates every model on them.

>>> import torch
>>> from symclone.groups import get_group
>>> xs = transformed_inputs(torch.randn(1, 6, 6), get_group("p4", size=6))
>>> [label for label, _ in xs]
['x', 'rot 90', 'rot 180', 'rot 270']
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

__all__ = ["transformed_inputs", "feature_rows", "make_figures"]

log = logging.getLogger(__name__)


def transformed_inputs(x: torch.Tensor, group: Any) -> list[tuple[str, torch.Tensor]]:
    """``[(label, g·x)]`` for a few elements of ``group`` (x is one image ``(C, H, W)``)."""
    name = getattr(group, "name", "t2")
    H = x.shape[-2]
    if name in ("c4", "p4"):
        els = [(f"rot {90 * k}" if k else "x", torch.tensor(k) if name == "c4" else torch.tensor([k, 0, 0]))
               for k in range(4)]
    else:
        s = max(1, H // 4)
        els = [("x", torch.tensor([0, 0])), (f"shift ({s},0)", torch.tensor([s, 0])),
               (f"shift (0,{s})", torch.tensor([0, s])), (f"shift ({s},{s})", torch.tensor([s, s]))]
    return [(label, group.act(g, x[None], "image")[0]) for label, g in els]


def feature_rows(models: Mapping[str, Any], inputs: list[tuple[str, torch.Tensor]], l: int
                 ) -> dict[str, list[torch.Tensor]]:
    """Feature ``l`` (1-based) of every model for every input; models that fail are left out."""
    xb = torch.stack([x for _, x in inputs])
    rows = {}
    for name, m in models.items():
        try:
            with torch.no_grad():
                dtype = next((p.dtype for p in m.parameters()), xb.dtype) if hasattr(m, "parameters") else xb.dtype
                feats = m.forward_features(xb.to(dtype))[l - 1]
            rows[name] = [f.float() for f in feats]
        except Exception as err:  # a figure must never take the analysis down
            log.warning("feature grid: %s failed (%s)", name, err)
    return rows


def _curves(metrics: Mapping) -> tuple[dict, dict, dict]:
    losses, steps, eq = {}, {}, {}
    for entry in metrics.get("layers", []) or []:
        l = entry.get("layer", "?")
        curve = entry.get("loss_curve") or []
        if curve and isinstance(curve[0], (list, tuple)):
            steps[f"layer {l}"] = [float(c[0]) for c in curve]
            curve = [c[1] for c in curve]
        if curve:
            losses[f"layer {l}"] = [float(c) for c in curve]
        ee = entry.get("equivariance_error") or {}
        for who, v in ee.items():
            if isinstance(v, dict):  # per group
                for g, e in v.items():
                    if isinstance(e, (int, float)):
                        eq[f"L{l} {who} ({g})"] = float(e)
            elif isinstance(v, (int, float, list)):
                eq[f"L{l} {who}"] = v
        for key in ("equivariance_curve", "eq_curve"):
            if isinstance(entry.get(key), list):
                eq[f"L{l} student"] = [float(e[1] if isinstance(e, (list, tuple)) else e) for e in entry[key]]
    return losses, steps, eq


def make_figures(out: Path, layers: list[tuple[dict, dict]], models: Mapping[str, Any], teacher: Any,
                 metrics: Optional[Mapping], x: Optional[torch.Tensor]) -> dict[str, str]:
    """Write every applicable figure under ``out``; return ``{figure name: png path}``."""
    from . import plots

    figs: dict[str, str] = {}

    def keep(name: str, paths: list) -> None:
        figs[name] = str(paths[0])

    for entry, t in layers:
        l = entry["layer"]
        if "W" in t:
            keep(f"matrix_layer{l}", plots.plot_matrix_vs_toeplitz(
                t["W"], t.get("W_teacher"), out / f"matrix_layer{l}", title=f"layer {l}: learned vs teacher"))
        if "blocks" in t:
            keep(f"blocks_layer{l}", plots.plot_blocks(t["blocks"], out / f"blocks_layer{l}",
                                                       title=f"layer {l}: learned blocks W_b (zoom)"))
        if "kernel" in t:
            keep(f"kernels_layer{l}", plots.plot_kernels(t["kernel"], t.get("teacher_kernel"),
                                                         out / f"kernels_layer{l}",
                                                         title=f"layer {l}: recovered vs teacher kernel"))
    reps = [str(r) for r in getattr(teacher, "reps", [])]
    if x is not None and reps and reps[0] == "image" and layers:
        l = layers[-1][0]["layer"]
        inputs = transformed_inputs(x, teacher.group)
        rows = feature_rows(models, inputs, l)
        if rows:
            keep("features", plots.plot_feature_grid(inputs, rows, out / "features", regular=reps[l] == "regular",
                                                     title=f"feature {l} for transformed inputs"))
    if metrics:
        losses, steps, eq = _curves(metrics)
        if losses or eq:
            keep("curves", plots.plot_curves(losses, out / "curves", equivariance=eq, steps=steps))
    return figs
