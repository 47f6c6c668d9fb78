"""Batched image operations behind the planar groups' actions (one home: :mod:`._planar` uses them).

``roll_batched`` / ``rot90_batched`` apply one cyclic shift / quarter turn per sample,
``rotate_shift`` moves a shift through a rotation (the p4 composition law), and the ``_check_*``
helpers give the groups' early, named errors for non-square images and regular fields.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ._base import positive_int

__all__ = ["roll_batched", "rot90_batched", "rotate_shift"]


def _size2(size: Any, group: str) -> Optional[tuple[int, int]]:
    """``None``, a positive int ``N`` (-> ``(N, N)``) or a pair ``(H, W)`` of positive ints."""
    if size is None:
        return None
    expect = f"size: group {group!r} expects a positive int N or a pair (H, W) of positive ints"
    if isinstance(size, torch.Tensor) and size.ndim == 1:
        size = size.tolist()
    if isinstance(size, (tuple, list, torch.Size)):
        if len(size) != 2:
            raise ValueError(f"{expect}, got {len(size)} entries {tuple(size)}")
        try:
            return tuple(positive_int(s, "size", group) for s in size)  # type: ignore[return-value]
        except ValueError:
            raise ValueError(f"{expect}, got {tuple(size)}") from None
    try:
        n = positive_int(size, "size", group)
    except ValueError:
        raise ValueError(f"{expect}, got {size!r}") from None
    return (n, n)


def roll_batched(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Cyclic shift of the last two axes by ``shift = (dy, dx)``, one shift per sample if batched.

    Examples
    --------
    >>> x = torch.arange(9.).view(1, 1, 3, 3)
    >>> torch.equal(roll_batched(x, torch.tensor([1, 2])), torch.roll(x, (1, 2), dims=(-2, -1)))
    True
    """
    if shift.ndim == 1:
        return torch.roll(x, (int(shift[0]), int(shift[1])), dims=(-2, -1))
    B, H, W = x.shape[0], x.shape[-2], x.shape[-1]
    rows = (torch.arange(H, device=x.device)[None, :] - shift[:, :1]) % H  # (B, H)
    cols = (torch.arange(W, device=x.device)[None, :] - shift[:, 1:2]) % W  # (B, W)
    lead = (B,) + (1,) * (x.ndim - 3)
    rows = rows.view(*lead, H, 1)
    out = torch.gather(x, -2, rows.expand(*x.shape[:-2], H, W).contiguous())
    cols = cols.view(*lead, 1, W).expand(*x.shape[:-2], H, W).contiguous()
    return torch.gather(out, -1, cols)


def rot90_batched(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``torch.rot90(x, k, dims=(-2, -1))`` with one ``k`` per sample if ``k`` is batched.

    ``k`` is one integer (shape ``()``, applied to every sample) or one per sample (shape ``(B,)``);
    it is taken mod 4. The last two axes of ``x`` must be square when ``k`` is odd.

    Examples
    --------
    >>> x = torch.arange(8.).view(2, 1, 2, 2)
    >>> rot90_batched(x, torch.tensor([0, 1]))[1].flatten().tolist()
    [5.0, 7.0, 4.0, 6.0]
    """
    if k.ndim == 0:
        return torch.rot90(x, int(k) % 4, dims=(-2, -1))
    out = torch.empty_like(x)
    k = k % 4
    for r in range(4):
        mask = k == r
        if bool(mask.any()):
            out[mask] = torch.rot90(x[mask], r, dims=(-2, -1))
    return out


def _roll_orientations(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Cyclic shift by ``k`` of the 4 orientation channels of every C4 regular field."""
    B, C = x.shape[0], x.shape[1]
    xf = x.reshape(B, C // 4, 4, *x.shape[2:])
    if k.ndim == 0:
        return torch.roll(xf, int(k) % 4, dims=2).reshape(x.shape)
    idx = (torch.arange(4, device=x.device)[None, :] - k[:, None]) % 4  # (B, 4)
    idx = idx.view(B, 1, 4, *([1] * (x.ndim - 2))).expand_as(xf)
    return torch.gather(xf, 2, idx).reshape(x.shape)


def rotate_shift(k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Rotate shift vectors ``t = (..., 2)`` by ``k`` quarter turns: ``R^k t`` with ``R(s, t) = (-t, s)``.

    This is how a rotation moves a shift in p4: ``rot90_k ∘ roll_t = roll_{R^k t} ∘ rot90_k``.
    ``k`` broadcasts against ``t[..., 0]``.

    Examples
    --------
    >>> rotate_shift(torch.tensor(1), torch.tensor([2, 3])).tolist()
    [-3, 2]
    """
    k = k % 4
    s, u = t[..., 0], t[..., 1]
    out_s = torch.where(k == 0, s, torch.where(k == 1, -u, torch.where(k == 2, -s, u)))
    out_u = torch.where(k == 0, u, torch.where(k == 1, s, torch.where(k == 2, -u, -s)))
    return torch.stack([out_s, out_u], dim=-1)


def _check_square(x: torch.Tensor, group: str) -> None:
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"x: group {group!r} rotates by 90 degrees and needs square images, "
                         f"got H x W = {x.shape[-2]} x {x.shape[-1]}")


def _check_regular(x: torch.Tensor) -> None:
    if x.shape[1] % 4 != 0:
        raise ValueError(f"x: rep 'regular' needs channels divisible by 4 (C4 regular fields, "
                         f"4 orientations per field), got {x.shape[1]} channels")
