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

A function-mode closed form either *probes* the teacher layer (its affine map read off the teacher,
:mod:`._function_probe`: memory ≈ the student's weights) or solves the ridge normal equations
(``2 d²`` float64). :func:`function_method` picks the probe when ``d = in_dim + 1 > PROBE_MIN_UNKNOWNS``
(ridge costs ``≈ 1.25 d³`` flops there) or when the ridge solve does not fit the memory, and the ridge
otherwise (small layers keep the documented least-squares fit on the training inputs):

>>> function_method(6273, 6272, 7842, available=8 * 10 ** 9)[0]
'probe'
>>> function_method(400, 324, 1024, available=8 * 10 ** 9)
('ridge', 'in_dim + 1 = 401 <= PROBE_MIN_UNKNOWNS = 2048: the ridge solve is cheap')
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import torch

from symclone.students._base import POINTWISE

from ..memory import memory_obstacle

__all__ = ["dense_layer_obstacle", "resolve_solver", "function_closed_form_bytes", "fallback_reason",
           "RIDGE_CHUNK", "PROBE_MIN_UNKNOWNS", "function_probe_bytes", "function_method"]

log = logging.getLogger(__name__)

#: rows of ``X`` per update of the normal equations
RIDGE_CHUNK = 1024
#: a function-mode layer with more unknowns per output (``in_dim + 1``) than this is probed, not regressed
PROBE_MIN_UNKNOWNS = 2048


def function_closed_form_bytes(in_dim: int, out_dim: int, n_samples: int, chunk: int = RIDGE_CHUNK) -> int:
    """Peak bytes of the function-mode ridge solve of a ``(out_dim, in_dim)`` layer on ``n_samples`` inputs.

    ``XᵀX`` and its Cholesky factor (``2 d²`` float64, ``d = in_dim + 1``), ``XᵀY`` and ``θ`` (``2 d·out``
    float64), one float64 chunk of ``[1 X]`` and ``Y``, the float32 layer inputs ``(n, in_dim)`` and the
    float32 weight handed to the student.
    """
    d = in_dim + 1
    return 8 * (2 * d * d + 2 * d * out_dim + 2 * chunk * (d + out_dim)) + 4 * (n_samples * in_dim + out_dim * d)


def function_probe_bytes(in_dim: int, out_dim: int, n_samples: int = 0) -> int:
    """Peak bytes the probe solve adds to the student's weights: the probe's output chunks and entries
    (:func:`._sparse_maps.probe_bytes`, counted as ``32`` entries per output; a 3×3 conv has 10), one chunk
    of probe inputs ``8 · I · min(I, PROBE_CHUNK_BYTES / (8 · out))`` (float64; large for a dense layer with
    few outputs), the float32 layer inputs ``(n, in_dim)`` the engine holds and a residual check on 64 of
    them (``64 · (in + out)`` float32)."""
    from ._sparse_maps import PROBE_CHUNK_BYTES, probe_bytes

    rows = min(in_dim, max(1, PROBE_CHUNK_BYTES // (8 * max(1, out_dim))))
    return probe_bytes(out_dim, in_dim, 1, nnz_estimate=32 * out_dim) + 8 * in_dim * rows + \
        4 * n_samples * in_dim + 4 * 64 * (in_dim + out_dim)


def function_method(in_dim: int, out_dim: int, n_samples: int, device: str | torch.device | None = None,
                    available: Optional[int] = None) -> tuple[str, str]:
    """``("probe" | "ridge", reason)``: how the function-mode closed form of a ``(out_dim, in_dim)`` layer
    on ``n_samples`` inputs is solved when the teacher layer is affine in its input (see the module
    docstring). ``available``: memory in bytes (default: :func:`symclone.memory.available_memory_bytes`)."""
    d = in_dim + 1
    if d > PROBE_MIN_UNKNOWNS:
        return "probe", f"in_dim + 1 = {d} > PROBE_MIN_UNKNOWNS = {PROBE_MIN_UNKNOWNS}: the ridge solve costs " \
                        f"~{1.25 * d ** 3 / 1e9:.3g} GFLOP and {2 * 8 * d * d / 1e9:.3g} GB"
    why = memory_obstacle("the ridge solve", function_closed_form_bytes(in_dim, out_dim, n_samples), device,
                          available=available)
    if why is not None:
        return "probe", why
    return "ridge", f"in_dim + 1 = {d} <= PROBE_MIN_UNKNOWNS = {PROBE_MIN_UNKNOWNS}: the ridge solve is cheap"


def dense_layer_obstacle(student: Any, l: int, max_dim: int, n_samples: int = 0,
                         device: str | torch.device | None = None, probe: bool = False) -> Optional[str]:
    """Why student layer ``l`` is not a solvable "dense map + fixed pointwise nonlinearity" whose solve on
    ``n_samples`` inputs fits the available memory (``None`` if it is): the ridge normal equations, or with
    ``probe`` the probe of an affine teacher layer (:func:`function_probe_bytes`)."""
    if student.activations[l - 1] not in POINTWISE:
        return f"layer {l}'s nonlinearity ({student.activations[l - 1]}) is not a fixed pointwise map"
    d = student.in_dim(l) + 1
    if max_dim > 0 and d > max_dim:
        return f"layer {l}'s input size {student.in_dim(l)} exceeds closed_form_max_dim={max_dim}"
    if probe:
        need = function_probe_bytes(student.in_dim(l), student.out_dim(l), n_samples)
        return memory_obstacle(f"the probe solve of layer {l} ({n_samples} inputs of size {student.in_dim(l)})",
                               need, device)
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
