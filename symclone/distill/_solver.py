"""Choosing between the closed-form solve and SGD/Adam for one layer.

A layer is solved in closed form when it is a dense map + fixed pointwise nonlinearity (function mode)
or a blocks layer over a teacher affine in its parameters (family mode), and when the solve fits the
memory the machine has (:mod:`symclone.memory`; ``closed_form_max_dim > 0`` adds a fixed cap). ``"auto"`` falls
back to the optimiser otherwise; :func:`fallback_reason` logs that with ``logging.warning`` and the
engine records the reason in the layer's metrics (``"fallback_reason"``). An explicit
``solver="closed_form"`` that cannot be honoured raises a ``ValueError`` naming the obstacle.

Examples
--------
>>> resolve_solver("auto", None), resolve_solver("auto", "reason"), resolve_solver("adam", None)
('closed_form', 'adam', 'adam')
>>> round(function_closed_form_bytes(6272, 6272, 7842) / 1e9, 2)  # layer 2 of the default CNN, in GB
1.82
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import torch

from symclone.students._base import POINTWISE

from ..memory import memory_obstacle

__all__ = ["dense_layer_obstacle", "resolve_solver", "function_closed_form_bytes", "fallback_reason",
           "RIDGE_CHUNK"]

log = logging.getLogger(__name__)

#: rows of ``X`` per update of the normal equations
RIDGE_CHUNK = 1024


def function_closed_form_bytes(in_dim: int, out_dim: int, n_samples: int, chunk: int = RIDGE_CHUNK) -> int:
    """Peak bytes of the function-mode ridge solve of a ``(out_dim, in_dim)`` layer on ``n_samples`` inputs.

    ``XᵀX`` and its Cholesky factor (``2 d²`` float64, ``d = in_dim + 1``), ``XᵀY`` and ``θ`` (``2 d·out``
    float64), one float64 chunk of ``[1 X]`` and ``Y``, the float32 layer inputs ``(n, in_dim)`` and the
    float32 weight handed to the student.
    """
    d = in_dim + 1
    return 8 * (2 * d * d + 2 * d * out_dim + 2 * chunk * (d + out_dim)) + 4 * (n_samples * in_dim + out_dim * d)


def dense_layer_obstacle(student: Any, l: int, max_dim: int, n_samples: int = 0,
                         device: str | torch.device | None = None) -> Optional[str]:
    """Why student layer ``l`` is not a solvable "dense map + fixed pointwise nonlinearity" whose ridge
    solve on ``n_samples`` inputs fits the available memory (``None`` if it is)."""
    if student.activations[l - 1] not in POINTWISE:
        return f"layer {l}'s nonlinearity ({student.activations[l - 1]}) is not a fixed pointwise map"
    d = student.in_dim(l) + 1
    if max_dim > 0 and d > max_dim:
        return f"layer {l}'s input size {student.in_dim(l)} exceeds closed_form_max_dim={max_dim}"
    need = function_closed_form_bytes(student.in_dim(l), student.out_dim(l), n_samples)
    return memory_obstacle(f"the closed-form solve of layer {l} (normal equations {d} x {d} and {d} x "
                           f"{student.out_dim(l)} in float64, {n_samples} samples)", need, device)


def resolve_solver(solver: str, why: Optional[str]) -> str:
    """Resolve ``"auto"`` (closed form unless ``why`` names an obstacle); reject an impossible
    ``"closed_form"`` request with a ``ValueError``."""
    if solver == "closed_form" and why:
        raise ValueError(f"solver: closed form does not apply: {why}; use solver=adam")
    if solver == "auto":
        return "adam" if why else "closed_form"
    return solver


def fallback_reason(requested: str, chosen: str, why: Optional[str], l: int, steps: int) -> Optional[str]:
    """The reason ``"auto"`` did not use the closed form for layer ``l`` (logged as a warning), or ``None``."""
    if requested != "auto" or chosen == "closed_form" or not why:
        return None
    log.warning("layer %d: no closed-form solve (%s); training with %s for %d steps instead", l, why, chosen, steps)
    return why
