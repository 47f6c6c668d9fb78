"""Which figures a run gets, built from the models (the drawing itself lives in ``plots``).

:func:`transformed_inputs` picks group elements that make the symmetry visible (quarter turns for
C4/p4 teachers, shifts for t2) and :func:`feature_rows` evaluates every model on them.

Examples
--------
>>> import torch
>>> from symclone.groups import get_group
>>> xs = transformed_inputs(torch.randn(1, 6, 6), get_group("p4", size=6))
>>> [label for label, _ in xs]
['x', 'rot 90', 'rot 180', 'rot 270']
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

__all__ = ["transformed_inputs", "feature_rows", "make_figures", "curve_data"]

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


def _xy(curve: Sequence) -> tuple[list[float], list[float]]:
    """Steps and values of a recorded curve: ``[[step, value], ...]`` or ``[value, ...]``."""
    if curve and isinstance(curve[0], (list, tuple)):
        return [float(c[0]) for c in curve], [float(c[1]) for c in curve]
    return [float(i) for i in range(len(curve))], [float(c) for c in curve]


def curve_data(metrics: Mapping) -> dict:
    """Keyword arguments of :func:`plots.curves_figure` from a run's ``metrics.json``.

    Loss / equivariance curves of layers trained for two or more logged steps; every layer's final
    relative error (``feature_rel_error``, labelled with its solver) and final equivariance errors
    (teacher / student / untrained, under the run's group ``equivariance_error["group"]``) as bars.
    A closed-form layer logs a single point, so it has a bar and no curve.

    Examples
    --------
    >>> d = curve_data({"layers": [{"layer": 1, "solver": "closed_form", "feature_rel_error": 1e-7,
    ...                             "loss_curve": [[0, 1e-7]],
    ...                             "equivariance_error": {"student": 2e-7, "group": "p4"}}]})
    >>> d["losses"], d["final_errors"], d["equivariance"]
    ({}, {'L1 (closed form)': 1e-07}, {'L1 student': 2e-07})
    """
    losses, steps, finals, eq, eq_steps = {}, {}, {}, {}, {}
    for entry in metrics.get("layers", []) or []:
        l = entry.get("layer", "?")
        xs, ys = _xy(entry.get("loss_curve") or [])
        if len(ys) >= 2:
            losses[f"layer {l}"], steps[f"layer {l}"] = ys, xs
        final = entry.get("feature_rel_error", ys[-1] if ys else None)
        if isinstance(final, (int, float)):
            solver = str(entry.get("solver") or "").replace("_", " ")
            finals[f"L{l}" + (f" ({solver})" if solver else "")] = float(final)
        for key in ("equivariance_curve", "eq_curve"):
            if isinstance(entry.get(key), list) and len(entry[key]) >= 2:
                eq_steps[f"L{l} student (monitor)"], eq[f"L{l} student (monitor)"] = _xy(entry[key])
                break
        for who, v in (entry.get("equivariance_error") or {}).items():
            if isinstance(v, Mapping):  # per group
                for g, e in v.items():
                    if isinstance(e, (int, float)):
                        eq[f"L{l} {who} ({g})"] = float(e)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                eq[f"L{l} {who}"] = float(v)
    return {"losses": losses, "steps": steps, "final_errors": finals, "equivariance": eq, "eq_steps": eq_steps}


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
                t["W"], t.get("W_teacher"), out / f"matrix_layer{l}", title=f"layer {l}: learned vs teacher",
                col_weight=t.get("support_columns")))
        if "blocks" in t:
            keep(f"blocks_layer{l}", plots.plot_blocks(
                t["blocks"], out / f"blocks_layer{l}",
                title=f"layer {l}: learned blocks W_b (zoom where each is largest)"))
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
        data = curve_data(metrics)
        if data["losses"] or data["final_errors"] or data["equivariance"]:
            keep("curves", plots.plot_curves(stem=out / "curves", **data))
    return figs
