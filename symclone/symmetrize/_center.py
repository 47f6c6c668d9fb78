"""Translations by centring: ``f_sym(x) = f_rot(x − c) + c`` with ``c`` the centroid of the positions.

Positions are the points themselves (rep ``points``) or the first ``1o`` block of an irreps input
(the n-body packing ``1x1o+1x1o+1x0e`` = positions, velocities, charge). The centroid is added back
to outputs that are positions (rep ``points`` or irreps whose first block is ``1o``).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from ..groups import Group, Rep

__all__ = ["Centering", "position_slice"]


@functools.lru_cache(maxsize=64)
def _first_1o(irreps: str) -> Optional[int]:
    from e3nn import o3
    first = o3.Irreps(irreps)[0]
    return 0 if (first.ir.l == 1 and first.ir.p == -1) else None


def position_slice(rep: Rep) -> Optional[slice]:
    """Slice of the last axis holding positions, or ``None`` if ``rep`` carries none."""
    if rep.kind == "points":
        return slice(0, None)
    if rep.kind == "irreps" and _first_1o(rep.irreps) is not None:
        return slice(0, 3)
    return None


class Centering:
    """Subtract / restore the centroid of the positions (over axis 1, the points).

    >>> from symclone.groups import parse_rep
    >>> c = Centering(parse_rep("points"), parse_rep("points"))
    >>> x = torch.randn(2, 5, 3); xc, m = c.split(x)
    >>> torch.allclose(xc.mean(1), torch.zeros(2, 3), atol=1e-6), torch.allclose(c.restore(xc, m), x, atol=1e-6)
    (True, True)
    """

    def __init__(self, rep_in: Rep, rep_out: Rep):
        self.sl_in = position_slice(rep_in)
        self.sl_out = position_slice(rep_out)
        if self.sl_in is None:
            raise ValueError(f"center: rep_in {rep_in} carries no positions to centre "
                             "(expected 'points' or irreps starting with 1o)")

    @staticmethod
    def default(group: Group, rep_in: Rep, rep_out: Rep, center: Optional[bool]) -> Optional["Centering"]:
        names = group.name.split(" x ")
        if center is None:
            center = any(n in ("so3", "o3") for n in names) and position_slice(rep_in) is not None
        return Centering(rep_in, rep_out) if center else None

    def split(self, x: torch.Tensor):
        c = x[..., self.sl_in].mean(dim=1, keepdim=True)
        x = x.clone()
        x[..., self.sl_in] = x[..., self.sl_in] - c
        return x, c

    def center_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.split(x)[0]

    def restore(self, y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.sl_out is None or y.ndim != c.ndim:
            return y
        y = y.clone()
        y[..., self.sl_out] = y[..., self.sl_out] + c
        return y
