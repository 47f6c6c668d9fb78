"""Learned / canonical samplers for permutation groups ``S_n`` from any score network.

``SnSampler(score_net)`` turns an S_n-equivariant score network ``scores(x) -> (B, N)`` into a
sampler: ``g = argsort(scores(x + ε))`` (hard), with a SoftSort + log-Sinkhorn straight-through
gradient and the entropy penalty ``entropy_weight × H(P_soft)`` as auxiliary loss. An optional
node mask ``mask_fn(x) -> (B, N)`` bool (True = real node) keeps padding nodes fixed.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from ..groups import Group, get_group
from ..groups._spatial import Sn
from ._base import GroupSample, Sampler, repeat_batch
from ._noise import add_noise
from ._perm import permutation_entropy, straight_through_permutation

__all__ = ["SnSampler"]


class SnSampler(Sampler):
    """Sampler for ``sn`` from a score network.

    Parameters
    ----------
    score_net : ``nn.Module`` (or callable) mapping ``x`` (B, N, ...) to scores (B, N); it must be
        S_n-equivariant (``scores(g·x) = g·scores(x)``) for ``p(g | x)`` to be equivariant.
    n : number of objects (``None``: inferred from ``x.shape[1]`` at each call).
    tau : SoftSort temperature (LPS: 0.1 for n-body, 0.01 for graphs).
    sinkhorn_iters : log-Sinkhorn iterations (20).
    noise : scale of the input noise (0 = canonical); ``noise_kind`` "gaussian" or "uniform".
    entropy_weight : weight of the row+column entropy of ``P_soft`` in ``aux_loss`` (0.1).
    mask_fn : optional callable ``x -> (B, N)`` bool node mask; padding nodes are never moved.
    deterministic : if True, ``k`` is forced to 1 and ``noise`` to 0 (canonicalization, exact).

    Math: ``p = argsort(s(x + ε))`` and ``(g⁻¹·x)_j = x_{p(j)}``; since ``s(h·x) = h·s(x)``,
    ``p(h·x) = h ∘ p(x)``, i.e. ``g(h·x) = h g(x)`` (ties aside).

    >>> net = lambda x: x[..., 0]            # equivariant scores: the first feature
    >>> smp = SnSampler(net, n=4, noise=0.0, deterministic=True)
    >>> x = torch.tensor([[[3.], [1.], [2.], [0.]]])
    >>> smp.sample(x, 1).g.tolist()
    [[3, 1, 2, 0]]
    """

    def __init__(self, score_net: Callable[[torch.Tensor], torch.Tensor], n: Optional[int] = None,
                 tau: float = 0.1, sinkhorn_iters: int = 20, noise: float = 0.1,
                 noise_kind: str = "gaussian", entropy_weight: float = 0.1,
                 mask_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 deterministic: bool = False, group: Optional[Group] = None):
        super().__init__(group if group is not None else get_group("sn", n=n))
        if tau <= 0:
            raise ValueError(f"tau: expected a positive temperature, got {tau}")
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

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, N)`` of ``x`` (validated)."""
        s = self.score_net(x)
        if not isinstance(s, torch.Tensor) or s.shape != x.shape[:2]:
            raise ValueError(f"score_net: expected scores of shape (B, N) = {tuple(x.shape[:2])}, "
                             f"got {getattr(s, 'shape', type(s).__name__)}")
        return s

    def permutation(self, s: torch.Tensor, mask: Optional[torch.Tensor]):
        """``(p, P_st, aux)`` from scores (B', N): hard perm, straight-through matrix, entropy loss."""
        p, P, P_soft = straight_through_permutation(s, self.tau, self.iters, mask)
        aux = self.entropy_weight * permutation_entropy(P_soft) if self.entropy_weight else s.new_zeros(())
        return p, P, aux

    def sample(self, x: torch.Tensor, k: int, generator: Optional[torch.Generator] = None) -> GroupSample:
        _check_sn_input(self.group, x)
        k = 1 if self.deterministic else int(k)
        xk = repeat_batch(x, k)
        s = self.scores(add_noise(xk, self.noise, self.noise_kind, generator))
        mask = None if self.mask_fn is None else self.mask_fn(xk)
        p, P, aux = self.permutation(s, mask)
        return GroupSample(g=p, k=k, aux_loss=aux, perm_matrix=P)


def _check_sn_input(group: Group, x: torch.Tensor) -> None:
    sn = group if isinstance(group, Sn) else next((f for f in getattr(group, "factors", ()) if isinstance(f, Sn)), None)
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError(f"x: expected a tensor of shape (B, N, ...), got {getattr(x, 'shape', type(x).__name__)}")
    if sn is not None and sn.n is not None and x.shape[1] != sn.n:
        raise ValueError(f"x: group {group.name!r} permutes n={sn.n} objects, but x has "
                         f"{x.shape[1]} on axis 1 (shape {tuple(x.shape)})")
