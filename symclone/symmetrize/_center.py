"""Translations by centring: ``f_sym(x) = f_rot(x − c) + c`` with ``c`` the centroid of the positions.

Positions are the points themselves (rep ``points``) or the first ``1o`` block of an irreps input
(the n-body packing ``1x1o+1x1o+1x0e`` = positions, velocities, charge). The centroid is added back
to outputs that are positions (rep ``points`` or irreps whose first block is ``1o``).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..groups import DirectProduct, Group, OrthogonalGroup3, Rep, irreps_blocks

__all__ = ["Centering", "position_slice"]


def position_slice(rep: Rep) -> Optional[slice]:
    """Slice of the last axis holding positions, or ``None`` if ``rep`` carries none.

    Positions are the points themselves (``points``) or the first copy of a leading ``1o`` block.

    Examples
    --------
    >>> from symclone.groups import parse_rep
    >>> position_slice(parse_rep("irreps:1x1o+1x1o+1x0e")), position_slice(parse_rep("irreps:1x0e+1x1o"))
    (slice(0, 3, None), None)
    """
    if rep.kind == "points":
        return slice(0, None)
    if rep.kind == "irreps":
        _, _, l, p = irreps_blocks(rep.irreps)[0]
        if (l, p) == (1, -1):
            return slice(0, 3)
    return None


class Centering:
    """Subtract / restore the centroid of the positions (over axis 1, the points).

    Examples
    --------
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
        """The centring :class:`Symmetrized` uses: ``center=None`` centres when ``group`` has an
        O(3)/SO(3) factor and ``rep_in`` carries positions; ``True``/``False`` force it on/off.
        Returns ``None`` when off."""
        factors = group.factors if isinstance(group, DirectProduct) else (group,)
        if center is None:
            center = (any(isinstance(f, OrthogonalGroup3) for f in factors)
                      and position_slice(rep_in) is not None)
        return Centering(rep_in, rep_out) if center else None

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x − c, c)``: ``x`` (B, N, dim) with its positions centred, and the centroid ``c``
        (B, 1, d) of the positions over the points (axis 1). ``x`` itself is not modified."""
        c = x[..., self.sl_in].mean(dim=1, keepdim=True)
        x = x.clone()
        x[..., self.sl_in] = x[..., self.sl_in] - c
        return x, c

    def center_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with its positions centred (the first element of :meth:`split`)."""
        return self.split(x)[0]

    def restore(self, y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Add the centroid ``c`` back to the positions of the output ``y``; ``y`` unchanged when
        ``rep_out`` carries no positions (or ``y`` is not laid out per point like ``c``)."""
        if self.sl_out is None or y.ndim != c.ndim:
            return y
        y = y.clone()
        y[..., self.sl_out] = y[..., self.sl_out] + c
        return y
