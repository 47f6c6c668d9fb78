"""Uniform sampler: ``k`` uniform (Haar) samples per input, or the exact Reynolds average over a finite group.

How many backbone evaluations a call costs, and whether the result is exact, is decided by ``k``:

* ``k = "all"`` — the whole (finite) group: ``f_sym(x) = (1/|G|) Σ_{g∈G} g·f(g⁻¹·x)``, the Reynolds
  operator, exactly equivariant per call; ``|G|`` evaluations per input (in chunks of ``chunk_size``
  elements to bound memory). An explicit choice: p4 on 28×28 has 3,136 elements.
* ``k`` an integer and ``G`` finite with ``|G| <= k`` — the same exact average, automatically: it costs
  ``|G| <= k`` evaluations, no more than the ``k`` samples asked for.
* otherwise — ``k`` i.i.d. uniform samples per input (with replacement; Haar measure for continuous
  groups): ``f_sym(x) = (1/k) Σ_i g_i·f(g_i⁻¹·x)`` is an unbiased estimate of the group average and
  equivariant in distribution (``h·g_i`` is uniform too), not per call.
"""
from __future__ import annotations

from typing import Iterator, Optional, Union

import torch

from ..groups import Group
from ._base import GroupSample, Sampler, element_to

__all__ = ["UniformSampler", "ALL"]

#: the value of ``k`` that asks for the exact average over every element of a finite group
ALL = "all"

KLike = Union[int, str]


def _take(g, idx):
    return tuple(t[idx] for t in g) if isinstance(g, tuple) else g[idx]


class UniformSampler(Sampler):
    """``g ~ Uniform(G)`` independently of ``x`` (see the module doc for what ``k`` selects).

    Parameters
    ----------
    group : a group or its name (``group_kw`` passed to :func:`~symclone.groups.get_group`).
    chunk_size : elements evaluated together when averaging over the whole group.

    Examples
    --------
    >>> s = UniformSampler("c4"); x = torch.zeros(3, 1, 4, 4)
    >>> [c.g.shape[0] for c in s.chunks(x, k=10)]          # |C4| = 4 <= 10: the exact average
    [12]
    >>> s.exact_for(10), s.evaluations(10), s.exact_for(2), s.evaluations(2)
    (True, 4, False, 2)
    >>> [c.k for c in s.chunks(x, k=2)]                    # 2 < 4: two uniform samples per input
    [2]
    >>> UniformSampler("so3").sample(x[:, 0, :, :3], 5).g.shape
    torch.Size([15, 3, 3])
    """

    def __init__(self, group: str | Group, chunk_size: int = 64, **group_kw):
        super().__init__(group, **group_kw)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size: expected an integer >= 1, got {chunk_size!r}")
        self.chunk_size = int(chunk_size)
        self.order: Optional[int] = self._order()

    def _order(self) -> Optional[int]:
        try:
            return self.group.order
        except ValueError:
            return None

    @property
    def supports_all(self) -> bool:
        """Whether ``k="all"`` is possible (a finite group of known order)."""
        return self.order is not None

    def whole_group(self, k: KLike) -> bool:
        """Whether ``k`` selects the exact average over every element."""
        if k == ALL:
            if self.order is None:
                raise ValueError(f"k: 'all' averages over every element of a finite group, but "
                                 f"{self.group.name!r} has no known finite order (continuous, or a grid "
                                 "group built without size)")
            return True
        return self.order is not None and self.order <= int(k)

    def exact_for(self, k: KLike) -> bool:
        return self.whole_group(k)

    def evaluations(self, k: KLike) -> int:
        return int(self.order) if self.whole_group(k) else int(k)

    def describe(self, k: KLike) -> str:
        name = self.group.name
        if self.whole_group(k):
            how = "k='all'" if k == ALL else f"|G| <= k={k}"
            return f"all {self.order} elements of {name} (exact group average, {how})"
        if self.order is None:
            return f"{k} Haar samples of {name} per input (equivariant in distribution)"
        return (f"{k} sampled of {self.order} elements of {name} per input (i.i.d. uniform, with replacement; "
                "equivariant in distribution)")

    def sample(self, x: torch.Tensor, k: int, generator: Optional[torch.Generator] = None) -> GroupSample:
        """``k`` i.i.d. uniform elements per input (sample-major, ``k·B``)."""
        g = self.group.sample(int(k) * x.shape[0], generator)
        return GroupSample(g=element_to(g, x.device), k=int(k))

    def chunks(self, x: torch.Tensor, k: KLike,
               generator: Optional[torch.Generator] = None) -> Iterator[GroupSample]:
        if not self.whole_group(k):
            yield self.sample(x, int(k), generator)
            return
        try:
            els = self.group.elements()
        except ValueError as err:
            raise ValueError(f"k: cannot average over every element of {self.group.name!r} ({err})") from None
        n = len(els[0]) if isinstance(els, tuple) else len(els)
        B = x.shape[0]
        for start in range(0, n, self.chunk_size):
            idx = torch.arange(start, min(n, start + self.chunk_size))
            c = len(idx)
            # sample-major layout: element i of the chunk for every input b at i*B + b
            g = _take(els, idx.repeat_interleave(B))
            yield GroupSample(g=element_to(g, x.device), k=c, average_weight=float(c),
                              block_elements=element_to(_take(els, idx), x.device))

    def extra_repr(self) -> str:
        return f"group={self.group.name}, order={self.order}, chunk_size={self.chunk_size}"
