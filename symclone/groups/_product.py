"""Direct products of groups, e.g. ``sn x o3`` for n-body systems."""
from __future__ import annotations

import torch

from ._base import Group, check_tensor
from ._reps import parse_rep

__all__ = ["DirectProduct"]


class DirectProduct(Group):
    """``G_1 × … × G_m``; an element is a tuple ``(g_1, …, g_m)``.

    Every factor acts on the representations it knows (the others act trivially); factors of a
    direct product commute, so the order of application does not matter.

    >>> from symclone.groups import get_group
    >>> G = get_group("sn x o3", n=4); g = G.sample(2); x = torch.randn(2, 4, 3, dtype=torch.float64)
    >>> y = G.act(g, x, "points")
    >>> torch.allclose(G.act(G.inverse(g), y, "points"), x)
    True
    """

    def __init__(self, *factors: Group):
        if len(factors) < 2:
            raise ValueError("factors: a direct product needs at least two groups")
        self.factors = tuple(factors)
        self.name = " x ".join(f.name for f in factors)
        self.supported_reps = tuple(sorted({r for f in factors for r in f.supported_reps}))

    @property
    def order(self):
        orders = [f.order for f in self.factors]
        if any(o is None for o in orders):
            return None
        out = 1
        for o in orders:
            out *= o
        return out

    @property
    def identity(self):
        return tuple(f.identity for f in self.factors)

    def compose(self, a, b):
        return tuple(f.compose(x, y) for f, x, y in zip(self.factors, a, b))

    def inverse(self, a):
        return tuple(f.inverse(x) for f, x in zip(self.factors, a))

    def sample(self, n, generator=None):
        return tuple(f.sample(n, generator) for f in self.factors)

    def elements(self):
        els = [f.elements() for f in self.factors]
        sizes = [e.shape[0] for e in els]
        grids = torch.meshgrid(*[torch.arange(s) for s in sizes], indexing="ij")
        return tuple(e[g.reshape(-1)] for e, g in zip(els, grids))

    def equal(self, a, b, atol=1e-6):
        return all(f.equal(x, y, atol) for f, x, y in zip(self.factors, a, b))

    def batch_size(self, g):
        return self.factors[0].batch_size(g[0])

    def index(self, g, i):
        return tuple(x[i] for x in g)

    def act(self, g, x, rep="points"):
        rep = parse_rep(rep)
        if not self.acts_on(rep):
            raise ValueError(f"rep: group {self.name!r} does not act on rep {rep}; "
                             f"supported: {('trivial',) + self.supported_reps}")
        x = check_tensor(x, rep)
        if not isinstance(g, (tuple, list)) or len(g) != len(self.factors):
            raise ValueError(f"g: an element of {self.name!r} is a tuple of {len(self.factors)} "
                             f"factor elements, got {type(g).__name__}")
        for f, gi in zip(self.factors, g):
            if f.acts_on(rep):
                x = f.act(gi, x, rep)
        return x

    def _act(self, g, x, rep):  # pragma: no cover - act is overridden
        raise NotImplementedError

    def __repr__(self):
        return f"DirectProduct({', '.join(map(repr, self.factors))})"
