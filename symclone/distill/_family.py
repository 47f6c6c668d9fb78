"""Family cloning of one layer (the paper): teacher parameters ``k ~ N(0, σ² I)`` are redrawn every
step with the inputs, and the ``blocks`` student learns ``(k, x) ↦ teacher_k(x)``.

The map is bilinear in ``(k, x)``. Conditioning: the student divides ``k`` by the teacher's init
std (``k̃ ~ N(0, I)``), and when ``B = P`` the coefficient map ``H`` is fixed to the identity (an
invertible reparametrisation, so nothing is lost): the loss is then a quadratic in ``W`` with
identity-covariance features ``k̃ ⊗ x`` for Gaussian inputs. The closed form (default where it
applies) is the Eckart–Young solution computed on the layer's sparse basis maps
(:mod:`._sparse_maps`: probed with compressed inputs, ``P × P`` Gram matrices from index joins, the
blocks written as entries), so it scales to layers whose dense ``(P, out, in)`` maps do not fit in
memory. Layers whose blocks the student stores sparsely (too large to store densely) can only be
solved in closed form.

Examples
--------
>>> import torch
>>> from symclone.registry import create_teacher, create_student
>>> t = create_teacher("cnn", paper_layer=True)
>>> s = create_student("blocks", teacher=t)
>>> family_solver(s, t, 1, "auto", max_dim=1000)
'closed_form'
>>> family_obstacle(s, t, 1, max_dim=100)
"layer 1's input size 784 exceeds closed_form_max_dim=100"
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from symclone.students._base import POINTWISE

from ._feeds import batched, teacher_input
from ..memory import memory_obstacle
from ._solver import resolve_solver
from ._family_solve import PAIR_CHUNK, family_blocks_solve, layer_moment
from ._sparse_maps import probe_affine_maps, probe_bytes

__all__ = ["family_solver", "family_obstacle", "fit_family_closed_form", "family_loss_fn", "family_parameters",
           "check_affine_in_params", "sum_of_squares", "family_closed_form_bytes"]


def family_closed_form_bytes(student: Any, l: int) -> int:
    """Estimated peak bytes of :func:`fit_family_closed_form` for layer ``l``: the band of ``E[x̃x̃ᵀ]``
    (float64, at most ``P²`` offsets and never more than the dense ``(I+1)²``: :func:`._family_solve.layer_moment`),
    one float64 chunk of inputs, the probe (chunks + about ``P · out`` entries), the streamed Gram join
    and the assigned blocks."""
    layer = student.layers[l - 1]
    d, out = student.in_dim(l) + 1, student.out_dim(l)
    nnz = layer.P * out  # about one entry per parameter and output row (a convolution has out / C_out)
    block_nnz = nnz * (layer.B if layer.B < layer.P else 1)  # W̃_b = Σ_p V_pb T_p for B < P
    moment = 8 * d * min(d, layer.P ** 2) + 2 * 8 * 256 * d
    return moment + probe_bytes(out, d - 1, layer.P, nnz) + 80 * PAIR_CHUNK + 40 * block_nnz


def family_obstacle(student: Any, teacher: Any, l: int, max_dim: int,
                    device: str | torch.device | None = None) -> Optional[str]:
    """Why layer ``l`` cannot be solved in closed form (``None``: it can)."""
    if student.activations[l - 1] not in POINTWISE:
        return f"layer {l}'s nonlinearity ({student.activations[l - 1]}) is not a fixed pointwise map"
    d = student.in_dim(l) + 1
    if max_dim > 0 and d > max_dim:
        return f"layer {l}'s input size {student.in_dim(l)} exceeds closed_form_max_dim={max_dim}"
    if not check_affine_in_params(teacher, l):
        return f"teacher layer {l} is not affine in its parameters"
    what = (f"the family closed form of layer {l} (input size {d - 1}: band of the second moment in float64, "
            f"sparse basis maps of {student.layers[l - 1].P} parameters)")
    return memory_obstacle(what, family_closed_form_bytes(student, l), device)


def family_solver(student: Any, teacher: Any, l: int, solver: str, max_dim: int,
                  device: str | torch.device | None = None) -> str:
    """Resolve ``"auto"``; ``ValueError`` for an impossible ``"closed_form"`` request, and for any other
    solver on a layer the student stores sparsely (its dense blocks do not fit in memory)."""
    if not getattr(student, "supports_params", False):
        raise ValueError(f"student: family cloning needs a kernel-conditioned student ('blocks'), "
                         f"got {student.config['name']!r}")
    why = family_obstacle(student, teacher, l, max_dim, device)
    chosen = resolve_solver(solver, why)
    layer = student.layers[l - 1]
    if chosen != "closed_form" and getattr(layer, "sparse", False):
        raise ValueError(
            f"solver: layer {l} stores its {layer.B} x {layer.O} x {layer.I} blocks sparsely (dense they need "
            f"{4 * layer.B * layer.O * layer.I / 1e9:.3g} GB), which only the closed form fills"
            + (f", and the closed form does not apply: {why}" if why else f"; solver={solver} cannot train it")
            + "; use fewer blocks (--blocks), a smaller teacher or solver=closed_form")
    return chosen


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
    """Set student layer ``l`` to the optimal blocks for the input distribution of ``h_train``.

    Probe the teacher's sparse basis maps, stream the band of ``Σ = E[x̃x̃ᵀ]`` that the Gram joins read
    over ``h_train`` (:func:`._family_solve.layer_moment`), solve (:func:`._family_solve.family_blocks_solve`)
    and write ``W`` (dense or sparse, as the layer stores
    it), ``c``, ``H`` and ``A``. The record's ``closed_form`` holds the probe's entry count and timings.
    """
    t0 = time.perf_counter()
    layer = student.layers[l - 1]
    maps = probe_affine_maps(teacher, l, float(layer.scale), verify_on=h_train[:4])
    t_probe = time.perf_counter()
    fields = student.feature_shapes[l][0] // layer.R
    sigma = layer_moment(maps, h_train.reshape(h_train.shape[0], -1), layer.R, fields)
    sol = family_blocks_solve(maps, sigma, layer.B, layer.R, fields)
    dev = layer.c.device
    layer.assign(sol.W_block.to(dev), sol.W_row.to(dev), sol.W_col.to(dev), sol.W_val.to(dev))
    layer.c.copy_(sol.c.to(layer.c))
    layer.H.copy_(sol.H.to(layer.H))
    if layer.R > 1:
        layer.A.copy_(sol.A.to(layer.A))
    err = sol.predicted_rel_error
    storage = "sparse" if getattr(layer, "sparse", False) else "dense"
    info = {"probe_entries": maps.nnz, "dense_entries": maps.num_params * maps.out_dim * (maps.in_dim + 1),
            "storage": storage, "block_entries": int(sol.W_val.numel()), "samples": int(h_train.shape[0]),
            "probe_seconds": t_probe - t0, "solve_seconds": time.perf_counter() - t_probe}
    return {"loss_curve": [[0, err]], "final_rel_error": err, "steps": 1, "seconds": time.perf_counter() - t0,
            "solver": "closed_form", "singular_values": sol.singular_values, "closed_form": info}


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

    Examples
    --------
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
    and kernels and computes its shard of the inputs (:func:`symclone.distributed.relative_mse`)."""
    from symclone.distributed import relative_mse

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
