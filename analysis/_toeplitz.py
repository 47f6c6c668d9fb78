"""Toeplitz (convolution) structure report of a dense layer.

Numbers reported for a layer ``W`` with a k×k footprint (see ``_kernels`` for the shift basis):

* ``residual`` — translation structure residual δ = ‖W − R_T(W)‖/‖W‖ (all diagonals; R_T the
  cyclic-shift Reynolds projection for circular padding, the Toeplitz projection otherwise);
* ``fit_residual`` — δ_T = ‖W − Σ k̂_ab E_ab‖/‖W‖ (only the k×k footprint diagonals);
* ``footprint_energy`` — Σ W² on entries whose offset lies in the footprint / Σ W²;
* ``ipr`` — mean over rows of the inverse participation ratio IPR(w) = Σ w⁴ / (Σ w²)²
  (1/IPR ≈ the number of weights a row uses: k²·C_in for a conv, ~n/3 for Gaussian rows);
* ``kernel_cosine`` / ``kernel_rel_error`` — recovered kernel vs the teacher's, if given;
* ``support`` — the same restricted to the columns of input pixels that are ever non-zero (data
  support: weights on never-active pixels keep their initial values, docs/design.md §4).

Examples
--------
>>> import torch, torch.nn.functional as F
>>> k = torch.randn(1, 1, 3, 3, dtype=torch.float64)
>>> W = F.conv2d(torch.eye(64, dtype=torch.float64).view(64, 1, 8, 8), k).reshape(64, -1).T
>>> r = toeplitz_report(W, (1, 8, 8), (1, 6, 6), 3, teacher_kernel=k, padding="valid")
>>> r["residual"] < 1e-12 and r["kernel_rel_error"] < 1e-12 and abs(r["footprint_energy"] - 1) < 1e-12
True
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ._checks import check_matrix, check_padding
from ._kernels import _check_kernel_geometry, fit_kernel_matrix, footprint_mask, recover_kernel
from ._shifts import diagonal_index, diagonal_means, from_diagonals

__all__ = ["toeplitz_report", "ipr", "kernel_similarity"]


def ipr(W: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Inverse participation ratio Σ w⁴ / (Σ w²)² along ``dim`` (0 for an all-zero row).

    Examples
    --------
    >>> ipr(torch.tensor([[1., 0, 0, 0], [1, 1, 1, 1]])).tolist()
    [1.0, 0.25]
    """
    w2 = W.double() ** 2
    s2 = w2.sum(dim)
    return torch.where(s2 > 0, (w2 ** 2).sum(dim) / s2.clamp_min(1e-300) ** 2, torch.zeros_like(s2))


def kernel_similarity(k: torch.Tensor, ref: torch.Tensor) -> dict:
    """Cosine and relative error ‖k − ref‖/‖ref‖ of two filter banks of the same shape."""
    if tuple(k.shape) != tuple(ref.shape):
        raise ValueError(f"teacher_kernel: expected the recovered shape {tuple(k.shape)}, got {tuple(ref.shape)}")
    a, b = k.double().reshape(-1), ref.double().reshape(-1).to(k.device)
    nb = float(b.norm())
    cos = float(a @ b) / (float(a.norm()) * nb) if float(a.norm()) * nb > 0 else 0.0
    return {"kernel_cosine": cos, "kernel_rel_error": float((a - b).norm()) / nb if nb else float("nan")}


def _footprint_entries(in_shape: tuple, out_shape: tuple, k: int, padding: str, device) -> torch.Tensor:
    """Boolean matrix of W's shape: entry (row, col) lies on a footprint diagonal."""
    cyclic = padding == "circular"
    fm = footprint_mask(in_shape, out_shape, k, padding).to(device)
    iy, _ = diagonal_index(out_shape[1], in_shape[1], cyclic, device)
    ix, _ = diagonal_index(out_shape[2], in_shape[2], cyclic, device)
    inside = fm[iy[:, None, :, None], ix[None, :, None, :]]  # (Ho, Wo, H, W)
    Co, Ci = out_shape[0], in_shape[0]
    return inside[None, :, :, None].expand(Co, *out_shape[1:], Ci, *in_shape[1:]).reshape(
        Co * out_shape[1] * out_shape[2], Ci * in_shape[1] * in_shape[2])


def _report(W: torch.Tensor, in_shape, out_shape, k, padding, teacher_kernel, weight) -> dict:
    cyclic = padding == "circular"
    Wm = W if weight is None else W * weight
    norm2 = float((Wm.double() ** 2).sum())
    if norm2 == 0:
        raise ValueError("W: the matrix is zero on the analysed entries; no structure to report")
    K = diagonal_means(W, in_shape, out_shape, cyclic, weight)
    R = from_diagonals(K, in_shape, out_shape, cyclic)
    diff = W - R if weight is None else (W - R) * weight
    kernel, info = recover_kernel(W, in_shape, out_shape, k, padding=padding, weight=weight, return_info=True)
    inside = _footprint_entries(in_shape, out_shape, k, padding, W.device)
    foot = float((Wm.double()[inside] ** 2).sum())
    cols = slice(None) if weight is None else weight.bool().any(0)
    out = {"residual": float(diff.double().norm()) / norm2 ** 0.5,
           "fit_residual": info["fit_residual"],
           "footprint_energy": foot / norm2,
           "ipr": float(ipr(W[:, cols]).mean()),
           "kernel": kernel}
    if teacher_kernel is not None:
        out.update(kernel_similarity(kernel, teacher_kernel))
        T = fit_kernel_matrix(teacher_kernel.to(W), in_shape, out_shape, padding)
        out["teacher_ipr"] = float(ipr(T[:, cols]).mean())
        tn = float(((T if weight is None else T * weight).double() ** 2).sum()) ** 0.5
        out["matrix_rel_error"] = float(((W - T) if weight is None else (W - T) * weight).double().norm()) / tn
    return out


def toeplitz_report(W: torch.Tensor, in_shape: Sequence[int], out_shape: Sequence[int], kernel_size: int,
                    teacher_kernel: Optional[torch.Tensor] = None, padding: str = "circular",
                    support: Optional[torch.Tensor] = None) -> dict:
    """Convolution-structure metrics of a dense layer (see the module docstring).

    Parameters
    ----------
    W : ``(prod(out_shape), prod(in_shape))``; in/out shapes ``(C, H, W)``.
    kernel_size : the teacher's k.
    teacher_kernel : ``(C_out, C_in, k, k)`` to compare against (optional).
    padding : ``"circular"``, ``"valid"`` or ``"zeros"``.
    support : boolean mask of the input pixels that are ever non-zero, shape ``(H, W)`` or
        ``in_shape``; adds ``report["support"]`` with every metric restricted to those columns and
        ``support_fraction``.

    Returns
    -------
    dict of floats plus ``kernel`` (the recovered filter bank tensor).
    """
    W, in_shape, out_shape = check_matrix(W, in_shape, out_shape)
    padding = check_padding(padding)
    _check_kernel_geometry(in_shape, out_shape, kernel_size, padding)
    if teacher_kernel is not None and tuple(teacher_kernel.shape) != (out_shape[0], in_shape[0],
                                                                     kernel_size, kernel_size):
        raise ValueError(f"teacher_kernel: expected shape {(out_shape[0], in_shape[0], kernel_size, kernel_size)} "
                         f"for in_shape {in_shape}, out_shape {out_shape}, got {tuple(teacher_kernel.shape)}")
    rep = _report(W, in_shape, out_shape, kernel_size, padding, teacher_kernel, None)
    if support is not None:
        support = torch.as_tensor(support).bool().to(W.device)
        if tuple(support.shape) == tuple(in_shape[1:]):
            support = support.expand(*in_shape)
        if tuple(support.shape) != tuple(in_shape):
            raise ValueError(f"support: expected shape {tuple(in_shape[1:])} or {in_shape}, got {tuple(support.shape)}")
        if not bool(support.any()):
            raise ValueError("support: the mask is empty (no input pixel is ever non-zero)")
        weight = support.reshape(1, -1).expand_as(W).to(W.dtype)
        sub = _report(W, in_shape, out_shape, kernel_size, padding, teacher_kernel, weight)
        sub["support_fraction"] = float(support.double().mean())
        rep["support"] = sub
    return rep
