"""The sampler interface of probabilistic symmetrization (docs/design.md §5).

A *sampler* draws group elements ``g ~ p(g | x)`` for a batch ``x``. :class:`Symmetrized` then
computes ``f_sym(x) = (1/k) Σ_i g_i · f(g_i⁻¹ · x)``. Every sampler — uniform, canonical, learned,
or one written elsewhere (e.g. a graph canonicalizer) — subclasses :class:`Sampler` and
implements :meth:`Sampler.sample`, returning a :class:`GroupSample`.

Layout convention: the ``k`` samples of a batch of ``B`` inputs are stacked *sample-major* into a
flat batch of ``k·B`` elements, element ``i·B + b`` belonging to input ``b`` (the same layout as
``x.repeat(k, 1, ...)``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import torch
from torch import nn

from ..groups import Group, get_group

__all__ = ["GroupSample", "Sampler", "repeat_batch", "element_to"]


def element_to(el: Any, device: torch.device) -> Any:
    """A group element (a tensor, or nested tuples / named tuples / lists of tensors for product
    groups) moved to ``device``.

    Examples
    --------
    >>> element_to((torch.zeros(2), [torch.ones(1)]), torch.device("cpu"))
    (tensor([0., 0.]), [tensor([1.])])
    """
    if isinstance(el, torch.Tensor):
        return el.to(device)
    if isinstance(el, (tuple, list)):
        items = [element_to(e, device) for e in el]
        return type(el)(*items) if hasattr(el, "_fields") else type(el)(items)
    return el


def repeat_batch(x: torch.Tensor, k: int) -> torch.Tensor:
    """Stack ``k`` copies of ``x`` along the batch axis, sample-major: ``(k·B, ...)``.

    Examples
    --------
    >>> repeat_batch(torch.tensor([[1.], [2.]]), 2).flatten().tolist()
    [1.0, 2.0, 1.0, 2.0]
    """
    return x.repeat(k, *([1] * (x.ndim - 1)))


@dataclass
class GroupSample:
    """``k`` group elements for each of ``B`` inputs (flat batch of ``k·B``, sample-major).

    Attributes
    ----------
    g : hard group elements, batched with leading dim ``k·B`` (a tuple of such tensors for
        product groups, one per factor). For continuous groups ``g`` may carry gradients
        (e.g. Gram–Schmidt rotations); the action is then differentiable as it is.
    k : number of samples per input.
    aux_loss : scalar regulariser to add to the training loss (e.g. the S_n entropy penalty);
        ``0`` when there is none.
    perm_matrix : optional ``(k·B, N, N)`` straight-through permutation matrices for the
        ``sn`` factor, ``P[i, j] = 1`` iff ``p(j) = i`` in the forward pass (so ``g·x = P x``,
        ``g⁻¹·x = Pᵀ x``) with the gradient of a soft (Sinkhorn) matrix. When given, the
        ``sn`` factor is applied through ``P`` so that gradients reach the sampler.
    candidate_weights, candidates : optional straight-through one-hot weights ``w`` ``(k·B, M)``
        over per-sample candidate elements ``candidates`` (batched ``(k·B, M, ...)``), used for finite
        groups: ``g⁻¹·x = Σ_m w_m c_m⁻¹·x`` — exactly ``g⁻¹·x`` in the forward pass because ``w`` is
        one-hot there, with the softmax gradient in the backward pass. ``g`` must equal
        ``candidates[argmax w]``.
    average_weight : weight of this sample in the average over the chunks that
        :meth:`Sampler.chunks` yields (``None``: ``k``, as for ordinary samples; an exhaustive
        enumeration gives each chunk the number of elements it holds): :class:`Symmetrized` computes
        ``Σ_chunks average_weight · mean_k(g·f(g⁻¹·x)) / Σ_chunks average_weight``.
    block_elements : optional; set when every input draws the same element in each block of the
        sample-major layout, ``g[i·B + b] = block_elements[i]`` for all ``b`` (an exhaustive enumeration
        of a finite group). :func:`~symclone.symmetrize.transform` then applies one unbatched action
        per block into one output buffer (one ``rot90`` over ``B`` inputs instead of a masked batched
        rotation) and accepts the un-repeated batch of ``B`` inputs.
    """

    g: Any
    k: int
    aux_loss: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    perm_matrix: Optional[torch.Tensor] = None
    candidate_weights: Optional[torch.Tensor] = None
    candidates: Optional[torch.Tensor] = None
    average_weight: Optional[float] = None
    block_elements: Any = None

    @property
    def blockwise(self) -> bool:
        """Whether :func:`~symclone.symmetrize.transform` applies this sample block by block (it has
        ``block_elements`` and no straight-through carrier that needs the per-sample path); such a
        sample also accepts the un-repeated batch of ``B`` inputs."""
        return self.block_elements is not None and self.perm_matrix is None and self.candidate_weights is None


class Sampler(nn.Module):
    """Base class of all samplers ``p(g | x)``.

    Subclasses set ``self.group`` (a :class:`~symclone.groups.Group`) and implement
    :meth:`sample`. Samplers are ``nn.Module``\\ s so that learned ones train with the model;
    they must keep **no state between calls** (randomness comes from the global torch RNG or
    ``generator``).

    Contract (what :class:`Symmetrized` relies on):

    * ``sample(x, k) -> GroupSample`` with ``k·B`` elements in the sample-major layout.
    * equivariance of the distribution: ``p(h·g | h·x) = p(g | x)`` for every ``h`` (for
      ``exact`` samplers: ``g(h·x) = h·g(x)`` deterministically, or exact enumeration).
    * ``exact``: ``True`` when ``f_sym`` is equivariant per call (canonicalization), ``False`` when
      only in distribution; :meth:`exact_for` answers for a given ``k`` (the uniform sampler is exact
      only when it averages over the whole group).
    * ``chunks(x, k)`` yields the :class:`GroupSample`\\ s whose weighted average is ``f_sym``;
      the default yields ``sample(x, k)`` once. Exhaustive samplers yield the whole group in
      chunks to bound memory.
    * :meth:`evaluations` — backbone evaluations per input for ``k`` (``fixed_k`` if set, else
      ``k``); :meth:`describe` — one line saying what a call with ``k`` computes.
    * ``supports_all``: whether ``k="all"`` (the exact average over every element) is possible.

    Examples
    --------
    >>> class Identity(Sampler):
    ...     def sample(self, x, k, generator=None):
    ...         e = self.group.identity
    ...         return GroupSample(g=e.expand(k * x.shape[0], *e.shape), k=k)
    >>> s = Identity("c4"); s.sample(torch.zeros(3, 1, 4, 4), 2).g.shape
    torch.Size([6])
    """

    exact: bool = False
    #: whether the sampler ignores the requested k (canonicalization: always 1)
    fixed_k: Optional[int] = None
    #: whether ``k="all"`` (every element of a finite group) is possible
    supports_all: bool = False

    def __init__(self, group: str | Group, **group_kw: Any):
        super().__init__()
        self.group = get_group(group, **group_kw) if isinstance(group, str) else group

    def sample(self, x: torch.Tensor, k: int,
               generator: Optional[torch.Generator] = None) -> GroupSample:  # pragma: no cover
        """Draw ``k`` elements per input of ``x``; see the class docstring."""
        raise NotImplementedError

    def chunks(self, x: torch.Tensor, k: int,
               generator: Optional[torch.Generator] = None) -> Iterator[GroupSample]:
        """The samples whose (weighted) average defines ``f_sym``; one chunk by default."""
        yield self.sample(x, k, generator)

    def exact_for(self, k: Any) -> bool:
        """Whether ``f_sym`` with ``k`` samples per input is equivariant per call."""
        return bool(self.exact)

    def evaluations(self, k: Any) -> int:
        """Backbone evaluations per input for ``k`` requested samples."""
        return int(self.fixed_k or k)

    def describe(self, k: Any) -> str:
        """What a call with ``k`` computes, in words (printed by ``symclone symmetrize``)."""
        n = self.evaluations(k)
        kind = "exact per call" if self.exact_for(k) else "equivariant in distribution"
        what = "canonical element" if self.fixed_k == 1 and self.exact else "sampled elements"
        return f"{n} {what} of {self.group.name} per input ({type(self).__name__}, {kind})"

    def extra_repr(self) -> str:
        return f"group={self.group.name}, exact={self.exact}"
