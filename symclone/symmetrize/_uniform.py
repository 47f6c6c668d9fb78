"""Uniform sampler: the exact Reynolds average over a finite group, or Haar samples."""
from __future__ import annotations

import math
from typing import Iterator, Optional

import torch

from ..groups import Group
from ._base import GroupSample, Sampler, element_to

__all__ = ["UniformSampler"]

#: finite groups up to this order are enumerated exactly by default
MAX_ENUMERATED = 5040


def _take(g, idx):
    return tuple(t[idx] for t in g) if isinstance(g, tuple) else g[idx]


class UniformSampler(Sampler):
    """``g ~ Uniform(G)`` independently of ``x``.

    Finite groups of order ``<= max_enumerated`` are *enumerated*: ``f_sym`` is the exact group
    average ``(1/|G|) Σ_{g∈G} g·f(g⁻¹·x)`` (``k`` is ignored), computed in chunks of ``chunk_size``
    elements to bound memory. Otherwise (continuous or huge groups) ``k`` Haar samples per input.

    >>> s = UniformSampler("c4"); x = torch.zeros(3, 1, 4, 4)
    >>> [c.g.shape[0] for c in s.chunks(x, k=1)]
    [12]
    >>> UniformSampler("so3").sample(x[:, 0, :, :3], 5).g.shape
    torch.Size([15, 3, 3])
    """

    def __init__(self, group: str | Group, chunk_size: int = 64, max_enumerated: int = MAX_ENUMERATED,
                 **group_kw):
        super().__init__(group, **group_kw)
        if chunk_size < 1:
            raise ValueError(f"chunk_size: expected >= 1, got {chunk_size}")
        self.chunk_size = int(chunk_size)
        order = self._order()
        self.enumerate = order is not None and order <= max_enumerated
        self.exact = self.enumerate

    def _order(self) -> Optional[int]:
        try:
            return self.group.order
        except ValueError:
            return None

    def sample(self, x: torch.Tensor, k: int, generator: Optional[torch.Generator] = None) -> GroupSample:
        g = self.group.sample(k * x.shape[0], generator)
        return GroupSample(g=element_to(g, x.device), k=k)

    def chunks(self, x: torch.Tensor, k: int, generator: Optional[torch.Generator] = None) -> Iterator[GroupSample]:
        if not self.enumerate:
            yield self.sample(x, k, generator)
            return
        els = self.group.elements()
        n = len(els[0]) if isinstance(els, tuple) else len(els)
        B = x.shape[0]
        for start in range(0, n, self.chunk_size):
            idx = torch.arange(start, min(n, start + self.chunk_size))
            c = len(idx)
            # sample-major layout: element i of the chunk for every input b at i*B + b
            g = _take(els, idx.repeat_interleave(B))
            yield GroupSample(g=element_to(g, x.device), k=c, weight=float(c))

    def extra_repr(self) -> str:
        return f"group={self.group.name}, enumerate={self.enumerate}, chunk_size={self.chunk_size}"
