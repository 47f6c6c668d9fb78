"""Held-out evaluation of one cloned layer.

Function mode: the student's chained features ``f_{≤l}(x)`` vs the teacher's on held-out inputs
(``feature_rel_error``), the single layer on teacher inputs (``layer_rel_error``), and the
equivariance error of ``x ↦ f_{≤l}(x)`` for teacher, student and untrained student.

Family mode: the layer on ``eval_kernels`` fresh teacher parameter draws (``feature_rel_error`` on
features, ``pre_activation_rel_error``), and the equivariance of ``h ↦ f_l(h; k)`` for a fresh ``k``.

Examples
--------
>>> import torch
>>> from symclone.registry import create_teacher, create_student
>>> from symclone.distill import DistillConfig
>>> t = create_teacher("cnn", channels=1, depth=1, size=5); s = create_student("mlp", teacher=t)
>>> r = evaluate_layer(s, t, s, 1, torch.randn(4, 1, 5, 5), DistillConfig())
>>> r["equivariance_error"]["teacher"] < 1e-6, r["feature_rel_error"] > 0.1
(True, True)
"""
from __future__ import annotations

from typing import Any

import torch

from symclone.students._base import apply_activation

from ._config import DistillConfig
from ._feeds import teacher_input
from ._metrics import FeatureMap, groups_to_check, rel_error, safe_equivariance

__all__ = ["evaluate_layer"]


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
    by_group = {}
    for name, group in groups.items():
        # the teacher first: where the group cannot act on its layer (None) it cannot act on the others'
        # (same reps and shapes), and their float64 casts are skipped
        by_group[name] = {"teacher": safe_equivariance(maps["teacher"], group, rep_in, rep_out, x_in)}
        for who, f in maps.items():
            if who != "teacher":
                by_group[name][who] = None if by_group[name]["teacher"] is None else \
                    safe_equivariance(f, group, rep_in, rep_out, x_in)
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
