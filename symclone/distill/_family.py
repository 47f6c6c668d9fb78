"""Family cloning of one layer (the paper): teacher parameters ``k ~ N(0, σ² I)`` are redrawn every
step with the inputs, and the ``blocks`` student learns ``(k, x) ↦ teacher_k(x)``.

The map is bilinear in ``(k, x)``. Conditioning: the student divides ``k`` by the teacher's init
std (``k̃ ~ N(0, I)``), and when ``B = P`` the coefficient map ``H`` is fixed to the identity (an
invertible reparametrisation, so nothing is lost): the loss is then a quadratic in ``W`` with
identity-covariance features ``k̃ ⊗ x`` for Gaussian inputs. The closed form (default where it
applies) is the Eckart–Young solution of :func:`._closed_form.family_svd_solve`.

>>> import torch
>>> from symclone.registry import create_teacher, create_student
>>> t = create_teacher("cnn", paper_layer=True)
>>> s = create_student("blocks", teacher=t)
>>> family_solver(s, t, 1, "auto", max_dim=1000)
'closed_form'
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch
import torch.nn.functional as F


from ._closed_form import family_svd_solve, teacher_affine_maps
from ._feeds import batched, teacher_input
from ._solver import dense_layer_obstacle, resolve_solver

__all__ = ["family_solver", "fit_family_closed_form", "family_loss_fn", "family_parameters",
           "check_affine_in_params", "sum_of_squares"]


def family_solver(student: Any, teacher: Any, l: int, solver: str, max_dim: int) -> str:
    if not getattr(student, "supports_params", False):
        raise ValueError(f"student: family cloning needs a kernel-conditioned student ('blocks'), "
                         f"got {student.config['name']!r}")
    why = dense_layer_obstacle(student, l, max_dim)
    if why is None and not check_affine_in_params(teacher, l):
        why = f"teacher layer {l} is not affine in its parameters"
    return resolve_solver(solver, why)


@torch.no_grad()
def check_affine_in_params(teacher: Any, l: int, tol: float = 1e-4) -> bool:
    """``z(a k1 + b k2) = a z(k1) + b z(k2) + (1 − a − b) z(0)`` on a random input (pre-activations)."""
    gen = torch.Generator().manual_seed(7)
    try:
        own = teacher.layer_params(l)
        h = torch.randn(2, *teacher.feature_shapes[l - 1], generator=gen).to(own)
        k = teacher.sample_params(l, 2, generator=gen).to(own)
        zero = torch.zeros_like(k[0])
        combo = torch.stack([0.3 * k[0] + 0.5 * k[1], k[0], k[1], zero])
        z = teacher.layer_forward(l, h, params=combo, pre_activation=True).double()
    except (TypeError, NotImplementedError, ValueError, RuntimeError):
        return False
    pred = 0.3 * z[1] + 0.5 * z[2] + 0.2 * z[3]
    return float((z[0] - pred).norm() / z[0].norm().clamp_min(1e-30)) < tol


@torch.no_grad()
def fit_family_closed_form(student: Any, teacher: Any, l: int, h_train: torch.Tensor) -> dict:
    """Set student layer ``l`` to the optimal blocks for the input distribution of ``h_train``."""
    t0 = time.perf_counter()
    layer = student.layers[l - 1]
    T = teacher_affine_maps(teacher, l, float(layer.scale)).to(h_train.device)
    X = h_train.reshape(h_train.shape[0], -1).double()
    X = torch.cat([torch.ones(X.shape[0], 1, dtype=X.dtype, device=X.device), X], 1)
    M = X.T @ X / X.shape[0]
    fields = student.feature_shapes[l][0] // layer.R
    sol = family_svd_solve(T, M, layer.B, layer.R, fields)
    layer.W.copy_(sol["W"].to(layer.W))
    layer.c.copy_(sol["c"].to(layer.c))
    layer.H.copy_(sol["H"].to(layer.H))
    if layer.R > 1:
        layer.A.copy_(sol["A"].to(layer.A))
    err = sol["predicted_rel_error"]
    return {"loss_curve": [[0, err]], "final_rel_error": err, "steps": 1, "seconds": time.perf_counter() - t0,
            "solver": "closed_form", "singular_values": sol["singular_values"]}


def family_parameters(student: Any, l: int, fix_h: bool = True) -> list[torch.nn.Parameter]:
    """Trainable tensors of layer ``l``; with ``B = P`` and ``fix_h``, ``H`` is set to ``I`` and frozen."""
    layer = student.layers[l - 1]
    if fix_h and layer.B == layer.P:
        with torch.no_grad():
            layer.H.copy_(torch.eye(layer.P, dtype=layer.H.dtype, device=layer.H.device))
        params = [layer.W, layer.c]
    else:
        params = [layer.W, layer.c, layer.H]
    if layer.R > 1:
        params.append(layer.A)
    return params


def sum_of_squares(y: torch.Tensor) -> torch.Tensor:
    """``Σ y²`` as one dot product over ``y``'s storage, without a ``y²`` temporary.

    A teacher's batched output is a ``transpose(0, 1)`` view of a contiguous tensor; the sum is
    permutation invariant, so it runs over that contiguous tensor (other layouts are copied once).

    >>> y = torch.arange(24.0).reshape(4, 2, 3).transpose(0, 1)
    >>> bool(sum_of_squares(y) == (y ** 2).sum())
    True
    """
    flat = y.transpose(0, 1) if y.ndim > 1 and not y.is_contiguous() and y.transpose(0, 1).is_contiguous() else y
    flat = flat.reshape(-1)
    return torch.dot(flat, flat)


def family_loss_fn(student: Any, teacher: Any, l: int, h_train: torch.Tensor, use_pre: bool, batch_size: int,
                   kernels: int, seed: int, fresh_gaussian: bool = False, ctx: Any = None
                   ) -> Callable[[int], torch.Tensor]:
    """``loss_fn(step)``: ``kernels`` fresh teacher parameter draws × a batch of inputs (fresh N(0, 1)
    inputs every step when ``fresh_gaussian``, else a batch of ``h_train``). With a multi-process
    ``ctx`` (:class:`symclone.distributed.DistributedContext`) every rank draws the same global batch
    and kernels and computes its shard of the inputs (:func:`symclone.ddp.relative_mse`)."""
    from symclone.ddp import relative_mse

    def loss_fn(step: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + l * 100_003 + step)
        if fresh_gaussian:
            x = torch.randn(batch_size, *teacher.feature_shapes[0], generator=gen).to(h_train)
            h = teacher_input(teacher, l, x if ctx is None else ctx.shard(x))
        else:
            h = h_train[batched(h_train.shape[0], batch_size, gen).to(h_train.device)]
            h = h if ctx is None else ctx.shard(h)
        k = teacher.sample_params(l, kernels, generator=gen).to(h.device)
        with torch.no_grad():
            y = teacher.layer_forward(l, h, params=k, pre_activation=use_pre)
        pred = student.layer_forward(l, h, params=k, pre_activation=use_pre)
        if ctx is not None:
            return relative_mse(pred, y, ctx)
        if pred.dtype in (torch.float16, torch.bfloat16) or y.dtype in (torch.float16, torch.bfloat16):
            pred, y = pred.float(), y.float()  # reduced-precision forward: reduce in fp32 (as relative_mse)
        # fused squared error (no pred − y temporary kept for backward) over Σ y² as a dot product
        return F.mse_loss(pred, y, reduction="sum") / sum_of_squares(y).clamp_min(1e-12)

    return loss_fn
