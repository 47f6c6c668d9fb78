"""Per-layer structure metrics of a student against its teacher (used by ``analyze_run``).

Works on whatever the models expose (duck typing on the teacher/student contract):

* MLP students: ``dense_matrix(l)``; blocks students: the effective matrix
  ``dense_matrix(l, teacher.layer_params(l))`` for the teacher's own kernel, plus ``block_matrices``;
  students without a dense matrix (transformers) get no weight-structure metrics.
* Conv teachers (``kernel``, ``padding``, ``as_dense``): Toeplitz report against the teacher's kernel;
  C4 teachers (reps ``regular``): also the 4-orientation agreement of the recovered filter bank.
* Residuals under t2, c4 and p4 for image/regular layers (whichever apply), under ``sn`` (permuting
  the points/nodes; up to 6 of them) for point-cloud layers, and under the teacher's own group through
  the generic path when it is some other finite group.

Examples
--------
>>> import torch
>>> from types import SimpleNamespace
>>> class Lin:
...     def __init__(self, W): self.W = W
...     def dense_matrix(self, l, params=None): return self.W
>>> t = SimpleNamespace(feature_shapes=[(1, 4, 4), (1, 4, 4)], reps=["image", "image"], group=None)
>>> e, _ = layer_structure(t, Lin(torch.eye(16, dtype=torch.float64)), 1)
>>> e["residual"]["t2"] < 1e-12 and e["residual"]["c4"] < 1e-12
True
"""
from __future__ import annotations

import logging
import math
from typing import Any, Optional

import torch

from symclone.groups import parse_rep

from ._kernels import recover_kernel
from ._reynolds import structure_residual
from ._toeplitz import toeplitz_report

__all__ = ["student_matrix", "teacher_matrix", "layer_structure", "MAX_DENSE_ENTRIES"]

log = logging.getLogger(__name__)

#: largest dense matrix (entries) the run analysis builds
MAX_DENSE_ENTRIES = 40_000_000


def _too_big(model: Any, l: int) -> bool:
    shapes = model.feature_shapes
    return math.prod(shapes[l]) * math.prod(shapes[l - 1]) > MAX_DENSE_ENTRIES


def student_matrix(student: Any, teacher: Any, l: int) -> Optional[torch.Tensor]:
    """The student's linear map of layer ``l`` as ``(out_dim, in_dim)`` (a blocks student's at the
    teacher's own kernel), or ``None`` if it has none or it would exceed :data:`MAX_DENSE_ENTRIES` entries."""
    if not hasattr(student, "dense_matrix") or _too_big(teacher, l):
        return None
    if hasattr(student, "block_matrices") and hasattr(teacher, "layer_params"):
        return student.dense_matrix(l, teacher.layer_params(l).detach()).detach()
    return student.dense_matrix(l).detach()


def teacher_matrix(teacher: Any, l: int) -> Optional[torch.Tensor]:
    """The teacher's unrolled layer ``l`` (``as_dense(l)``, ``(out_dim, in_dim)``, pre-activation, no
    bias), or ``None`` if it has none or it would exceed :data:`MAX_DENSE_ENTRIES` entries."""
    if not hasattr(teacher, "as_dense") or _too_big(teacher, l):
        return None
    with torch.no_grad():
        return teacher.as_dense(l).detach()


def _residuals(W: torch.Tensor, teacher: Any, in_shape, out_shape, in_rep, out_rep) -> dict:
    out = {}
    spatial = in_rep.is_image and out_rep.is_image
    names = ("t2", "c4", "p4") if spatial else ()
    if in_rep.has_object_axis and out_rep.has_object_axis and in_shape[0] == out_shape[0] \
            and math.factorial(in_shape[0]) <= 720:
        names += ("sn",)  # permutations of the points/nodes, generic group.act path
    group = getattr(teacher, "group", None)
    if group is not None and group.name not in names and group.is_finite:
        names += (group,)
    for g in names:
        key = g if isinstance(g, str) else g.name
        try:
            out[key] = structure_residual(W.double(), g, in_shape, out_shape, in_rep, out_rep)
        except ValueError as err:  # e.g. c4 on non-square grids, continuous groups
            log.info("no %s residual for this layer: %s", key, err)
    return out


def layer_structure(teacher: Any, student: Any, l: int, support: Optional[torch.Tensor] = None
                    ) -> tuple[dict, dict]:
    """Structure metrics of student layer ``l`` (JSON-able dict) and the tensors for the figures
    (``W``, ``W_teacher``, ``kernel``, ``teacher_kernel``, ``blocks``, ``support_columns``: the data
    support as a column mask, when it matches the layer's input)."""
    in_shape, out_shape = tuple(teacher.feature_shapes[l - 1]), tuple(teacher.feature_shapes[l])
    in_rep, out_rep = parse_rep(str(teacher.reps[l - 1])), parse_rep(str(teacher.reps[l]))
    entry: dict = {"layer": l, "in_shape": list(in_shape), "out_shape": list(out_shape),
                   "in_rep": str(in_rep), "out_rep": str(out_rep)}
    tensors: dict = {}
    W = student_matrix(student, teacher, l)
    if W is None:
        entry["note"] = "student exposes no dense matrix for this layer (or it is too large)"
        return entry, tensors
    W = W.double()
    tensors["W"] = W
    if support is not None and l == 1 and in_rep.is_image \
            and tuple(support.shape[-2:]) == in_shape[1:]:
        tensors["support_columns"] = support.bool().expand(*in_shape).reshape(-1)  # steers the figure's zoom
    Wt = teacher_matrix(teacher, l)
    if Wt is not None:
        Wt = Wt.double()
        tensors["W_teacher"] = Wt
        entry["matrix_rel_error_vs_teacher"] = float((W - Wt).norm() / Wt.norm())
        entry["teacher_residual"] = _residuals(Wt, teacher, in_shape, out_shape, in_rep, out_rep)
    entry["residual"] = _residuals(W, teacher, in_shape, out_shape, in_rep, out_rep)
    if hasattr(student, "block_matrices"):
        tensors["blocks"] = student.block_matrices(l).detach()
    if hasattr(teacher, "kernel") and hasattr(teacher, "kernel_size") and in_rep.is_image:
        k = int(teacher.kernel_size(l))
        tk = teacher.kernel(l).detach().double()
        padding = getattr(teacher, "padding", "circular")
        sup = support if (support is not None and l == 1 and tuple(support.shape[-2:]) == in_shape[1:]) else None
        try:
            rep = toeplitz_report(W, in_shape, out_shape, k, teacher_kernel=tk, padding=padding, support=sup)
        except ValueError as err:
            entry["note"] = f"no Toeplitz report: {err}"
            return entry, tensors
        tensors["kernel"], tensors["teacher_kernel"] = rep.pop("kernel"), tk
        if "support" in rep:
            rep["support"].pop("kernel")
        entry["toeplitz"] = rep
        if out_rep.kind == "regular":
            _, info = recover_kernel(W, in_shape, out_shape, k, group="c4", padding=padding,
                                     in_rep=in_rep.kind, return_info=True)
            o = info["orientation"]
            entry["orientation_agreement"] = {"rel_error": o["rel_error"], "per_orientation": o["per_orientation"]}
    return entry, tensors
