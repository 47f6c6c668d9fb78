"""Translation structure of a dense layer by index arithmetic (no group copies of ``W``).

View a layer ``W`` (PyTorch ``Linear`` convention) as the 6-tensor ``W[o, y', x', i, y, x]``
(output channel/row/column, input channel/row/column). Its *diagonal* is the offset

    d = ((y - y') mod H, (x - x') mod W)        (cyclic, ``padding="circular"``, needs H' = H)
    d = (y - y' + H' - 1, x - x' + W' - 1)      (Toeplitz, any other padding)

The cyclic-shift Reynolds projection (group t2) and the orthogonal projection onto Toeplitz
matrices (the span of the non-cyclic shift matrices, which have disjoint supports) both replace
every entry by the mean of its diagonal ``K[o, i, d]``. ``diagonal_means`` computes ``K`` with two
products with 0/1 diagonal-indicator matrices over one permuted copy of ``W``; ``from_diagonals`` writes ``K`` back out.
Memory is a small multiple of ``W``; time is linear in its size.

Examples
--------
>>> import torch
>>> W = torch.randn(2 * 16, 3 * 16, dtype=torch.float64)
>>> K = diagonal_means(W, (3, 4, 4), (2, 4, 4), cyclic=True)
>>> K.shape
torch.Size([2, 3, 4, 4])
>>> R = from_diagonals(K, (3, 4, 4), (2, 4, 4), cyclic=True)
>>> torch.allclose(diagonal_means(R, (3, 4, 4), (2, 4, 4), cyclic=True), K)
True
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["diagonal_index", "diagonal_sums", "diagonal_means", "from_diagonals"]


def diagonal_index(n_out: int, n_in: int, cyclic: bool, device=None) -> tuple[torch.Tensor, int]:
    """Index ``(n_out, n_in)`` of the diagonal of each (output, input) coordinate pair, and the
    number of diagonals.

    Examples
    --------
    >>> diagonal_index(2, 3, cyclic=False)[0].tolist()
    [[1, 2, 3], [0, 1, 2]]
    """
    yp = torch.arange(n_out, device=device)[:, None]
    y = torch.arange(n_in, device=device)[None, :]
    if cyclic:
        if n_out != n_in:
            raise ValueError(f"cyclic diagonals need equal input/output sizes, got {n_out} and {n_in}")
        return (y - yp) % n_in, n_in
    return y - yp + n_out - 1, n_in + n_out - 1


def diagonal_sums(W: torch.Tensor, in_shape: tuple, out_shape: tuple, cyclic: bool) -> torch.Tensor:
    """Sums of ``W`` along each diagonal: ``S[o, i, dy, dx]``."""
    Ci, H, Wd = in_shape
    Co, Ho, Wo = out_shape
    iy, ny = diagonal_index(Ho, H, cyclic, W.device)
    ix, nx = diagonal_index(Wo, Wd, cyclic, W.device)
    # the sums over each diagonal class are products with 0/1 class-indicator matrices (BLAS; a
    # scatter-add such as index_add_ is pathologically slow on a busy multi-threaded CPU)
    P = W.reshape(Co, Ho, Wo, Ci, H, Wd).permute(1, 4, 2, 5, 0, 3).reshape(Ho * H, -1)
    Ey = torch.nn.functional.one_hot(iy.reshape(-1), ny).to(W.dtype).t()  # (ny, Ho*H)
    S = Ey @ P  # (ny, Wo*Wd*Co*Ci)
    del P
    S = S.view(ny, Wo * Wd, Co * Ci).transpose(0, 1).reshape(Wo * Wd, -1)
    Ex = torch.nn.functional.one_hot(ix.reshape(-1), nx).to(W.dtype).t()  # (nx, Wo*Wd)
    S = Ex @ S  # (nx, ny*Co*Ci)
    return S.view(nx, ny, Co, Ci).permute(2, 3, 1, 0).contiguous()


def _counts(in_shape: tuple, out_shape: tuple, cyclic: bool, device) -> torch.Tensor:
    iy, ny = diagonal_index(out_shape[1], in_shape[1], cyclic, device)
    ix, nx = diagonal_index(out_shape[2], in_shape[2], cyclic, device)
    cy = torch.bincount(iy.reshape(-1), minlength=ny)
    cx = torch.bincount(ix.reshape(-1), minlength=nx)
    return cy[:, None] * cx[None, :]


def diagonal_means(W: torch.Tensor, in_shape: tuple, out_shape: tuple, cyclic: bool,
                   weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean of ``W`` along each diagonal, ``K[o, i, dy, dx]`` (see the module docstring).

    With ``weight`` (same shape as ``W``, e.g. a 0/1 mask of the data support) the weighted mean
    ``Σ w·W / Σ w`` per diagonal; diagonals with zero weight get 0.
    """
    if weight is None:
        cnt = _counts(in_shape, out_shape, cyclic, W.device).to(W.dtype)
        return diagonal_sums(W, in_shape, out_shape, cyclic) / cnt
    weight = weight.to(W.dtype)
    num = diagonal_sums(W * weight, in_shape, out_shape, cyclic)
    den = diagonal_sums(weight, in_shape, out_shape, cyclic)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(W.dtype).tiny), torch.zeros_like(num))


def from_diagonals(K: torch.Tensor, in_shape: tuple, out_shape: tuple, cyclic: bool) -> torch.Tensor:
    """The matrix ``(prod(out_shape), prod(in_shape))`` whose diagonal ``d`` is constant ``K[o, i, d]``."""
    Ci, H, Wd = in_shape
    Co, Ho, Wo = out_shape
    iy, ny = diagonal_index(Ho, H, cyclic, K.device)
    ix, nx = diagonal_index(Wo, Wd, cyclic, K.device)
    if tuple(K.shape) != (Co, Ci, ny, nx):
        raise ValueError(f"K: expected shape {(Co, Ci, ny, nx)}, got {tuple(K.shape)}")
    # one broadcast gather straight into the (o, y', x', i, y, x) layout: a single copy of W's size
    o = torch.arange(Co, device=K.device).view(Co, 1, 1, 1, 1, 1)
    i = torch.arange(Ci, device=K.device).view(1, 1, 1, Ci, 1, 1)
    R = K[o, i, iy.view(1, Ho, 1, 1, H, 1), ix.view(1, 1, Wo, 1, 1, Wd)]
    return R.reshape(Co * Ho * Wo, Ci * H * Wd)
