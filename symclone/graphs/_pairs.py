"""Exact, memory-bounded search for pairs of embeddings that are *not* separated: ``‖e_i − e_j‖₁ ≤ tol``.

:func:`close_pairs` sorts the embeddings by their coordinate sum ``σ_i = Σ_c e_ic``. Because
``|σ_i − σ_j| ≤ ‖e_i − e_j‖₁``, a close pair is at most ``tol`` apart in ``σ``, so only pairs
inside a sliding window of the sorted order are checked (offset by offset, ``O(n·D)`` memory per
step). The result is exact — the same set as the brute force :func:`close_pairs_bruteforce`,
which compares chunks of rows against all rows and never holds more than ``chunk × n``
distances. :func:`filter_pairs` re-checks a candidate list under a new seed.
"""
from __future__ import annotations

import torch

__all__ = ["close_pairs", "close_pairs_bruteforce", "filter_pairs", "pair_l1"]


def pair_l1(emb: torch.Tensor, pairs: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """``‖e_i − e_j‖₁`` for each row ``(i, j)`` of ``pairs`` (P, 2), in chunks."""
    out = [(emb[pairs[s:s + chunk, 0]] - emb[pairs[s:s + chunk, 1]]).abs().sum(-1)
           for s in range(0, len(pairs), chunk)]
    return torch.cat(out) if out else emb.new_zeros(0)


def _check(emb: torch.Tensor) -> torch.Tensor:
    if not isinstance(emb, torch.Tensor) or emb.ndim != 2:
        raise ValueError(f"emb: expected embeddings of shape (n, D), got {getattr(emb, 'shape', emb)}")
    return emb.double()


def close_pairs(emb: torch.Tensor, tol: float = 1e-3) -> torch.Tensor:
    """All pairs ``i < j`` with ``‖e_i − e_j‖₁ ≤ tol``, as a (P, 2) long tensor sorted by rows.

    Examples
    --------
    >>> e = torch.tensor([[0.], [1.], [0.0004], [5.], [1.0002]])
    >>> close_pairs(e).tolist()
    [[0, 2], [1, 4]]
    """
    emb = _check(emb)
    n = emb.shape[0]
    # window slack: |σ_i − σ_j| ≤ ‖e_i − e_j‖₁ holds exactly, up to float rounding of the sums
    slack = tol + 1e-9 * (1.0 + float(emb.abs().sum(-1).max())) if n else tol
    order = torch.argsort(emb.sum(-1))
    e, sig = emb[order], emb.sum(-1)[order]
    found = []
    alive = torch.arange(max(n - 1, 0))
    off = 1
    while len(alive):
        alive = alive[alive + off < n]
        alive = alive[(sig[alive + off] - sig[alive]) <= slack]
        if not len(alive):
            break
        d = (e[alive] - e[alive + off]).abs().sum(-1)
        hit = alive[d <= tol]
        if len(hit):
            found.append(torch.stack([order[hit], order[hit + off]], 1))
        off += 1
    if not found:
        return torch.zeros(0, 2, dtype=torch.long)
    p = torch.cat(found)
    p = torch.stack([p.min(1).values, p.max(1).values], 1)
    return p[torch.argsort(p[:, 0] * n + p[:, 1])]


def close_pairs_bruteforce(emb: torch.Tensor, tol: float = 1e-3, chunk: int = 512) -> torch.Tensor:
    """Reference for :func:`close_pairs`: chunked all-pairs L1 (``chunk × n × D`` memory).

    Examples
    --------
    >>> close_pairs_bruteforce(torch.tensor([[0.], [1.], [0.0004], [5.], [1.0002]])).tolist()
    [[0, 2], [1, 4]]
    """
    emb = _check(emb)
    n, found = emb.shape[0], []
    for s in range(0, n, chunk):
        d = (emb[s:s + chunk, None, :] - emb[None, :, :]).abs().sum(-1)
        i, j = torch.nonzero(d <= tol, as_tuple=True)
        i = i + s
        keep = i < j
        found.append(torch.stack([i[keep], j[keep]], 1))
    p = torch.cat(found) if found else torch.zeros(0, 2, dtype=torch.long)
    return p[torch.argsort(p[:, 0] * n + p[:, 1])]


def filter_pairs(emb: torch.Tensor, pairs: torch.Tensor, tol: float = 1e-3) -> torch.Tensor:
    """The rows of ``pairs`` that are still not separated (``‖e_i − e_j‖₁ ≤ tol``) under ``emb``."""
    if len(pairs) == 0:
        return pairs
    return pairs[pair_l1(_check(emb), pairs) <= tol]
