"""Direct products of groups, e.g. ``sn x o3`` for n-body systems."""
from __future__ import annotations

from typing import Any, Optional

import torch

from ._base import _VALIDATE, Group, check_tensor
from ._reps import RepLike, parse_rep

__all__ = ["DirectProduct"]


class DirectProduct(Group):
    """``G_1 × … × G_m``; an element is a tuple ``(g_1, …, g_m)``.

    Every factor acts on the representations it knows (the others act trivially); factors of a
    direct product commute, so the order of application does not matter.

    Examples
    --------
    >>> from symclone.groups import get_group
    >>> G = get_group("sn x o3", n=4); g = G.sample(2); x = torch.randn(2, 4, 3, dtype=torch.float64)
    >>> y = G.act(g, x, "points")
    >>> torch.allclose(G.act(G.inverse(g), y, "points"), x)
    True

    Elements are validated factor by factor:

    >>> G.act((torch.tensor([0, 0, 1, 2]), torch.eye(3)), x[:1], "points")
    Traceback (most recent call last):
    ...
    ValueError: g[0] (the sn factor of sn x o3): sn elements are ...; got [0, 0, 1, 2] (not a permutation of 0..3)
    """

    def __init__(self, *factors: Group):
        if len(factors) < 2:
            raise ValueError("factors: a direct product needs at least two groups")
        for i, f in enumerate(factors):
            if not isinstance(f, Group):
                raise ValueError(f"factors: factor {i} is a {type(f).__name__}, expected a Group")
        self.factors = tuple(factors)
        self.name = " x ".join(f.name for f in factors)
        self.supported_reps = tuple(sorted({r for f in factors for r in f.supported_reps}))

    @property
    def order(self) -> Optional[int]:
        """The product of the factors' orders, ``None`` if any factor is continuous or of unknown order."""
        orders = [f.order for f in self.factors]
        if any(o is None for o in orders):
            return None
        out = 1
        for o in orders:
            out *= o
        return out

    @property
    def identity(self) -> tuple:
        """The tuple of the factors' identities."""
        return tuple(f.identity for f in self.factors)

    @property
    def element_form(self) -> str:
        return f"tuples ({', '.join(f.name + ' element' for f in self.factors)})"

    def _factor_name(self, name: str, i: int) -> str:
        return f"{name}[{i}] (the {self.factors[i].name} factor of {self.name})"

    def _check_form(self, g: Any, name: str) -> tuple:
        if not isinstance(g, (tuple, list)) or len(g) != len(self.factors):
            what = f"a {type(g).__name__} of length {len(g)}" if isinstance(g, (tuple, list)) \
                else f"a {type(g).__name__}"
            raise self._error(name, what)
        out = tuple(f._check_form(gi, self._factor_name(name, i))
                    for i, (f, gi) in enumerate(zip(self.factors, g)))
        sizes = [f.batch_size(gi) for f, gi in zip(self.factors, out)]
        if len(set(sizes)) > 1:
            shown = ", ".join("single" if b is None else f"batch of {b}" for b in sizes)
            raise self._error(name, f"factors with different batch sizes ({shown})")
        return out

    def _check_values(self, g: tuple, name: str) -> None:
        for i, (f, gi) in enumerate(zip(self.factors, g)):
            f._check_values(gi, self._factor_name(name, i))

    def _compose(self, a, b):
        return tuple(f._compose(x, y) for f, x, y in zip(self.factors, a, b))

    def _inverse(self, a):
        return tuple(f._inverse(x) for f, x in zip(self.factors, a))

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> tuple:
        """``n`` uniform elements: a tuple of ``n`` samples of each factor (drawn factor by factor)."""
        return tuple(f.sample(n, generator) for f in self.factors)

    def elements(self) -> tuple:
        """Every element, as a tuple of per-factor batches of length ``|G_1|·…·|G_m|`` (the last
        factor varies fastest).

        Examples
        --------
        >>> from symclone.groups import get_group
        >>> p, k = get_group("sn x c4", n=2).elements(); p.shape, k.tolist()
        (torch.Size([8, 2]), [0, 1, 2, 3, 0, 1, 2, 3])
        """
        els = [f.elements() for f in self.factors]
        sizes = [e.shape[0] for e in els]
        grids = torch.meshgrid(*[torch.arange(s) for s in sizes], indexing="ij")
        return tuple(e[g.reshape(-1)] for e, g in zip(els, grids))

    def equal(self, a: tuple, b: tuple, atol: float = 1e-6) -> bool:
        """Whether every factor of ``a`` equals the same factor of ``b`` (each by its group's ``equal``)."""
        return all(f.equal(x, y, atol) for f, x, y in zip(self.factors, a, b))

    def batch_size(self, g: tuple) -> Optional[int]:
        """Leading batch size of ``g`` (that of its first factor; validation makes them agree)."""
        return self.factors[0].batch_size(g[0])

    def index(self, g: tuple, i: int) -> tuple:
        """The ``i``-th element of a batch: the ``i``-th entry of every factor."""
        return tuple(x[i] for x in g)

    def act(self, g: tuple, x: torch.Tensor, rep: RepLike = "points", *,
            validate: bool = True) -> torch.Tensor:
        """Apply every factor of ``g`` that acts on ``rep`` (see :meth:`Group.act`); all factors
        are validated, including those acting trivially on ``rep``."""
        rep = parse_rep(rep)
        if not self.acts_on(rep):
            raise ValueError(f"rep: group {self.name!r} does not act on rep {rep}; "
                             f"supported: {('trivial',) + self.supported_reps}")
        x = check_tensor(x, rep)
        g = self._element(g, "g", validate and _VALIDATE.get())
        for f, gi in zip(self.factors, g):
            if f.acts_on(rep) and rep.kind != "trivial":
                gi = f._check_batch(gi, x)
                x = f._act(gi, x, rep)
        return x

    def _act(self, g, x, rep):  # pragma: no cover - act is overridden
        raise NotImplementedError

    def __repr__(self):
        return f"DirectProduct({', '.join(map(repr, self.factors))})"
