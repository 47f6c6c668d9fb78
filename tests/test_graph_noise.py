"""Refined (individualization-refinement) node noise of the learned graph sampler."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from symclone.graphs import Graph, LearnedGraphSampler, split_graph, to_dense
from symclone.graphs._refine_noise import random_ir_colors, refined_noise
from symclone.groups import get_group
from symclone.symmetrize import repeat_batch

from _graph_helpers import interleaving_perms as _interleaving_perms  # noqa: E402
from _graph_helpers import random_batch as _batch  # noqa: E402
from _graph_helpers import random_graph as _random_graph  # noqa: E402


def _petersen():
    outer = [(i, (i + 1) % 5) for i in range(5)]
    inner = [(5 + i, 5 + (i + 2) % 5) for i in range(5)]
    a = np.zeros((10, 10), np.uint8)
    for i, j in outer + inner + [(i, i + 5) for i in range(5)]:
        a[i, j] = a[j, i] = 1
    return Graph(a, np.zeros((10, 0), np.float32))


def _is_equitable(a: np.ndarray, colors: np.ndarray) -> bool:
    """Every two nodes of one colour have the same number of neighbours of every colour (reference)."""
    onehot = np.eye(colors.max() + 1, dtype=np.int64)[colors]
    counts = a.astype(np.int64) @ onehot
    return all((counts[colors == c] == counts[colors == c][0]).all() for c in np.unique(colors))


def test_refined_noise_exactly_equivariant_and_a_labelling():
    x = _batch()
    G = get_group("sn", n=8)
    g = _interleaving_perms(x, 5)
    u = torch.rand(x.shape[:2], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    eps = refined_noise(*split_graph(x), u=u)
    eps_p = refined_noise(*split_graph(G.act(g, x, "graph")), u=G.act(g, u, "set"))
    assert torch.equal(G.act(g, eps, "set"), eps_p)
    m = x[:, :, 8] > 0
    for b in range(len(x)):
        n = int(m[b].sum())
        assert torch.equal(torch.sort(eps[b][m[b]] * n).values.round(), torch.arange(n, dtype=eps.dtype))
        assert eps[b][~m[b]].abs().sum() == 0
    # control: the same u not moved along with the graph gives a different (non-equivariant) noise
    eps_bad = refined_noise(*split_graph(G.act(g, x, "graph")), u=u)
    assert not torch.equal(G.act(g, eps, "set"), eps_bad)
    with pytest.raises(ValueError, match="u: expected shape"):
        refined_noise(*split_graph(x), u=u[:, :3])
    with pytest.raises(ValueError, match="repeats"):
        refined_noise(*split_graph(x), repeats=0)


def test_refined_noise_repeats_match_repeated_batch():
    """The shared-start path (repeats=k) equals refining k stacked copies independently."""
    x = _batch(n_max=9, seed=3, sizes=(9, 4, 8))
    u = torch.rand(4 * 3, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    once = refined_noise(*split_graph(x), u=u, repeats=4)
    stacked = refined_noise(*split_graph(repeat_batch(x, 4)), u=u)
    assert once.shape == (12, 9) and torch.equal(once, stacked)


def test_first_refinement_is_the_coarsest_equitable_partition():
    """Before any individualization the batched hash refinement reaches an equitable partition
    (checked with explicit neighbour counts) and does not split more than 1-WL does: on the
    vertex-transitive Petersen graph every node keeps one colour."""
    from symclone.graphs._refine_noise import _neighbour_table, _refine
    rng = np.random.default_rng(1)
    graphs = [_random_graph(10, 0.3, rng, d=0) for _ in range(5)] + [_petersen()]
    x = to_dense(graphs, 10, torch.float64)
    a, m, _ = split_graph(x)
    mask = m > 0.5
    colors = _refine(_neighbour_table(a, mask), torch.zeros(6, 10, dtype=torch.int64))
    for b, gr in enumerate(graphs):
        assert _is_equitable(gr.adj, colors[b].numpy())
    assert colors[5].unique().numel() == 1


def test_random_ir_colors_individualizes_smallest_u_and_checks_shapes():
    c4 = torch.tensor([[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]])
    for v in range(4):
        u = torch.full((4,), 0.5, dtype=torch.float64)
        u[v] = 0.1
        c = random_ir_colors(c4, torch.zeros(4, dtype=torch.int64), u)
        assert int(c[v]) == 0 and sorted(c.tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="u: expected shape"):
        random_ir_colors(c4[None], torch.zeros(1, 4, dtype=torch.int64), torch.rand(3, 4, dtype=torch.float64))


def test_refined_noise_concentrates_learned_orderings_on_symmetric_graph():
    """Petersen graph (|Aut| = 120, vertex transitive): every IR branch is an automorphic image, so
    the untrained learned sampler with refined noise always yields the same reordered graph; with
    i.i.d. noise (LPS default) almost every draw gives a different one."""
    x = to_dense([_petersen()], 12)
    counts = {}
    for kind in ("refined", "iid"):
        torch.manual_seed(0)
        smp = LearnedGraphSampler(12, 0, noise_kind=kind)
        with torch.no_grad():
            g = smp.sample(x, 30, torch.Generator().manual_seed(1)).g
        y = get_group("sn", n=12).act(get_group("sn", n=12).inverse(g), x.repeat(30, 1, 1), "graph")
        counts[kind] = len({yy.numpy().tobytes() for yy in y})
    assert counts["refined"] == 1 and counts["iid"] >= 20, counts
    with pytest.raises(ValueError, match="noise_kind"):
        LearnedGraphSampler(12, 0, noise_kind="gauss")


@pytest.mark.parametrize("w", [1, 2, 6, 12, 13])
def test_sort_network_matches_torch_sort(w):
    from symclone.graphs._refine_noise import _sort_last
    x = torch.randint(0, 9, (50, 7, w), generator=torch.Generator().manual_seed(w)).to(torch.int16)
    assert torch.equal(_sort_last(x), x.sort(-1).values)


def _reference_partition(a: np.ndarray) -> set:
    """Coarsest equitable partition by plain 1-WL with explicit neighbour-count signatures."""
    colors = np.zeros(len(a), dtype=np.int64)
    while True:
        sig = [(colors[i], tuple(sorted(colors[a[i] > 0]))) for i in range(len(a))]
        new = np.array([sorted(set(sig)).index(s) for s in sig])
        if len(set(new)) == len(set(colors)):
            return {frozenset(np.flatnonzero(colors == c)) for c in set(colors)}
        colors = new


@pytest.mark.parametrize("n, p", [(12, 0.25), (20, 0.85)])   # one packed word / several words per key
def test_batched_refinement_gives_the_coarsest_equitable_partition(n, p):
    from symclone.graphs._refine_noise import _neighbour_table, _refine
    rng = np.random.default_rng(n)
    graphs = [_random_graph(n, p, rng, d=0) for _ in range(4)]
    x = to_dense(graphs, n, torch.float64)
    a, m, _ = split_graph(x)
    nbrs = _neighbour_table(a, m > 0.5)
    if p > 0.5:
        assert nbrs.width + 1 > 63 // (n + 1).bit_length()      # the multi-word path is exercised
    colors = _refine(nbrs, torch.zeros(4, n, dtype=torch.int64))
    for b, gr in enumerate(graphs):
        got = {frozenset(np.flatnonzero(colors[b].numpy() == c)) for c in colors[b].unique().tolist()}
        assert got == _reference_partition(gr.adj)
