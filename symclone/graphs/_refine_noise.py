"""Structured node noise for the learned S_n sampler: randomized individualization-refinement.

LPS feeds i.i.d. noise ``ε ~ U[0, 1]`` per node to the score network. On graphs with large
automorphism groups (EXP: after 1-WL refinement only ~44 % as many colour classes as nodes) an
untrained score network then orders every tied cell independently at random, so the backbone
sees a different adjacency matrix for every draw and cannot fit.

:func:`refined_noise` keeps the randomness but only spends it where a permutation-equivariant
function must: it draws ``u ~ U[0, 1]`` i.i.d. per node (float64, so ties have probability ~0) and
runs one random branch of an individualization-refinement search — refine the invariant colours
(features, degree, triangle count) by 1-WL; while some cell holds more than one node, individualize
the node with the smallest ``u`` in the first such cell and refine again. The resulting discrete
colouring, scaled to ``[0, 1)``, is the noise ``ε``. Properties:

* equivariant in distribution: relabelling the graph relabels ``ε`` (the choices depend on
  colours and on ``u``, never on node indices) — ``ε(P·G, P·u) = P·ε(G, u)``, exactly;
* the branch is uniform within each tied cell; when the tied cells are automorphism orbits
  (typical here) different draws give leaves related by an automorphism, i.e. the same
  reordered graph — a single draw of noise yields one of only a few distinct orderings
  (EXP: 2–5 distinct reordered graphs in 10 draws instead of 10).

Implementation: the whole batch is refined at once in torch (no per-graph Python loop). One 1-WL
round gives node ``i`` the key ``(c_i, Σ_j A_ij r[c_j])`` with ``r`` a fixed table of random
integers below ``2^40`` (the sum is computed exactly in float64), and re-ranks the keys densely per
graph: cells only split, a new cell is ordered first by its old colour, then by the hash of its
neighbour-colour multiset — an invariant order (it depends on colours, never on indices) that is the
same for every graph, so equal local structure gets equal positions. Distinct multisets collide with
probability ~``n²·2^-40``; a collision only coarsens one round (the search still ends discrete and
stays exactly equivariant). Graphs whose colouring is already discrete leave the batch.
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["refined_noise", "random_ir_colors"]

_HASH_BITS = 40
_HASH_SEED = 0x5EED_C0DE


def _hash_table(size: int, device: torch.device) -> torch.Tensor:
    """Fixed random integers ``r[c] < 2^40`` (float64, exact), the same in every call."""
    gen = torch.Generator().manual_seed(_HASH_SEED)
    return torch.randint(0, 2 ** _HASH_BITS, (size,), generator=gen, dtype=torch.int64).to(device, torch.float64)


def _dense_rank(key: torch.Tensor) -> torch.Tensor:
    """Per row: ``rank[i]`` = number of distinct values of the row smaller than ``key[i]``."""
    sorted_key, order = torch.sort(key, dim=-1, stable=True)
    step = torch.zeros_like(sorted_key)
    step[:, 1:] = (sorted_key[:, 1:] != sorted_key[:, :-1]).to(key.dtype)
    return torch.empty_like(key).scatter_(1, order, step.cumsum(1))


def _initial_colors(rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Dense ranks (B, N) of the node rows (B, N, k) in lexicographic order; padding ranks last."""
    B, N, k = rows.shape
    order = torch.arange(N, device=rows.device).expand(B, N)
    keys = torch.where(mask[..., None], rows, torch.full_like(rows, float("inf")))
    for c in reversed(range(k)):   # LSD radix: stable sorts from the last column to the first
        col = torch.gather(keys[..., c], 1, order)
        order = torch.gather(order, 1, torch.sort(col, dim=-1, stable=True).indices)
    sk = torch.gather(keys, 1, order[..., None].expand(B, N, k))
    step = torch.zeros(B, N, dtype=torch.int64, device=rows.device)
    step[:, 1:] = (sk[:, 1:] != sk[:, :-1]).any(-1).to(torch.int64)
    return torch.empty_like(step).scatter_(1, order, step.cumsum(1))


def _edge_list(adj: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(graph, i, j)`` int64 index vectors of the nonzero entries of ``adj`` between real nodes."""
    g, i, j = torch.nonzero(adj != 0, as_tuple=True)
    keep = mask[g, i] & mask[g, j]
    return g[keep], i[keep], j[keep]


def _refine(edges: tuple, colors: torch.Tensor, pad: torch.Tensor, table: torch.Tensor,
            graphs: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Batched 1-WL refinement, in place on the rows ``graphs`` (default all) of ``colors``, to the
    coarsest equitable partition finer than the current colours (module doc).

    ``edges`` from :func:`_edge_list` (directed, both orientations), ``colors`` (B, N) int64 dense
    ranks per graph with padding ranked after every real node, ``pad`` (B, N) bool. Each round works
    on the graphs still splitting cells and their edges only."""
    B, N = colors.shape
    shift = 2 ** (_HASH_BITS + max(1, int(N).bit_length()))
    act = torch.arange(B, device=colors.device) if graphs is None else graphs
    eg, ei, ej = edges
    if graphs is not None:
        sel = torch.zeros(B, dtype=torch.bool, device=colors.device)
        sel[act] = True
        keep = sel[eg]
        eg, ei, ej = eg[keep], ei[keep], ej[keep]
    ncol = colors[act].amax(1) + 1
    local = torch.empty(B, dtype=torch.int64, device=colors.device)
    big = torch.iinfo(torch.int64).max
    while len(act):
        local[act] = torch.arange(len(act), device=colors.device)
        c = colors[act]
        h = torch.zeros(len(act) * N, dtype=torch.float64, device=colors.device)
        h.index_add_(0, local[eg] * N + ei, table[colors[eg, ej]])
        key = torch.where(pad[act], torch.full_like(c, big), c * shift + h.view(-1, N).to(torch.int64))
        new = _dense_rank(key)
        n_new = new.amax(1) + 1
        colors[act] = new
        changed = n_new != ncol
        act, ncol = act[changed], n_new[changed]
        if len(act) and not bool(changed.all()):
            still = torch.zeros(B, dtype=torch.bool, device=colors.device)
            still[act] = True
            keep = still[eg]
            eg, ei, ej = eg[keep], ei[keep], ej[keep]
    return colors


def random_ir_colors(adj: torch.Tensor, init: torch.Tensor, u: torch.Tensor,
                     mask: Optional[torch.Tensor] = None, repeats: int = 1) -> torch.Tensor:
    """One random branch of individualization-refinement per graph: a discrete colouring of the real
    nodes (a permutation of ``0..n-1``; padding gets ``n``); in every graph the node individualized
    in the first non-singleton cell is the one with the smallest ``u`` there.

    ``adj`` (B, N, N) or (N, N) adjacency, ``init`` (B, N) invariant initial colours (any ints),
    ``mask`` (B, N) real nodes (default: all), ``u`` (repeats·B, N) float64 draws: with
    ``repeats > 1`` every graph gets ``repeats`` independent branches, sample-major like
    :func:`~symclone.symmetrize.repeat_batch` (row ``r·B + b`` is branch ``r`` of graph ``b``); the
    u-independent first refinement is done once per graph.

    >>> c4 = torch.tensor([[0,1,0,1],[1,0,1,0],[0,1,0,1],[1,0,1,0]])
    >>> c = random_ir_colors(c4, torch.zeros(4, dtype=torch.int64), torch.tensor([.5, .1, .9, .3]))
    >>> int(c[1]), sorted(c.tolist())         # node 1 (smallest u) was individualized first
    (0, [0, 1, 2, 3])
    """
    single = adj.ndim == 2
    if single:
        adj, init, u = adj[None], init[None], u[None]
    B, N = init.shape
    if N >= 2 ** 11:
        raise ValueError(f"adj: at most 2047 nodes per graph are supported by the exact hash, got N={N}")
    if tuple(u.shape) != (repeats * B, N):
        raise ValueError(f"u: expected shape {(repeats * B, N)} (repeats x graphs, nodes), got {tuple(u.shape)}")
    mask = torch.ones(B, N, dtype=torch.bool, device=init.device) if mask is None else mask.bool()
    if single and mask.ndim == 1:
        mask = mask[None]
    edges = _edge_list(adj, mask)
    table = _hash_table(2 * N + 2, init.device)
    colors = _refine(edges, _initial_colors(init[..., None].to(torch.float64), mask), ~mask, table)
    if repeats > 1:  # branches of one graph share the u-independent start
        off = torch.arange(repeats, device=init.device).repeat_interleave(len(edges[0])) * B
        edges = (edges[0].repeat(repeats) + off, edges[1].repeat(repeats), edges[2].repeat(repeats))
        colors, mask = colors.repeat(repeats, 1), mask.repeat(repeats, 1)
    pad = ~mask
    u = torch.where(mask, u.to(torch.float64), torch.full((), float("inf"), dtype=torch.float64))
    active = torch.arange(len(colors), device=init.device)
    while True:
        c, m = colors[active], mask[active]
        sizes = torch.zeros(len(active), N + 1, dtype=torch.int64, device=c.device)
        sizes.scatter_add_(1, torch.where(m, c, torch.full_like(c, N)), m.to(torch.int64))
        nonsingle = sizes[:, :N] > 1
        keep = nonsingle.any(1)
        active, c, nonsingle = active[keep], c[keep], nonsingle[keep]
        if not len(active):
            break
        target = nonsingle.to(torch.int8).argmax(1)                       # first tied cell
        ua = u[active]
        v = torch.where(c == target[:, None], ua, torch.full_like(ua, float("inf"))).argmin(1)
        c = 2 * c + 1
        c[torch.arange(len(active), device=c.device), v] -= 1
        colors[active] = _dense_rank(torch.where(pad[active], torch.full_like(c, 2 * N + 1), c))
        _refine(edges, colors, pad, table, graphs=active)
    return colors[0] if single else colors


def refined_noise(a: torch.Tensor, m: torch.Tensor, f: torch.Tensor,
                  generator: Optional[torch.Generator] = None, u: Optional[torch.Tensor] = None,
                  repeats: int = 1) -> torch.Tensor:
    """``ε`` (repeats·B, N) in ``[0, 1)`` for dense graphs: IR leaf colour / n on real nodes, 0 on padding.

    ``a`` (B, N, N) adjacency, ``m`` (B, N) mask, ``f`` (B, N, d) node features; ``u``
    (repeats·B, N) the uniform draws (default: float64 ``torch.rand`` from ``generator``). Initial
    colours: the rows ``(features, degree, triangle count)`` ranked lexicographically. ``repeats``:
    independent draws per graph, laid out like ``refined_noise(repeat_batch(x, repeats))`` but with
    the u-independent work done once per graph.

    >>> a = torch.zeros(1, 4, 4); a[0, 0, 1] = a[0, 1, 0] = 1
    >>> e = refined_noise(a, torch.tensor([[1., 1., 1., 0.]]), torch.zeros(1, 4, 0))
    >>> sorted(round(v, 4) for v in e[0, :3].tolist()), float(e[0, 3])
    ([0.0, 0.3333, 0.6667], 0.0)
    """
    B, N = m.shape
    repeats = int(repeats)
    if repeats < 1:
        raise ValueError(f"repeats: expected >= 1, got {repeats}")
    if u is None:
        u = torch.rand((repeats * B, N), generator=generator, dtype=torch.float64)
    elif tuple(u.shape) != (repeats * B, N):
        raise ValueError(f"u: expected shape {(repeats * B, N)}, got {tuple(u.shape)}")
    mask = (m.detach() > 0.5).cpu()
    ab = (a.detach().cpu() != 0) & mask[:, :, None] & mask[:, None, :]
    abf = ab.to(torch.float32)
    deg = abf.sum(2)
    tri = (torch.bmm(abf, abf) * abf).sum(2)          # exact: integer counts far below 2^24
    rows = torch.cat([f.detach().cpu().double(), deg[..., None].double(), tri[..., None].double()], -1)
    init = _initial_colors(rows, mask)
    colors = random_ir_colors(ab, init, u.detach().cpu().double(), mask, repeats=repeats)
    mask = mask.repeat(repeats, 1)
    n = mask.sum(1, keepdim=True).clamp(min=1).to(torch.float64)
    out = torch.where(mask, colors.to(torch.float64) / n, torch.zeros((), dtype=torch.float64))
    return out.to(device=m.device, dtype=m.dtype if m.is_floating_point() else torch.float32)
