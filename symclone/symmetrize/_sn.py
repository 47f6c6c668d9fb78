"""Samplers for permutation groups ``S_n``: sort per-node scores (the one S_n sampler hierarchy).

Every learned, canonical or random-ordering sampler of ``S_n`` is an :class:`SnSampler`: it scores
the nodes and sorts them. One implementation, in :meth:`SnSampler.sample`, turns scores into a
:class:`~symclone.symmetrize.GroupSample`:

1. :meth:`~SnSampler.draw_scores` — scores ``s`` (k·B, N) for the ``k`` copies of the batch, and an
   optional tie-break key (``None``: ties go to the lower index). Default: ``score_net(x + ε)``.
2. :meth:`~SnSampler.order` — the hard permutation ``p = argsort(s)`` (ties broken by the key), with
   ``(g⁻¹·x)_j = x_{p(j)}``; where padding nodes go is the *layout* hook :meth:`~SnSampler.argsort`.
3. :meth:`~SnSampler.permutation` — when the scores carry gradients, the straight-through matrix
   ``P = hard + M̃ − stopgrad(M̃)`` with ``M̃`` = log-Sinkhorn (``sinkhorn_iters``) of the SoftSort logits
   of the layout hook :meth:`~SnSampler.soft_logits` (temperature ``tau``), and the auxiliary loss
   ``entropy_weight × H(M̃)`` (LPS).

The hierarchy::

    Sampler                        symclone.symmetrize (_base.py): the interface
    └── SnSampler                  this module: scores -> sort -> straight-through Sinkhorn + entropy;
        │                          scores = score_net(x + ε); optional node mask (``mask_fn``),
        │                          padding nodes keep their positions (:func:`sort_permutation`)
        └── GraphSampler           symclone.graphs: dense graphs ``[A | m | X]``; the mask is the
            │                      ``m`` channel and real nodes come first, padding last
            ├── UniformGraphSampler     scores ``U[0, 1]`` i.i.d.: uniform orderings of the real nodes
            ├── CanonicalGraphSampler   scores = canonical positions (individualization-refinement)
            └── LearnedGraphSampler     scores ``ε + GIN(A, [m | X | ε])``, ties broken by ``ε``

A subclass overrides only what differs: :meth:`~SnSampler.scores` (or :meth:`~SnSampler.draw_scores`
when it draws its own noise), the layout pair :meth:`~SnSampler.argsort` / :meth:`~SnSampler.soft_logits`,
:meth:`~SnSampler.check_input`, and :meth:`~SnSampler.entropy_loss` (only to keep the float rounding of
its seeded results: the entropy of ``P`` and of ``Pᵀ`` are the same number). ``matrix_without_grad``
says what a call without gradients returns: the hard matrix and its entropy (≈ 0) (:class:`SnSampler`),
or ``g`` alone (graph samplers). Uniform sampling over the whole of ``S_n`` (no padding; ``k="all"`` for
the exact average) is the group-generic :class:`~symclone.symmetrize.UniformSampler`; the function form
of step 3 for the default layout is :func:`~symclone.symmetrize.straight_through_permutation` (used by
the ``sn x o3`` frame sampler).

Math: ``p = argsort(s(x + ε))`` and ``(g⁻¹·x)_j = x_{p(j)}``; since ``s(h·x) = h·s(x)``,
``p(h·x) = h ∘ p(x)``, i.e. ``g(h·x) = h g(x)`` (ties aside, or ties broken by an equivariant key).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ..groups import Group, Sn, get_group
from ._base import GroupSample, Sampler, repeat_batch
from ._noise import add_noise
from ._perm import permutation_entropy, soft_sort_matrix, sort_permutation, straight_through_matrix

__all__ = ["SnSampler"]


class SnSampler(Sampler):
    """Sampler for ``sn`` by sorting node scores (see the module docstring for the hierarchy).

    Parameters
    ----------
    score_net : ``nn.Module`` (or callable) mapping ``x`` (B, N, ...) to scores (B, N); it must be
        S_n-equivariant (``scores(g·x) = g·scores(x)``) for ``p(g | x)`` to be equivariant. ``None``
        only for subclasses that override :meth:`scores`.
    n : number of objects (``None``: inferred from ``x.shape[1]`` at each call).
    tau : SoftSort temperature (LPS: 0.1 for n-body, 0.01 for graphs).
    sinkhorn_iters : log-Sinkhorn iterations (20).
    noise : scale of the input noise (0 = canonical); ``noise_kind`` "gaussian" or "uniform".
    entropy_weight : weight of the row+column entropy of ``P_soft`` in ``aux_loss`` (0.1).
    mask_fn : optional callable ``x -> (B, N)`` bool node mask; padding nodes are never moved.
    deterministic : if True, ``k`` is forced to 1 and ``noise`` to 0 (canonicalization, exact).
    group : the group (default ``get_group("sn", n=n)``), e.g. a product with an ``sn`` factor.

    Examples
    --------
    >>> net = lambda x: x[..., 0]            # equivariant scores: the first feature
    >>> smp = SnSampler(net, n=4, noise=0.0, deterministic=True)
    >>> x = torch.tensor([[[3.], [1.], [2.], [0.]]])
    >>> smp.sample(x, 1).g.tolist()
    [[3, 1, 2, 0]]
    >>> smp.order(torch.tensor([[1., 0., 1., 1.]]), tie=torch.tensor([[0., 0., 2., 1.]])).tolist()
    [[1, 0, 3, 2]]
    """

    #: what a call without gradients returns besides ``g``: the hard matrix ``P`` and the entropy
    #: penalty of it as ``aux_loss`` (True), or nothing (False: ``perm_matrix=None``, ``aux_loss=0``)
    matrix_without_grad: bool = True

    def __init__(self, score_net: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, n: Optional[int] = None,
                 tau: float = 0.1, sinkhorn_iters: int = 20, noise: float = 0.1,
                 noise_kind: str = "gaussian", entropy_weight: float = 0.1,
                 mask_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 deterministic: bool = False, group: Optional[Group] = None):
        super().__init__(group if group is not None else get_group("sn", n=n))
        if tau <= 0:
            raise ValueError(f"tau: expected a positive temperature, got {tau}")
        if score_net is None and type(self).scores is SnSampler.scores:
            raise ValueError("score_net: expected an S_n-equivariant score network x -> (B, N) "
                             "(only a subclass that overrides scores() may omit it)")
        self.score_net = score_net
        self.tau, self.iters = float(tau), int(sinkhorn_iters)
        self.noise = 0.0 if deterministic else float(noise)
        add_noise(torch.zeros(1), self.noise, noise_kind)  # validates the arguments
        self.noise_kind = noise_kind
        self.entropy_weight = float(entropy_weight)
        self.mask_fn = mask_fn
        self.deterministic = bool(deterministic)
        self.exact = self.deterministic
        self.fixed_k = 1 if deterministic else None

    # ---------------------------------------------------------------- scores
    def scores(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Scores ``(B, N)`` of ``x``: ``score_net(x)``, validated (``generator`` is for subclasses
        whose scores are random; the input noise is added before, by :meth:`draw_scores`)."""
        s = self.score_net(x)
        if not isinstance(s, torch.Tensor) or s.shape != x.shape[:2]:
            raise ValueError(f"score_net: expected scores of shape (B, N) = {tuple(x.shape[:2])}, "
                             f"got {getattr(s, 'shape', type(s).__name__)}")
        return s

    def draw_scores(self, x: torch.Tensor, xk: torch.Tensor, generator: Optional[torch.Generator] = None
                    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Scores ``(k·B, N)`` of ``xk = repeat_batch(x, k)`` and a tie-break key (or ``None``).

        Default: ``scores(xk + ε)`` with the input noise ``ε`` (``noise``, ``noise_kind``), no key.
        """
        return self.scores(add_noise(xk, self.noise, self.noise_kind, generator)), None

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``(B, N, ...)`` with ``N`` the group's ``n``."""
        _check_sn_input(self.group, x)

    # ---------------------------------------------------------------- layout of padding nodes
    def argsort(self, s: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Hard order ``p`` (B, N) of scores ``s``, ties by index: padding nodes keep their positions
        (:func:`~symclone.symmetrize.sort_permutation`)."""
        return sort_permutation(s, mask)

    def soft_logits(self, s: torch.Tensor, p: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """SoftSort logits ``−|s_{p(j)} − s_n| / τ`` (B, N, N), rows = positions ``j``, for the layout of
        :meth:`argsort` (:func:`~symclone.symmetrize.soft_sort_matrix`)."""
        return soft_sort_matrix(s, p, self.tau, mask)

    # ---------------------------------------------------------------- scores -> permutation
    def order(self, s: torch.Tensor, mask: Optional[torch.Tensor] = None,
              tie: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Hard order ``p`` (B, N) of scores ``s`` in the layout of :meth:`argsort`; ties between
        scores are broken by ``tie`` (lower key first), or by index when ``tie`` is ``None``."""
        if tie is None:
            return self.argsort(s, mask)
        first = self.argsort(tie, mask)
        key_mask = None if mask is None else torch.gather(mask, 1, first)
        return torch.gather(first, 1, self.argsort(torch.gather(s, 1, first), key_mask))

    def permutation(self, s: torch.Tensor, mask: Optional[torch.Tensor] = None,
                    tie: Optional[torch.Tensor] = None
                    ) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """``(p, P, aux)`` from scores ``s`` (B', N).

        Returns
        -------
        p : (B', N) long, the hard permutation (:meth:`order`).
        P : (B', N, N) with ``P[i, j] = [p(j) = i]`` in the forward pass; when ``s`` carries gradients,
            the straight-through matrix with the gradient of the log-Sinkhorn-normalised
            :meth:`soft_logits`. Without gradients: the hard matrix, or ``None`` when
            ``matrix_without_grad`` is False.
        aux : :meth:`entropy_loss` of the soft matrix (of the hard one without gradients), or ``None``
            together with ``P``.
        """
        p = self.order(s.detach(), mask, tie)
        if torch.is_grad_enabled() and s.requires_grad:
            M, soft = straight_through_matrix(p, self.soft_logits(s, p, mask), self.iters)  # [position, node]
        elif self.matrix_without_grad:  # inference: the soft matrix is not needed
            M = soft = torch.nn.functional.one_hot(p, s.shape[1]).to(s.dtype)
        else:
            return p, None, None
        return p, M.transpose(-1, -2), self.entropy_loss(soft)

    def entropy_loss(self, soft: torch.Tensor) -> torch.Tensor:
        """``entropy_weight ×`` the row + column entropy of ``soft`` (B', N, N) [position, node]; a
        zero scalar when ``entropy_weight`` is 0. Evaluated on ``softᵀ`` [node, position] (the
        entropy is the same either way; subclasses keep the orientation their seeded results used,
        because the float rounding of the two reductions differs)."""
        if not self.entropy_weight:
            return soft.new_zeros(())
        return self.entropy_weight * permutation_entropy(soft.transpose(-1, -2))

    def sample(self, x: torch.Tensor, k: int, generator: Optional[torch.Generator] = None) -> GroupSample:
        """``k`` permutations per input of ``x`` (sample-major, ``k·B``; ``k = 1`` if deterministic)."""
        self.check_input(x)
        k = 1 if self.deterministic else int(self.fixed_k or k)
        xk = repeat_batch(x, k)
        s, tie = self.draw_scores(x, xk, generator)
        mask = None if self.mask_fn is None else self.mask_fn(xk)
        p, P, aux = self.permutation(s, mask, tie)
        if aux is None:
            return GroupSample(g=p, k=k, perm_matrix=P)
        return GroupSample(g=p, k=k, aux_loss=aux, perm_matrix=P)


def _check_sn_input(group: Group, x: torch.Tensor) -> None:
    sn = group if isinstance(group, Sn) else next((f for f in getattr(group, "factors", ()) if isinstance(f, Sn)), None)
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError(f"x: expected a tensor of shape (B, N, ...), got {getattr(x, 'shape', type(x).__name__)}")
    if sn is not None and sn.n is not None and x.shape[1] != sn.n:
        raise ValueError(f"x: group {group.name!r} permutes n={sn.n} objects, but x has "
                         f"{x.shape[1]} on axis 1 (shape {tuple(x.shape)})")
