"""Random dense graph batches shared by the graph tests."""
from __future__ import annotations

import numpy as np
import torch

from symclone.graphs import Graph, to_dense


def random_graph(n, p, rng, d=1):
    a = np.triu((rng.random((n, n)) < p).astype(np.uint8), 1)
    return Graph(a + a.T, rng.integers(0, 2, (n, d)).astype(np.float32))


def random_batch(n_max=8, seed=0, sizes=(6, 5, 7, 6)):
    rng = np.random.default_rng(seed)
    return to_dense([random_graph(n, 0.45, rng) for n in sizes], n_max, torch.float64)


def interleaving_perms(x, seed):
    """Random permutations of the padded node axis (padding ends up between real nodes)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.argsort(torch.rand(x.shape[0], x.shape[1], generator=gen), dim=-1)
