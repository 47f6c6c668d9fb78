"""Hard permutations with a soft (SoftSort + log-Sinkhorn) straight-through gradient.

For scores ``s`` (B, N), the hard element is ``p = argsort(s)`` and the model sees the sorted
input ``(g⁻¹·x)_j = x_{p(j)}``. Its matrix ``M[j, n] = [p(j) = n]`` (so ``g⁻¹·x = M x`` and
``P = Mᵀ``) gets the gradient of the soft matrix

    log M̃[j, n] = −|sort(s)_j − s_n| / τ,   then 20 alternating row/column log-normalisations,

``M_st = M + M̃ − stopgrad(M̃)``. With a node ``mask`` (True = real node), padding nodes keep their
positions and are never sorted into real positions.
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["sort_permutation", "soft_sort_matrix", "log_sinkhorn", "straight_through_matrix", "straight_through_permutation",
           "permutation_entropy"]

_NEG = -1e9


def sort_permutation(s: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The permutation ``p`` (B, N) with ``p(j)`` = node at sorted position ``j``.

    Without a mask ``p = argsort(s)``. With a mask the real positions (in index order) receive the
    real nodes in order of increasing score; padding positions map to themselves.

    Examples
    --------
    >>> sort_permutation(torch.tensor([[0.3, -1.0, 2.0]])).tolist()
    [[1, 0, 2]]
    >>> m = torch.tensor([[True, False, True]])
    >>> sort_permutation(torch.tensor([[0.3, -5.0, -1.0]]), m).tolist()
    [[2, 1, 0]]
    """
    if mask is None:
        return torch.argsort(s, dim=-1, stable=True)
    mask = mask.bool()
    big = torch.finfo(s.dtype).max
    order = torch.argsort(torch.where(mask, s, torch.full_like(s, big)), dim=-1, stable=True)
    pos = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)
    p = torch.empty_like(order)
    p.scatter_(1, pos, order)
    return p


def soft_sort_matrix(s: torch.Tensor, p: torch.Tensor, tau: float,
                     mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Log of the unnormalised SoftSort matrix ``−|s_{p(j)} − s_n| / τ`` (B, N, N), rows = positions.

    ``p`` (B, N) is the hard sorting permutation of the scores ``s`` (B, N) (:func:`sort_permutation`);
    row ``j`` peaks at the node sorted into position ``j``. With a ``mask``, entries between a real
    and a padding node get ``-1e9`` and padding nodes a zero log-weight on their own position, so
    that Sinkhorn keeps padding in place.

    Examples
    --------
    >>> s = torch.tensor([[0.0, 1.0]]); soft_sort_matrix(s, sort_permutation(s), tau=1.0).tolist()
    [[[-0.0, -1.0], [-1.0, -0.0]]]
    """
    s_sorted = torch.gather(s, 1, p)
    logits = -(s_sorted.unsqueeze(-1) - s.unsqueeze(-2)).abs() / tau
    if mask is not None:
        mask = mask.bool()
        real = mask.unsqueeze(-1) & mask.unsqueeze(-2)
        eye = torch.eye(s.shape[1], dtype=torch.bool, device=s.device).expand_as(logits)
        pad = (~mask).unsqueeze(-1) | (~mask).unsqueeze(-2)
        logits = torch.where(real, logits, torch.where(pad & eye, torch.zeros_like(logits),
                                                       torch.full_like(logits, _NEG)))
    return logits


def log_sinkhorn(log_m: torch.Tensor, iters: int = 20) -> torch.Tensor:
    """Alternate row and column normalisation in log space; returns the (approximately) doubly
    stochastic matrix ``exp(log_m)``.

    Examples
    --------
    >>> P = log_sinkhorn(torch.randn(2, 4, 4))
    >>> torch.allclose(P.sum(-2), torch.ones(2, 4), atol=1e-5)
    True
    """
    for _ in range(iters):
        log_m = log_m - torch.logsumexp(log_m, dim=-1, keepdim=True)
        log_m = log_m - torch.logsumexp(log_m, dim=-2, keepdim=True)
    return log_m.exp()


def straight_through_matrix(p: torch.Tensor, log_soft: torch.Tensor, iters: int = 20
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M_st, M_soft)`` with rows = positions: ``one_hot(p)`` in the forward pass, the gradient of
    ``M_soft = log_sinkhorn(log_soft)`` in the backward pass (``M_st = hard + (soft − soft.detach())``).

    The one straight-through step shared by every learned permutation sampler.

    Examples
    --------
    >>> p = torch.tensor([[1, 0, 2]]); logits = torch.randn(1, 3, 3, requires_grad=True)
    >>> M, soft = straight_through_matrix(p, logits)
    >>> torch.equal(M.detach(), torch.nn.functional.one_hot(p, 3).float()), M.requires_grad
    (True, True)
    """
    hard = torch.nn.functional.one_hot(p, log_soft.shape[-1]).to(log_soft.dtype)  # [j, n] = [p(j) = n]
    soft = log_sinkhorn(log_soft, iters)
    return hard + (soft - soft.detach()), soft  # exactly `hard` in the forward pass


def straight_through_permutation(s: torch.Tensor, tau: float = 0.1, iters: int = 20,
                                 mask: Optional[torch.Tensor] = None
                                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hard sorting permutation with a soft gradient.

    Returns
    -------
    p : (B, N) long, the permutation (``g``; ``g⁻¹·x`` is ``x`` sorted by score).
    P : (B, N, N) straight-through matrix with ``P[i, j] = [p(j) = i]`` in the forward pass
        (``g·x = P x``), gradient of the Sinkhorn-normalised SoftSort matrix.
    P_soft : (B, N, N) the soft matrix (for the entropy penalty); the hard one when no gradient
        is needed (``torch.no_grad`` or scores without ``requires_grad``), skipping Sinkhorn.

    Examples
    --------
    >>> s = torch.randn(3, 5, requires_grad=True)
    >>> p, P, _ = straight_through_permutation(s)
    >>> bool((P.sum(1) == 1).all() and (P.sum(2) == 1).all())
    True
    """
    p = sort_permutation(s.detach(), mask)
    hard = torch.nn.functional.one_hot(p, s.shape[1]).to(s.dtype)  # [j, n] = [p(j) = n]
    if not (torch.is_grad_enabled() and s.requires_grad):  # inference: the soft matrix is not needed
        return p, hard.transpose(-1, -2), hard.transpose(-1, -2)
    M, soft = straight_through_matrix(p, soft_sort_matrix(s, p, tau, mask), iters)
    return p, M.transpose(-1, -2), soft.transpose(-1, -2)


def permutation_entropy(P_soft: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean row + column entropy of a (soft) permutation matrix (0 for a hard one).

    Examples
    --------
    >>> float(permutation_entropy(torch.eye(3).expand(2, 3, 3)))
    0.0
    """
    rows = P_soft / P_soft.sum(-1, keepdim=True).clamp_min(eps)
    cols = P_soft / P_soft.sum(-2, keepdim=True).clamp_min(eps)
    h_r = -(rows * (rows + eps).log()).sum(-1).mean(-1)
    h_c = -(cols * (cols + eps).log()).sum(-2).mean(-1)
    return (h_r + h_c).mean()
