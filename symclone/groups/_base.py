"""Abstract group interface shared by every symmetry group in symclone."""
from __future__ import annotations

import abc
from typing import Any, Optional

import torch

from ._reps import Rep, RepLike, parse_rep

__all__ = ["Group", "check_tensor"]

Element = Any  # a tensor (or a tuple of tensors for product groups)


def check_tensor(x: Any, rep: Rep, name: str = "x") -> torch.Tensor:
    """Validate that ``x`` is a tensor laid out as ``rep`` expects; return it."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim < rep.min_ndim:
        layout = {"image": "(B, C, H, W)", "regular": "(B, F*4, H, W)", "irreps": "(B, N, dim)",
                  "points": "(B, N, 3)", "set": "(B, N, ...)", "graph": "(B, N, N + d)",
                  "trivial": "(B, ...)"}[rep.kind]
        raise ValueError(f"{name}: rep {rep} expects a tensor of shape {layout}, got shape {tuple(x.shape)}")
    return x


class Group(abc.ABC):
    """A symmetry group with an explicit action on tensors.

    Elements are tensors (a tuple of tensors for products). A *batch* of elements carries a
    leading batch dimension; ``act`` applies element ``g[b]`` to sample ``x[b]`` when ``g`` is
    batched, and one element to every sample otherwise.

    Subclasses define ``element_ndim`` (dimensions of one element), ``acts_on`` and ``_act``.
    """

    name: str = "group"
    element_ndim: int = 0
    #: representations this group knows how to act on (``trivial`` is always allowed)
    supported_reps: tuple[str, ...] = ()

    # ---- structure -------------------------------------------------------------------------
    @property
    def order(self) -> Optional[int]:
        """Number of elements, ``None`` for continuous groups."""
        return None

    @property
    def is_finite(self) -> bool:
        return self.order is not None

    @property
    @abc.abstractmethod
    def identity(self) -> Element: ...

    @abc.abstractmethod
    def compose(self, a: Element, b: Element) -> Element:
        """The product ``a b`` (apply ``b`` first, then ``a``)."""

    @abc.abstractmethod
    def inverse(self, a: Element) -> Element: ...

    @abc.abstractmethod
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Element:
        """``n`` elements drawn uniformly (Haar measure), stacked along a leading batch axis."""

    def elements(self) -> Element:
        """All elements stacked along a leading axis (finite groups only)."""
        raise ValueError(f"group {self.name!r} is continuous: it has no finite list of elements; use sample()")

    def equal(self, a: Element, b: Element, atol: float = 1e-6) -> bool:
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        if a.dtype.is_floating_point or b.dtype.is_floating_point:
            return bool(torch.allclose(a.double(), b.double(), atol=atol))
        return bool(torch.equal(a, b))

    def batch_size(self, g: Element) -> Optional[int]:
        """Leading batch size of ``g``, or ``None`` for a single element."""
        g = torch.as_tensor(g)
        return None if g.ndim == self.element_ndim else int(g.shape[0])

    def index(self, g: Element, i: int) -> Element:
        """The ``i``-th element of a batch of elements."""
        return g[i]

    # ---- action ----------------------------------------------------------------------------
    def acts_on(self, rep: RepLike) -> bool:
        rep = parse_rep(rep)
        return rep.kind == "trivial" or rep.kind in self.supported_reps

    def act(self, g: Element, x: torch.Tensor, rep: RepLike = "image") -> torch.Tensor:
        """Apply ``g`` to ``x`` laid out as ``rep``.

        ``act(g, act(h, x)) == act(compose(g, h), x)`` and ``act(identity, x) == x``.
        """
        rep = parse_rep(rep)
        if not self.acts_on(rep):
            raise ValueError(f"rep: group {self.name!r} does not act on rep {rep}; "
                             f"supported: {('trivial',) + tuple(self.supported_reps)}")
        x = check_tensor(x, rep)
        if rep.kind == "trivial":
            return x
        g = self._check_element(g, x)
        return self._act(g, x, rep)

    def _check_element(self, g: Element, x: torch.Tensor) -> Element:
        g = torch.as_tensor(g, device=x.device)
        if g.ndim not in (self.element_ndim, self.element_ndim + 1):
            raise ValueError(f"g: an element of {self.name!r} has {self.element_ndim} dims "
                             f"(a batch has {self.element_ndim + 1}); got shape {tuple(g.shape)}")
        if g.ndim == self.element_ndim + 1 and g.shape[0] != x.shape[0]:
            raise ValueError(f"g: batch of {g.shape[0]} elements does not match the batch of "
                             f"{x.shape[0]} samples in x")
        return g

    @abc.abstractmethod
    def _act(self, g: Element, x: torch.Tensor, rep: Rep) -> torch.Tensor: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
