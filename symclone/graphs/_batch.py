"""Dense batching of graphs to the ``graph`` representation ``[A | m | X]`` padded to ``n_max``.

Layout of one sample, shape ``(N, N + 1 + d)`` with ``N = n_max``:

* columns ``0..N-1``: the adjacency ``A`` (padding rows/columns zero);
* column ``N``: the node mask ``m`` (1 for a real node, 0 for padding);
* columns ``N+1..``: the node features ``X`` (zero on padding).

``S_n`` acts on the whole tensor as ``P^T A P`` and ``P^T [m | X]`` (group rep ``"graph"``), so the
mask travels with its node and every sampler can read which nodes are real from the input itself.
Real nodes come first in a freshly batched tensor, but nothing downstream relies on that.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ._io import Graph

__all__ = ["to_dense", "split_graph", "check_graph_batch", "graph_width", "component_labels"]


def graph_width(n_max: int, d: int) -> int:
    """Last-axis size of the dense layout: ``n_max + 1 + d``."""
    return n_max + 1 + d


def to_dense(graphs: Sequence[Graph], n_max: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Stack graphs into a ``(B, n_max, n_max + 1 + d)`` tensor ``[A | mask | X]``.

    Examples
    --------
    >>> from symclone.graphs import Graph, parse_graph6
    >>> a = parse_graph6("Bw"); g = Graph(a, np.ones((3, 1), np.float32))
    >>> to_dense([g], n_max=4)[0]
    tensor([[0., 1., 1., 0., 1., 1.],
            [1., 0., 1., 0., 1., 1.],
            [1., 1., 0., 0., 1., 1.],
            [0., 0., 0., 0., 0., 0.]])
    """
    if len(graphs) == 0:
        raise ValueError("graphs: expected at least one graph")
    d = graphs[0].x.shape[1] if graphs[0].x.ndim == 2 else -1
    out = torch.zeros(len(graphs), n_max, graph_width(n_max, max(d, 0)), dtype=dtype)
    for b, g in enumerate(graphs):
        a = np.asarray(g.adj)
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(f"graphs[{b}].adj: expected a square (n, n) adjacency, got shape {a.shape}")
        n = a.shape[0]
        if n > n_max:
            raise ValueError(f"graphs[{b}]: {n} nodes exceed n_max={n_max}")
        if not np.array_equal(a, a.T):
            raise ValueError(f"graphs[{b}].adj: adjacency must be symmetric (undirected graph)")
        if g.x.ndim != 2 or g.x.shape != (n, d):
            raise ValueError(f"graphs[{b}].x: expected node features of shape ({n}, {d}), "
                             f"got {tuple(g.x.shape)}")
        out[b, :n, :n] = torch.as_tensor(a.astype(np.float64), dtype=dtype)
        out[b, :n, n_max] = 1
        out[b, :n, n_max + 1:] = torch.as_tensor(np.asarray(g.x, np.float64), dtype=dtype)
    return out


def check_graph_batch(x: torch.Tensor, name: str = "x") -> int:
    """Validate a dense graph batch ``(B, N, N + 1 + d)``; return ``N``."""
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a dense graph batch of shape (B, N, N + 1 + d), got {shape}")
    n = x.shape[1]
    if x.shape[2] < n + 1:
        raise ValueError(f"{name}: expected shape (B, N, N + 1 + d) = [A | mask | X] with N={n}, "
                         f"got {tuple(x.shape)} (adjacency not square or mask column missing)")
    return n


def split_graph(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split ``[A | m | X]`` into ``A`` (B, N, N), ``m`` (B, N) and ``X`` (B, N, d).

    Examples
    --------
    >>> a, m, f = split_graph(torch.zeros(2, 5, 5 + 1 + 3))
    >>> a.shape, m.shape, f.shape
    (torch.Size([2, 5, 5]), torch.Size([2, 5]), torch.Size([2, 5, 3]))
    """
    n = check_graph_batch(x)
    return x[:, :, :n], x[:, :, n], x[:, :, n + 1:]


def component_labels(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Connected components (B, N) long: for each real node the smallest index of a node of its
    component; ``N`` on padding.

    Min-label propagation ``ℓ_i ← min(ℓ_i, min_{j ∈ N(i)} ℓ_j)`` with pointer jumping
    ``ℓ_i ← ℓ_{ℓ_i}``, to the fixed point. Only the *partition* is used downstream (it is
    permutation equivariant); the label values depend on the node indices.

    Examples
    --------
    >>> a = torch.zeros(1, 5, 5); a[0, 0, 3] = a[0, 3, 0] = a[0, 1, 2] = a[0, 2, 1] = 1
    >>> component_labels(a, torch.tensor([[1., 1., 1., 1., 0.]]))
    tensor([[0, 1, 1, 0, 5]])
    """
    B, N = m.shape
    real = m.detach() > 0.5
    adj = (a.detach() != 0) & real[:, :, None] & real[:, None, :]
    big = torch.full((), N, dtype=torch.long, device=m.device)
    lab = torch.where(real, torch.arange(N, device=m.device).expand(B, N), big)
    while True:
        nb = torch.where(adj, lab[:, None, :], big).amin(-1)
        new = torch.minimum(lab, nb)
        new = torch.where(real, torch.minimum(new, torch.gather(new, 1, new.clamp(max=N - 1))), big)  # jumping
        if torch.equal(new, lab):
            return lab
        lab = new
