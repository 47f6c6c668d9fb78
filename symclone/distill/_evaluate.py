"""Held-out evaluation of one cloned layer.

Function mode: the student's chained features ``f_{≤l}(x)`` vs the teacher's on held-out inputs
(``feature_rel_error``), the single layer on teacher inputs (``layer_rel_error``), and the
equivariance error of ``x ↦ f_{≤l}(x)`` for teacher, student and untrained student. The check runs in
float64 when casting the model costs little (:func:`equivariance_dtype`: the cast keeps a copy of the
state and makes a float64 one, ``3×`` the float32 parameter bytes), else in the model's own dtype (a 112 px
dense student has 607 MB of weights: a float64 check would add 1.8 GB); ``equivariance_dtype`` records it.

Family mode: the layer on ``eval_kernels`` fresh teacher parameter draws (``feature_rel_error`` on
features, ``pre_activation_rel_error``), and the equivariance of ``h ↦ f_l(h; k)`` for a fresh ``k``.

Examples
--------
>>> import torch
>>> from symclone.registry import create_teacher, create_student
>>> from symclone.distill import DistillConfig
>>> t = create_teacher("cnn", channels=1, depth=1, size=5); s = create_student("mlp", teacher=t)
>>> r = evaluate_layer(s, t, s, 1, torch.randn(4, 1, 5, 5), DistillConfig())
>>> r["equivariance_error"]["teacher"] < 1e-6, r["feature_rel_error"] > 0.1, r["equivariance_dtype"]
(True, True, 'float64')
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import torch

from symclone.students._base import apply_activation

from ._config import DistillConfig
from ._feeds import teacher_input
from ..memory import memory_obstacle
from ..equivariance import equivariance_error
from ._metrics import FeatureMap, groups_to_check, rel_error, safe_equivariance

__all__ = ["evaluate_layer", "equivariance_dtype", "EQUIVARIANCE_CAST_MAX_BYTES"]

log = logging.getLogger(__name__)

#: largest float32 parameter bytes of a model checked in float64 (its cast needs 3× this)
EQUIVARIANCE_CAST_MAX_BYTES = 128 * 2 ** 20


def equivariance_dtype(*models: torch.nn.Module, limit: int = EQUIVARIANCE_CAST_MAX_BYTES) -> Optional[torch.dtype]:
    """``torch.float64`` when every model's floating parameters and buffers take at most ``limit`` bytes and
    the cast (``3×`` their bytes) fits the available memory, else ``None`` (the model's own dtype).

    >>> equivariance_dtype(torch.nn.Linear(4, 4)), equivariance_dtype(torch.nn.Linear(4, 4), limit=10)
    (torch.float64, None)
    """
    size = 0
    for m in models:
        if isinstance(m, torch.nn.Module):
            size = max(size, sum(t.numel() * t.element_size() for t in list(m.parameters()) + list(m.buffers())
                                 if t.is_floating_point()))
    if size > limit or memory_obstacle("a float64 equivariance check", 3 * size) is not None:
        return None
    return torch.float64


def _equivariance(f: torch.nn.Module, group: Any, rep_in: Any, rep_out: Any, x: torch.Tensor,
                  dtype: Optional[torch.dtype]) -> Optional[float]:
    """:func:`._metrics.safe_equivariance` (float64, else float32) when ``dtype`` is float64, else the check
    in the model's own dtype (no cast); ``None`` where the group cannot act."""
    if dtype is not None:
        return safe_equivariance(f, group, rep_in, rep_out, x)
    try:
        return float(equivariance_error(f, group, rep_in, rep_out, x=x, n=8, dtype=None)["mean"])
    except ValueError as err:
        log.debug("equivariance under %s not defined: %s", group, err)
        return None


@torch.no_grad()
def evaluate_layer(student: Any, teacher: Any, untrained: Any, l: int, x_eval: torch.Tensor,
                   cfg: DistillConfig) -> dict:
    groups = groups_to_check(teacher, tuple(cfg.eval_groups))
    x_eq = x_eval[: min(8, x_eval.shape[0])]
    out: dict = {}
    if cfg.mode == "function":
        t_feat = teacher.forward_features(x_eval)[l - 1]
        out["feature_rel_error"] = rel_error(student.forward_features(x_eval)[l - 1], t_feat)
        h = teacher_input(teacher, l, x_eval)
        out["layer_rel_error"] = rel_error(student.layer_forward(l, h), teacher.layer_forward(l, h))
        out["untrained_rel_error"] = rel_error(untrained.forward_features(x_eval)[l - 1], t_feat)
        maps = {name: FeatureMap(m, l) for name, m in
                (("teacher", teacher), ("student", student), ("untrained", untrained))}
        rep_in, rep_out, x_in = teacher.reps[0], teacher.reps[l], x_eq
    else:
        h = teacher_input(teacher, l, x_eval)
        gen = torch.Generator().manual_seed(cfg.seed + 424_242)
        ks = teacher.sample_params(l, cfg.eval_kernels, generator=gen).to(h.device)
        t_pre = teacher.layer_forward(l, h, params=ks, pre_activation=True)
        t_post = teacher.layer_forward(l, h, params=ks)
        s_pre, s_own = _student_family_forward(student, l, h, ks)
        out["feature_rel_error"] = rel_error(apply_activation(student.activations[l - 1], s_pre), t_post)
        out["pre_activation_rel_error"] = rel_error(s_pre, t_pre)
        out["per_kernel_rel_error"] = [rel_error(s_pre[i], t_pre[i]) for i in range(ks.shape[0])]
        out["own_kernel_rel_error"] = rel_error(s_own, teacher.layer_forward(l, h))
        del s_pre, s_own
        out["untrained_rel_error"] = rel_error(untrained.layer_forward(l, h, params=ks), t_post)
        maps = {name: FeatureMap(m, l, params=ks[0], layerwise=True) for name, m in
                (("teacher", teacher), ("student", student), ("untrained", untrained))}
        rep_in, rep_out, x_in = teacher.reps[l - 1], teacher.reps[l], h[: x_eq.shape[0]]
    dtype = equivariance_dtype(*maps.values())
    if dtype is None:
        log.info("layer %d: equivariance checked in the models' own dtype (a float64 cast would be too large)", l)
    by_group = {}
    for name, group in groups.items():
        # the teacher first: where the group cannot act on its layer (None) it cannot act on the others'
        # (same reps and shapes), and their float64 casts are skipped
        by_group[name] = {"teacher": _equivariance(maps["teacher"], group, rep_in, rep_out, x_in, dtype)}
        for who, f in maps.items():
            if who != "teacher":
                by_group[name][who] = None if by_group[name]["teacher"] is None else \
                    _equivariance(f, group, rep_in, rep_out, x_in, dtype)
    out["equivariance_dtype"] = "float64" if dtype is not None else "model"
    out["equivariance_error"] = dict(by_group[teacher.group.name], group=teacher.group.name)
    out["equivariance_error_by_group"] = by_group
    return out


def _student_family_forward(student: Any, l: int, h: torch.Tensor, ks: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pre-activations for the kernels ks (K, N, ...), features for the student's own kernel (N, ...))``.

    A blocks layer computes ``u = W x + c`` once for every kernel it is given, so its own kernel rides along
    with ``ks`` in one call (one pass over the ``B · O · I`` blocks instead of two)."""
    kernel = getattr(student.layers[l - 1], "kernel", None) if hasattr(student, "layers") else None
    if not isinstance(kernel, torch.Tensor) or kernel.shape != ks.shape[1:]:
        return (student.layer_forward(l, h, params=ks, pre_activation=True), student.layer_forward(l, h))
    pre = student.layer_forward(l, h, params=torch.cat([ks, kernel[None].to(ks)]), pre_activation=True)
    return pre[:-1], apply_activation(student.activations[l - 1], pre[-1])
