"""Function cloning of one layer: the student's layer ``l`` learns the teacher's layer ``l`` from
teacher features ``l-1`` of orbit inputs ``[x; g·x]``.

Closed form (default where it applies: ``set_affine`` students, pointwise nonlinearity, a teacher layer
affine in its input, a solve that fits the available memory), by one of two methods (the layer's
``closed_form.method``, with ``method_reason``; :func:`._solver.function_method` chooses):

* ``"probe"`` (large layers, ``in_dim + 1 > PROBE_MIN_UNKNOWNS``, or when the normal equations do not fit):
  the teacher's affine map ``z(h) = M h + m`` is read off the teacher (``m = z(0)``, ``M[:, i] = z(e_i) − z(0)``,
  probes compressed by colouring) and written into the student's weight in place (:mod:`._function_probe`):
  memory ≈ the weights. A probe that does not verify falls back to the ridge solve (logged warning;
  ``closed_form.probe_failed`` records why).
* ``"ridge"``: ridge regression of the teacher's pre-activations on at least
  ``closed_form_oversample · (in_dim + 1)`` samples (see :mod:`._closed_form`).

Otherwise SGD/Adam on

    L = ‖f_l(h) − t_l(h)‖² / ‖t_l(h)‖²  +  λ_eq ‖f_l(g·h) − g·f_l(h)‖² / ‖f_l(h)‖²

Examples
--------
>>> import torch
>>> from symclone.registry import create_teacher, create_student
>>> t = create_teacher("cnn", channels=1, depth=1, size=5)
>>> s = create_student("mlp", teacher=t)
>>> function_solver(s, t, 1, "auto", max_dim=100, eq_weight=0.0)
'closed_form'
>>> function_obstacle(s, t, 1, max_dim=10, eq_weight=0.0)
"layer 1's input size 25 exceeds closed_form_max_dim=10"
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

import torch

from symclone.students._base import POINTWISE

from ..memory import memory_obstacle
from ._closed_form import RidgeAccumulator
from ._feeds import batched
from ._function_probe import ProbeFailed, fit_function_probe
from ._solver import RIDGE_CHUNK, dense_layer_obstacle, function_closed_form_bytes, function_method, resolve_solver

__all__ = ["function_solver", "function_obstacle", "fit_function_closed_form", "function_loss_fn",
           "use_pre_activation", "check_affine_in_input", "function_probes"]

log = logging.getLogger(__name__)


def use_pre_activation(student: Any, l: int, target: str) -> bool:
    """Fit pre-activations when the layer's nonlinearity is pointwise (or when asked to)."""
    if target == "auto":
        return student.activations[l - 1] in POINTWISE
    return target == "pre"


def function_obstacle(student: Any, teacher: Any, l: int, max_dim: int, eq_weight: float, n_samples: int = 0,
                      device: str | torch.device | None = None) -> Optional[str]:
    """Why layer ``l`` cannot be solved in closed form on ``n_samples`` inputs (``None``: it can)."""
    if not hasattr(student, "set_affine"):
        why = f"student {student.config['name']!r} has no closed form (not a dense affine map per layer)"
    else:
        why = dense_layer_obstacle(student, l, max_dim, n_samples, device)
        if why is not None:  # the normal equations do not fit (or the layer is not solvable at all)
            why_probe = dense_layer_obstacle(student, l, max_dim, n_samples, device, probe=True)
            if why_probe is None:
                why = None  # the probe fits: fit_function_closed_form will probe
            elif why_probe != why:
                why = f"{why}; {why_probe}"
    if why is None and eq_weight > 0:
        why = "an equivariance penalty was requested"
    if why is None and not check_affine_in_input(teacher, l):
        why = f"teacher layer {l}'s pre-activation is not affine in its input"
    return why


def function_solver(student: Any, teacher: Any, l: int, solver: str, max_dim: int, eq_weight: float,
                    n_samples: int = 0, device: str | torch.device | None = None) -> str:
    """Resolve ``"auto"``; raise ``ValueError`` if ``"closed_form"`` was asked for but does not apply."""
    return resolve_solver(solver, function_obstacle(student, teacher, l, max_dim, eq_weight, n_samples, device))


@torch.no_grad()
def check_affine_in_input(teacher: Any, l: int, tol: float = 1e-4) -> bool:
    """``z(a h1 + b h2) = a z(h1) + b z(h2) + (1 − a − b) z(0)`` for the pre-activation ``z`` of layer ``l``."""
    gen = torch.Generator().manual_seed(11)
    ref = next(teacher.parameters(), torch.zeros(()))
    h = torch.randn(2, *teacher.feature_shapes[l - 1], generator=gen).to(ref)
    batch = torch.stack([0.3 * h[0] + 0.5 * h[1], h[0], h[1], torch.zeros_like(h[0])])
    try:
        z = teacher.layer_forward(l, batch, pre_activation=True).double()
    except (TypeError, NotImplementedError, ValueError, RuntimeError):
        return False
    pred = 0.3 * z[1] + 0.5 * z[2] + 0.2 * z[3]
    return float((z[0] - pred).norm() / z[0].norm().clamp_min(1e-30)) < tol


def function_probes(student: Any, l: int, n_samples: int, device: str | torch.device | None = None) -> bool:
    """Whether the closed form of layer ``l`` on ``n_samples`` inputs will probe the teacher (then it needs no
    more inputs than it is given: the engine may skip drawing ``closed_form_oversample · (in_dim + 1)``)."""
    return function_method(student.in_dim(l), student.out_dim(l), n_samples, device)[0] == "probe"


@torch.no_grad()
def fit_function_closed_form(student: Any, teacher: Any, l: int, h_train: torch.Tensor, ridge: float,
                             chunk: int = RIDGE_CHUNK, method: str = "auto") -> dict:
    """Solve student layer ``l`` in closed form: probe the teacher's affine map or solve the ridge system.

    Parameters
    ----------
    h_train : teacher features ``l − 1`` (layer inputs); the ridge regresses the teacher's pre-activations
        on all of them, the probe checks its map on the first 64.
    ridge : relative Tikhonov weight of the ridge solve.
    method : ``"auto"`` (:func:`._solver.function_method`), ``"probe"`` (probe first) or ``"ridge"``.

    Ridge: accumulate ``X̃ᵀX̃``, ``X̃ᵀY`` (float64) over chunks; Cholesky; set the layer. The record's
    ``closed_form`` holds ``method``, ``method_reason``, ``samples``, ``unknowns`` (``in_dim + 1`` per output),
    the ``ridge`` added to the diagonal and ``underdetermined`` (fewer samples than unknowns); a probe
    records ``probe_entries`` instead (:func:`._function_probe.fit_function_probe`), a failed probe
    ``probe_failed``.

    Raises
    ------
    ValueError
        When the probe fails and the ridge normal equations do not fit the available memory.
    """
    if method not in ("auto", "probe", "ridge"):
        raise ValueError(f"method: expected 'auto', 'probe' or 'ridge', got {method!r}")
    n, I, O = int(h_train.shape[0]), student.in_dim(l), student.out_dim(l)
    if method == "auto":
        method, reason = function_method(I, O, n, h_train.device)
    else:
        reason = f"method={method!r} requested"
    failed = None
    if method == "probe":
        try:
            rec = fit_function_probe(student, teacher, l, h_train)
            rec["closed_form"]["method_reason"] = reason
            return rec
        except ProbeFailed as err:
            failed = str(err)
            why = memory_obstacle(f"the ridge solve of layer {l}", function_closed_form_bytes(I, O, n), h_train.device)
            if why is not None:
                raise ValueError(f"closed form of layer {l}: {failed}, and {why}") from err
            log.warning("layer %d: %s; solving the ridge normal equations instead", l, failed)
            reason = f"probe failed: {failed}"
    rec = _fit_ridge(student, teacher, l, h_train, ridge, chunk)
    rec["closed_form"].update(method="ridge", method_reason=reason)
    if failed is not None:
        rec["closed_form"]["probe_failed"] = failed
    return rec


def _fit_ridge(student: Any, teacher: Any, l: int, h_train: torch.Tensor, ridge: float, chunk: int) -> dict:
    """The ridge solve of :func:`fit_function_closed_form`."""
    t0 = time.perf_counter()
    bias = student.layers[l - 1].bias is not None
    acc = RidgeAccumulator(student.in_dim(l), student.out_dim(l), bias=bias, device=h_train.device)
    for i in range(0, h_train.shape[0], chunk):
        h = h_train[i:i + chunk]
        y = teacher.layer_forward(l, h, pre_activation=True)
        acc.update(h.reshape(h.shape[0], -1), y.reshape(y.shape[0], -1))
    t_acc = time.perf_counter()
    W, b = acc.solve(ridge)
    student.set_affine(l, W.to(student.layers[l - 1].weight), None if b is None else b.to(W.device))
    res = acc.relative_residual()
    d = student.in_dim(l) + int(bias)
    info = {"samples": acc.n, "unknowns": d, "ridge": acc.ridge_used, "underdetermined": acc.n < d,
            "accumulate_seconds": t_acc - t0, "solve_seconds": time.perf_counter() - t_acc}
    return {"loss_curve": [[0, res]], "final_rel_error": res, "steps": 1, "seconds": time.perf_counter() - t0,
            "solver": "closed_form", "samples": acc.n, "closed_form": info}


def _penalty(lhs: torch.Tensor, rhs: torch.Tensor, pred: torch.Tensor, ctx: Any) -> torch.Tensor:
    """``‖f(g·h) − g·f(h)‖² / ‖f(h)‖²`` over the global batch (this rank's share, as ``relative_mse``)."""
    den = (pred.detach() ** 2).sum()
    if ctx is None:
        return ((lhs - rhs) ** 2).sum() / den.clamp_min(1e-12)
    return ctx.world_size * ((lhs - rhs) ** 2).sum() / ctx.all_reduce_sum(den).clamp_min(1e-12)


def function_loss_fn(student: Any, teacher: Any, l: int, h_train: torch.Tensor, target: torch.Tensor,
                     use_pre: bool, batch_size: int, seed: int, eq_weight: float = 0.0, ctx: Any = None
                     ) -> Callable[[int], torch.Tensor]:
    """A ``loss_fn(step)`` drawing a deterministic batch per ``(seed, l, step)``. With a multi-process
    ``ctx`` every rank draws the same global batch (and group elements) and uses its shard; both terms
    are normalised by global sums (:func:`symclone.distributed.relative_mse`)."""
    from symclone.distributed import relative_mse

    group = teacher.group
    rep_in, rep_out = teacher.reps[l - 1], teacher.reps[l]

    def loss_fn(step: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + l * 100_003 + step)
        idx = batched(h_train.shape[0], batch_size, gen).to(h_train.device)
        sl = slice(None) if ctx is None else ctx.shard_range(idx.shape[0])
        h, y = h_train[idx[sl]], target[idx[sl]]
        pred = student.layer_forward(l, h, pre_activation=use_pre)
        loss = relative_mse(pred, y, ctx)
        if eq_weight > 0:
            g = group.sample(idx.shape[0], gen)
            g = tuple(t[sl] for t in g) if isinstance(g, tuple) else g[sl]
            lhs = student.layer_forward(l, group.act(g, h, rep_in), pre_activation=use_pre)
            rhs = group.act(g, pred, rep_out)
            loss = loss + eq_weight * _penalty(lhs, rhs, pred, ctx)
        return loss

    return loss_fn
