"""Structured node noise for the learned S_n sampler: randomized individualization-refinement.

LPS feeds i.i.d. noise ``ε ~ U[0, 1]`` per node to the score network. On graphs with large
automorphism groups (EXP: after 1-WL refinement only ~44 % as many colour classes as nodes) an
untrained score network then orders every tied cell independently at random, so the backbone
sees a different adjacency matrix for every draw and cannot fit.

:func:`refined_noise` keeps the randomness but only spends it where a permutation-equivariant
function must: it draws ``u ~ U[0, 1]`` i.i.d. per node and runs one random branch of an
individualization-refinement search — refine the invariant colours (features, degree, triangle
count) by 1-WL; while some cell holds more than one node, individualize the node with the
smallest ``u`` in the first such cell and refine again. The resulting discrete colouring, scaled
to ``[0, 1)``, is the noise ``ε``. Properties:

* equivariant in distribution: relabelling the graph relabels ``ε`` (the choices depend on
  colours and on ``u``, never on node indices) — ``ε(P·G, P·u) = P·ε(G, u)``, exactly;
* the branch is uniform within each tied cell; when the tied cells are automorphism orbits
  (typical here) different draws give leaves related by an automorphism, i.e. the same
  reordered graph — a single draw of noise yields one of only a few distinct orderings
  (EXP: 2–5 distinct reordered graphs in 10 draws instead of 10).

Colour refinement ranks nodes lexicographically by (colour, neighbour counts per colour), as
:func:`~symclone.graphs.refine_colors` does (an invariant order).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

__all__ = ["refined_noise", "random_ir_colors"]

def _dense_ranks(keys: np.ndarray) -> np.ndarray:
    return np.unique(keys, return_inverse=True)[1].reshape(-1)


def _refine(adj: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """1-WL refinement to the coarsest equitable partition finer than ``colors`` (dense ranks;
    cells only split; new cells are ranked lexicographically by ``(colour, neighbour counts per
    colour)``, the order of :func:`~symclone.graphs.refine_colors`, so similar nodes of similar
    graphs get nearby positions)."""
    n = len(colors)
    ncol = int(colors.max()) + 1
    while ncol < n:
        counts = adj @ np.eye(ncol, dtype=np.int64)[colors]           # (n, ncol)
        order = np.lexsort(tuple(counts[:, ::-1].T) + (colors,))     # primary: colour, then counts
        kc, kn = colors[order], counts[order]
        step = np.zeros(n, dtype=np.int64)
        step[1:] = (kc[1:] != kc[:-1]) | (kn[1:] != kn[:-1]).any(1)
        out = np.empty(n, dtype=np.int64)
        out[order] = np.cumsum(step)
        m = int(out.max()) + 1
        if m == ncol:
            return out
        colors, ncol = out, m
    return colors


def random_ir_colors(adj: np.ndarray, init: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One random branch of individualization-refinement: a discrete colouring (a permutation of
    ``0..n-1``); the node individualized in the first non-singleton cell is ``argmin u`` there.

    >>> c4 = np.array([[0,1,0,1],[1,0,1,0],[0,1,0,1],[1,0,1,0]], dtype=np.int64)
    >>> c = random_ir_colors(c4, np.zeros(4, dtype=np.int64), np.array([.5, .1, .9, .3]))
    >>> int(c[1]), sorted(c.tolist())         # node 1 (smallest u) was individualized first
    (0, [0, 1, 2, 3])
    """
    n = len(init)
    colors = _refine(adj, _dense_ranks(init))
    while int(colors.max()) < n - 1:
        sizes = np.bincount(colors)
        target = int(np.flatnonzero(sizes > 1)[0])
        cell = np.flatnonzero(colors == target)
        v = cell[np.argmin(u[cell])]
        c = 2 * colors + 1
        c[v] -= 1
        colors = _refine(adj, _dense_ranks(c))
    return colors


def refined_noise(a: torch.Tensor, m: torch.Tensor, f: torch.Tensor,
                  generator: Optional[torch.Generator] = None, u: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``ε`` (B, N) in ``[0, 1)`` for dense graphs: IR leaf colour / n on real nodes, 0 on padding.

    ``a`` (B, N, N) adjacency, ``m`` (B, N) mask, ``f`` (B, N, d) node features; ``u`` (B, N) the
    uniform draws (default: ``torch.rand`` from ``generator``).

    >>> a = torch.zeros(1, 4, 4); a[0, 0, 1] = a[0, 1, 0] = 1
    >>> e = refined_noise(a, torch.tensor([[1., 1., 1., 0.]]), torch.zeros(1, 4, 0))
    >>> sorted(round(v, 4) for v in e[0, :3].tolist()), float(e[0, 3])
    ([0.0, 0.3333, 0.6667], 0.0)
    """
    B, N = m.shape
    if u is None:
        u = torch.rand((B, N), generator=generator)
    elif tuple(u.shape) != (B, N):
        raise ValueError(f"u: expected shape {(B, N)}, got {tuple(u.shape)}")
    u = u.detach().cpu().double().numpy()
    a_np = (a.detach().cpu().numpy() != 0).astype(np.int64)
    m_np = m.detach().cpu().numpy() > 0.5
    f_np = f.detach().cpu().double().numpy()
    out = np.zeros((B, N), dtype=np.float64)
    for b in range(B):
        real = np.flatnonzero(m_np[b])
        n = len(real)
        if n == 0:
            continue
        ab = a_np[b][np.ix_(real, real)]
        deg = ab.sum(1)
        tri = np.einsum("ij,jk,ki->i", ab, ab, ab)
        rows = np.concatenate([f_np[b][real], deg[:, None], tri[:, None]], axis=1)
        init = np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1)
        out[b, real] = random_ir_colors(ab, init, u[b, real]) / n
    return torch.from_numpy(out).to(device=m.device, dtype=m.dtype if m.is_floating_point() else torch.float32)
