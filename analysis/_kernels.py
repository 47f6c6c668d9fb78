"""Recover a convolution's filter bank from its dense (unrolled) matrix.

A cross-correlation ``y[o, y', x'] = Σ_{i,a,b} k[o, i, a, b] · x[i, y' + a − p, x' + b − p]``
(``F.conv2d``; p = k//2 for circular/"zeros" padding, p = 0 for valid) has the dense matrix
``W = Σ_{a,b} k[:, :, a, b] ⊗ E_ab`` where the shift matrices ``E_ab`` (1 where
``(y − y', x − x') = (a − p, b − p)``, mod the grid for circular padding) have disjoint supports.
The least-squares fit of ``W`` on this basis is therefore the mean along each diagonal,

    k̂[o, i, a, b] = ⟨W_oi, E_ab⟩_F / ⟨E_ab, E_ab⟩_F,

and the fit residual is ``δ_T = ‖W − Σ k̂_ab E_ab‖_F / ‖W‖_F``.

C4 filter banks (lifting ``image -> regular`` or group convolution ``regular -> regular``) obey
``ψ[(f, r), (c, s)] = rot90^r ψ[(f, 0), (c, s − r)]`` (orientation indices mod 4, ``rot90`` as
``torch.rot90(·, dims=(-2, -1))``); :func:`orientation_agreement` measures how well a recovered
bank satisfies it.

Examples
--------
>>> import torch, torch.nn.functional as F
>>> k = torch.randn(2, 1, 3, 3, dtype=torch.float64)
>>> basis = torch.eye(36, dtype=torch.float64).view(36, 1, 6, 6)
>>> W = F.conv2d(F.pad(basis, (1, 1, 1, 1), mode="circular"), k).reshape(36, -1).T
>>> torch.allclose(recover_kernel(W, (1, 6, 6), (2, 6, 6), 3), k)
True
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from ._checks import check_matrix, check_padding
from ._shifts import diagonal_index, diagonal_means, from_diagonals

__all__ = ["recover_kernel", "orientation_agreement", "kernel_offsets", "footprint_mask",
           "fit_kernel_matrix"]


def _check_kernel_geometry(in_shape: tuple, out_shape: tuple, k: int, padding: str) -> None:
    if len(in_shape) != 3 or len(out_shape) != 3:
        raise ValueError(f"in_shape/out_shape: expected (C, H, W) each, got {in_shape} and {out_shape}")
    H, Wd = in_shape[1:]
    if not isinstance(k, int) or k < 1 or k > min(H, Wd):
        raise ValueError(f"kernel_size: expected an int in 1..{min(H, Wd)} (the image is {H}x{Wd}, "
                         f"in_shape {in_shape}), got {k!r}")
    want = (H - k + 1, Wd - k + 1) if padding == "valid" else (H, Wd)
    if tuple(out_shape[1:]) != want:
        raise ValueError(f"out_shape: a {k}x{k} {padding} conv on in_shape {in_shape} gives "
                         f"{want[0]}x{want[1]} outputs, got out_shape {out_shape}")


def kernel_offsets(in_shape: tuple, out_shape: tuple, k: int, padding: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal indices (as used by ``diagonal_means``) of kernel taps ``a = 0..k-1`` along rows
    and columns: ``(idx_y (k,), idx_x (k,))``."""
    p = 0 if padding == "valid" else k // 2
    a = torch.arange(k)
    if padding == "circular":
        return (a - p) % in_shape[1], (a - p) % in_shape[2]
    return a - p + out_shape[1] - 1, a - p + out_shape[2] - 1


def footprint_mask(in_shape: tuple, out_shape: tuple, k: int, padding: str) -> torch.Tensor:
    """Boolean ``(ny, nx)`` mask of the diagonals inside the ``k x k`` footprint."""
    cyclic = padding == "circular"
    ny = diagonal_index(out_shape[1], in_shape[1], cyclic)[1]
    nx = diagonal_index(out_shape[2], in_shape[2], cyclic)[1]
    iy, ix = kernel_offsets(in_shape, out_shape, k, padding)
    m = torch.zeros(ny, nx, dtype=torch.bool)
    m[iy[:, None], ix[None, :]] = True
    return m


def fit_kernel_matrix(kernel: torch.Tensor, in_shape: tuple, out_shape: tuple, padding: str) -> torch.Tensor:
    """The dense matrix ``Σ_ab k_ab E_ab`` of a filter bank (inverse of :func:`recover_kernel`)."""
    cyclic = padding == "circular"
    k = kernel.shape[-1]
    ny = diagonal_index(out_shape[1], in_shape[1], cyclic)[1]
    nx = diagonal_index(out_shape[2], in_shape[2], cyclic)[1]
    iy, ix = kernel_offsets(in_shape, out_shape, k, padding)
    K = kernel.new_zeros(*kernel.shape[:2], ny, nx)
    K[:, :, iy[:, None], ix[None, :]] = kernel
    return from_diagonals(K, in_shape, out_shape, cyclic)


def recover_kernel(W: torch.Tensor, in_shape: Sequence[int], out_shape: Sequence[int], kernel_size: int,
                   group: str = "t2", padding: str = "circular", in_rep: Optional[str] = None,
                   weight: Optional[torch.Tensor] = None, return_info: bool = False
                   ) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """Least-squares filter bank ``(C_out, C_in, k, k)`` of a dense layer on the shift basis.

    Parameters
    ----------
    W : ``(prod(out_shape), prod(in_shape))`` matrix (PyTorch ``Linear`` convention).
    in_shape, out_shape : ``(C, H, W)``.
    kernel_size : k (odd sizes centre the footprint for circular/"zeros" padding).
    group : ``"t2"`` (plain conv), or ``"c4"``/``"p4"`` for C4 lifting (``in_rep="image"``) or
        group-conv (``in_rep="regular"``) layers: the bank is the same least-squares fit, and
        ``return_info`` adds the 4-orientation agreement (:func:`orientation_agreement`).
    padding : ``"circular"``, ``"valid"`` or ``"zeros"`` (same size, zero padded).
    weight : optional mask/weights of W's shape (e.g. the data support); weighted diagonal means.
    return_info : also return ``{"fit_residual": δ_T, "orientation": {...}}``.

    Returns
    -------
    The bank ``k̂ (C_out, C_in, k, k)`` in W's dtype, ``k̂[o, i, a, b]`` the (weighted) mean of the
    ``(o, i)`` block of W along the diagonal of tap ``(a, b)``; with ``return_info`` the pair
    ``(k̂, info)``, ``info["fit_residual"]`` = δ_T (0.0 for ``W = 0``) and, for ``c4``/``p4``,
    ``info["orientation"]`` = :func:`orientation_agreement` of ``k̂``.

    Examples
    --------
    >>> W = torch.zeros(16, 36, dtype=torch.float64)
    >>> recover_kernel(W, (1, 6, 6), (1, 4, 4), 3, padding="valid").shape
    torch.Size([1, 1, 3, 3])
    """
    W, in_shape, out_shape = check_matrix(W, in_shape, out_shape)
    padding = check_padding(padding)
    _check_kernel_geometry(in_shape, out_shape, kernel_size, padding)
    if group not in ("t2", "c4", "p4"):
        raise ValueError(f"group: recover_kernel supports 't2', 'c4', 'p4', got {group!r}")
    if weight is not None and tuple(weight.shape) != tuple(W.shape):
        raise ValueError(f"weight: expected W's shape {tuple(W.shape)}, got {tuple(weight.shape)}")
    cyclic = padding == "circular"
    K = diagonal_means(W, in_shape, out_shape, cyclic, weight)
    iy, ix = kernel_offsets(in_shape, out_shape, kernel_size, padding)
    kernel = K[:, :, iy[:, None], ix[None, :]].contiguous()
    if not return_info:
        return kernel
    fit = fit_kernel_matrix(kernel, in_shape, out_shape, padding)
    diff = W - fit
    if weight is not None:
        diff = diff * weight
        W = W * weight
    norm = float(torch.linalg.vector_norm(W))
    info = {"fit_residual": float(torch.linalg.vector_norm(diff)) / norm if norm else 0.0}
    if group in ("c4", "p4"):
        in_rep = in_rep or ("regular" if in_shape[0] % 4 == 0 and in_shape[0] > 1 else "image")
        info["orientation"] = orientation_agreement(kernel, in_regular=in_rep == "regular")
    return kernel, info


def orientation_agreement(bank: torch.Tensor, in_regular: bool = False) -> dict:
    """How well a C4 filter bank agrees with rotated copies of one filter per output field.

    ``bank`` is ``(F_out·4, C_in, k, k)`` (lifting, ``in_regular=False``) or
    ``(F_out·4, F_in·4, k, k)`` (group conv). The best base filter (least squares) is
    ``ψ̂[f, c, s] = (1/4) Σ_r rot90^{−r} ψ[(f, r), (c, s + r)]`` and the report holds

    * ``rel_error``: ``‖ψ − ψ_sym‖ / ‖ψ‖`` with ``ψ_sym[(f, r), (c, s)] = rot90^r ψ̂[f, c, s − r]``;
    * ``per_orientation``: the same error restricted to each output orientation r = 0..3;
    * ``base``: ψ̂ (``(F_out, C_in, k, k)``) — with ``in_regular`` ``(F_out, F_in·4, k, k)``.

    Examples
    --------
    >>> base = torch.randn(1, 1, 3, 3, dtype=torch.float64)
    >>> bank = torch.cat([torch.rot90(base, r, dims=(-2, -1)) for r in range(4)])
    >>> orientation_agreement(bank)["rel_error"] < 1e-12
    True
    """
    if bank.ndim != 4 or bank.shape[0] % 4 or (in_regular and bank.shape[1] % 4):
        raise ValueError(f"bank: expected (F_out*4, C_in, k, k) (C_in divisible by 4 for regular inputs), "
                         f"got {tuple(bank.shape)}")
    Fo = bank.shape[0] // 4
    B = bank.reshape(Fo, 4, *bank.shape[1:])
    if in_regular:
        B = B.reshape(Fo, 4, bank.shape[1] // 4, 4, *bank.shape[2:])

    def unrotate(r: int) -> torch.Tensor:  # rot^{-r} ψ[(f, r), (c, s + r)], indexed by s
        t = B[:, r]
        if in_regular:
            t = torch.roll(t, -r, dims=2)
        return torch.rot90(t, -r, dims=(-2, -1))

    base = sum(unrotate(r) for r in range(4)) / 4

    def rotate(r: int) -> torch.Tensor:
        t = torch.rot90(base, r, dims=(-2, -1))
        return torch.roll(t, r, dims=2) if in_regular else t

    sym = torch.stack([rotate(r) for r in range(4)], dim=1)
    diff = (B - sym).reshape(Fo, 4, -1)
    total = float(torch.linalg.vector_norm(bank)) or 1.0
    per = [float(torch.linalg.vector_norm(diff[:, r])) / total * math.sqrt(4) for r in range(4)]
    return {"rel_error": float(torch.linalg.vector_norm(diff)) / total, "per_orientation": per,
            "base": base.reshape(Fo, *bank.shape[1:])}
