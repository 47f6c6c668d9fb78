"""The symmetric group S_n: permutations of the objects on axis 1.

``sn`` element: a permutation ``p`` of ``range(n)``; ``(g·x)_i = x_{p⁻¹(i)}`` along axis 1 (and the
adjacency columns of a ``graph``), so ``compose(p, q) = p[q]``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ._base import Group, describe, positive_int
from ._reps import OBJECT_KINDS

__all__ = ["Sn"]


class Sn(Group):
    """Permutations of ``n`` objects, acting on axis 1 (and on the adjacency columns of ``graph``).

    Examples
    --------
    >>> g = Sn(4); p = torch.tensor([2, 0, 1, 3]); x = torch.arange(4.).view(1, 4)
    >>> g.act(p, x, "set")
    tensor([[1., 2., 0., 3.]])
    """

    name = "sn"
    element_ndim = 1
    supported_reps = OBJECT_KINDS

    def __init__(self, n: Optional[int] = None):
        self.n = None if n is None else positive_int(n, "n", self.name)

    @property
    def order(self) -> Optional[int]:
        """``n!``, or ``None`` when built without ``n``."""
        return None if self.n is None else math.factorial(self.n)

    @property
    def is_finite(self) -> bool:
        """Always ``True`` (finite for every ``n``, even if unknown)."""
        return True

    def _need_n(self):
        if self.n is None:
            raise ValueError("n: group 'sn' needs the number of objects, e.g. get_group('sn', n=5)")
        return self.n

    @property
    def identity(self) -> torch.Tensor:
        """The identity permutation ``arange(n)`` (needs ``n``)."""
        return torch.arange(self._need_n())

    @property
    def element_form(self) -> str:
        if self.n is None:
            return "permutations of 0..n-1 (integers) of shape (n,) or a batch (B, n)"
        return (f"permutations of 0..{self.n - 1} (integers) of shape ({self.n},) "
                f"or a batch (B, {self.n})")

    def _check_dtype(self, g, name):
        self._require_integer(g, name)

    def _check_shape(self, g, name):
        if g.shape[-1] < 1 or (self.n is not None and g.shape[-1] != self.n):
            raise self._error(name, f"shape {tuple(g.shape)}")

    def _check_values(self, g, name):
        n = g.shape[-1]
        rows = g.reshape(-1, n)
        if rows.shape[0] == 0:
            return
        bad = (rows.sort(dim=-1).values != torch.arange(n, device=g.device)).any(-1)   # (B,)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            what = f"{rows[i].tolist()}" if n <= 16 else describe(rows[i])
            where = f"element {i} of the batch = " if g.ndim > 1 else ""
            raise self._error(name, f"{where}{what} (not a permutation of 0..{n - 1})")

    def _compose(self, a, b):
        if a.ndim < b.ndim:
            a = a.expand_as(b)
        elif b.ndim < a.ndim:
            b = b.expand_as(a)
        return torch.gather(a, -1, b.to(a.device, torch.long))

    def _inverse(self, a):
        return torch.argsort(a, dim=-1)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` uniform permutations ``(n, self.n)`` (long; argsort of uniform noise); needs ``n``."""
        m = self._need_n()
        return torch.argsort(torch.rand(n, m, generator=generator), dim=-1)

    def elements(self) -> torch.Tensor:
        """All ``n!`` permutations ``(n!, n)`` in lexicographic order (``n <= 8``).

        Examples
        --------
        >>> Sn(3).elements().tolist()
        [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]]
        """
        m = self._need_n()
        if m > 8:
            raise ValueError(f"n: listing all {math.factorial(m)} permutations of {m} objects is "
                             "too large (n <= 8); use sample()")
        import itertools
        return torch.tensor(list(itertools.permutations(range(m))), dtype=torch.long)

    def _act(self, g, x, rep):
        g = g.long()
        if g.shape[-1] != x.shape[1]:
            raise ValueError(f"g: permutation of {g.shape[-1]} objects does not match axis 1 of x "
                             f"with {x.shape[1]} entries (shape {tuple(x.shape)})")
        inv = torch.argsort(g, dim=-1)
        if rep.kind == "graph":
            n = x.shape[1]
            if x.shape[2] < n:
                raise ValueError(f"x: rep 'graph' is [A | X] of shape (B, N, N + d), got {tuple(x.shape)}")
            x = self._permute_axis(x, inv, 1)
            feats = torch.arange(n, x.shape[2], device=x.device)
            if inv.ndim == 1:
                return x.index_select(2, torch.cat([inv, feats]))
            cols = torch.cat([inv, feats.expand(len(inv), -1)], 1)   # permute A's columns, keep X
            return torch.gather(x, 2, cols[:, None, :].expand(x.shape))
        return self._permute_axis(x, inv, 1)

    @staticmethod
    def _permute_axis(x: torch.Tensor, inv: torch.Tensor, axis: int) -> torch.Tensor:
        if inv.ndim == 1:
            return x.index_select(axis, inv)
        if axis == 1 and len(inv) == len(x):   # one row gather on the flattened batch
            B, N = inv.shape
            rows = (torch.arange(B, device=inv.device)[:, None] * N + inv).reshape(-1)
            return x.reshape(B * N, -1).index_select(0, rows).view(x.shape)
        shape = [inv.shape[0]] + [1] * (x.ndim - 1)
        shape[axis] = inv.shape[1]
        idx = inv.view(shape).expand(*x.shape[:axis], inv.shape[1], *x.shape[axis + 1:])
        return torch.gather(x, axis, idx)

    def __repr__(self):
        return f"Sn(n={self.n})"
