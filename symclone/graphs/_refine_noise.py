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
round ranks the nodes of every graph lexicographically by ``(c_i, neighbour counts per colour)``
— computed as the row ``(c_i, sorted neighbour colours)`` packed into int64 words, which has the
same order — and re-ranks densely: cells only split, new cells are ordered by old colour first,
then by neighbour counts, an invariant order (colours only, never indices) shared by all graphs,
so that similar nodes of similar graphs get nearby positions. The first refinement does not
depend on ``u`` and is done once per graph (``repeats``); graphs whose colouring is discrete, or
stable, leave the batch.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

__all__ = ["refined_noise", "random_ir_colors"]


def _dense_rank(key: torch.Tensor) -> torch.Tensor:
    """Per row: ``rank[i]`` = number of distinct values of the row smaller than ``key[i]``."""
    sorted_key, order = torch.sort(key, dim=-1, stable=True)
    step = torch.zeros_like(sorted_key)
    step[:, 1:] = (sorted_key[:, 1:] != sorted_key[:, :-1]).to(key.dtype)
    return torch.empty_like(key).scatter_(1, order, step.cumsum(1))


def _lex_rank(keys: torch.Tensor) -> torch.Tensor:
    """Dense ranks (B, N) of the rows ``keys`` (B, N, k) in lexicographic order (LSD radix: stable
    sorts from the last column to the first)."""
    B, N, k = keys.shape
    order = torch.arange(N, device=keys.device).expand(B, N)
    for c in reversed(range(k)):
        col = torch.gather(keys[..., c], 1, order)
        order = torch.gather(order, 1, torch.sort(col, dim=-1, stable=True).indices)
    sk = torch.gather(keys, 1, order[..., None].expand(B, N, k))
    step = torch.zeros(B, N, dtype=torch.int64, device=keys.device)
    step[:, 1:] = (sk[:, 1:] != sk[:, :-1]).any(-1).to(torch.int64)
    return torch.empty_like(step).scatter_(1, order, step.cumsum(1))


def _initial_colors(rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Dense ranks (B, N) of the node rows (B, N, k) in lexicographic order; padding ranks last."""
    return _lex_rank(torch.where(mask[..., None], rows, torch.full_like(rows, float("inf"))))


class _Neighbours(NamedTuple):
    """Dense neighbour lists: ``table`` (B, N, width) holds the real neighbours of each real node,
    padded with ``N`` (an index that points at a sentinel colour); ``width`` = the largest degree."""

    table: torch.Tensor
    width: int


def _neighbour_table(adj: torch.Tensor, mask: torch.Tensor) -> _Neighbours:
    """The :class:`_Neighbours` of the nonzero entries of ``adj`` (B, N, N) between real nodes."""
    B, N = adj.shape[:2]
    g, i, j = torch.nonzero(adj != 0, as_tuple=True)   # row-major: sorted by (graph, i, j)
    keep = mask[g, i] & mask[g, j]
    g, i, j = g[keep], i[keep], j[keep]
    node = g * N + i
    counts = torch.bincount(node, minlength=B * N)
    slot = torch.arange(len(node), device=adj.device) - (counts.cumsum(0) - counts)[node]
    width = int(counts.max()) if len(node) else 0
    table = torch.full((B, N, width), N, dtype=torch.int64, device=adj.device)
    table[g, i, slot] = j
    return _Neighbours(table, width)


def _sorted_columns(x: torch.Tensor) -> list[torch.Tensor]:
    """The columns of ``x`` sorted along its last axis, as a list; narrow axes (≤ 12) with a min/max
    bubble network (several times faster than ``torch.sort`` on millions of short rows)."""
    w = x.shape[-1]
    if w > 12:
        return list(x.sort(-1).values.unbind(-1))
    cols = list(x.unbind(-1))
    for i in range(w - 1):
        for j in range(w - 1 - i):
            cols[j], cols[j + 1] = torch.minimum(cols[j], cols[j + 1]), torch.maximum(cols[j], cols[j + 1])
    return cols


def _sort_last(x: torch.Tensor) -> torch.Tensor:
    """Sort along the last axis (see :func:`_sorted_columns`)."""
    return torch.stack(_sorted_columns(x), -1) if x.shape[-1] else x


def _neighbour_keys(nbrs: _Neighbours, colors: torch.Tensor, act: torch.Tensor,
                    parent: Optional[torch.Tensor]) -> torch.Tensor:
    """Rows ``(c_i, S − n_1, S − n_2, …)`` (A, N, w) packed into int64 words, ``n_1 ≤ n_2 ≤ …`` the
    neighbour colours of ``i`` padded with the sentinel ``S`` > every colour, for the colour rows
    ``act`` (whose graph is row ``parent[act]`` of the table; ``parent=None``: the same row).
    Lexicographic order of the rows = (colour, neighbour counts per colour) order: more neighbours
    of a smaller colour sorts later."""
    A, N = len(act), colors.shape[1]
    sentinel, width = N + 1, nbrs.width
    small = torch.int16 if sentinel < 2 ** 15 else torch.int64
    own = colors[act]
    ext = torch.cat([own.to(small), torch.full((A, 1), sentinel, dtype=small, device=colors.device)], 1)
    rows = act if parent is None else parent[act]
    nb = torch.gather(ext, 1, nbrs.table[rows].view(A, N * width)).view(A, N, width)
    bits = sentinel.bit_length()
    per_word = 63 // bits
    if width + 1 <= per_word:  # one word, by Horner: c·b^w + Σ_t (S − n_t)·b^(w−1−t), b = 2^bits
        word = own.clone()
        for col in _sorted_columns(nb):
            word = word * (2 ** bits) + (sentinel - col).to(torch.int64)
        return word[..., None]
    nb = _sort_last(nb).to(torch.int64)
    entries = torch.cat([own[..., None], sentinel - nb], -1)   # (A, N, 1 + width)
    pad = (-entries.shape[-1]) % per_word
    if pad:
        entries = torch.cat([entries, entries.new_zeros(A, N, pad)], -1)
    weights = (2 ** (bits * torch.arange(per_word - 1, -1, -1, device=colors.device))).to(torch.int64)
    return (entries.view(A, N, -1, per_word) * weights).sum(-1)


def _refine(nbrs: _Neighbours, colors: torch.Tensor, graphs: Optional[torch.Tensor] = None,
            parent: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Batched 1-WL refinement, in place on the rows ``graphs`` (default all) of ``colors``, to the
    coarsest equitable partition finer than the current colours (module doc).

    ``nbrs`` from :func:`_neighbour_table`; ``colors`` (R, N) int64 dense ranks per row with padding
    (no neighbours) ranked after every real node; row ``r`` belongs to graph ``parent[r]`` of the
    table (default ``r``). Each round works only on the rows still splitting cells."""
    act = torch.arange(len(colors), device=colors.device) if graphs is None else graphs
    ncol = colors[act].amax(1) + 1
    while len(act):
        new = _lex_rank(_neighbour_keys(nbrs, colors, act, parent))
        n_new = new.amax(1) + 1
        colors[act] = new
        changed = n_new != ncol
        act, ncol = act[changed], n_new[changed]
    return colors


def _distinct_rows(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rep, inverse)``: one row index per distinct row of ``key`` (A, k) (its first occurrence)
    and, per row, the position of its representative in ``rep`` (``key[rep][inverse] == key``)."""
    _, inverse = torch.unique(key, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(key), dtype=torch.int64, device=key.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(key), device=key.device), "amin")
    return first, inverse


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

    Examples
    --------
    >>> c4 = torch.tensor([[0,1,0,1],[1,0,1,0],[0,1,0,1],[1,0,1,0]])
    >>> c = random_ir_colors(c4, torch.zeros(4, dtype=torch.int64), torch.tensor([.5, .1, .9, .3]))
    >>> int(c[1]), sorted(c.tolist())         # node 1 (smallest u) was individualized first
    (0, [0, 1, 2, 3])
    """
    single = adj.ndim == 2
    if single:
        adj, init, u = adj[None], init[None], u[None]
    B, N = init.shape
    if tuple(u.shape) != (repeats * B, N):
        raise ValueError(f"u: expected shape {(repeats * B, N)} (repeats x graphs, nodes), got {tuple(u.shape)}")
    mask = torch.ones(B, N, dtype=torch.bool, device=init.device) if mask is None else mask.bool()
    if single and mask.ndim == 1:
        mask = mask[None]
    nbrs = _neighbour_table(adj, mask)
    colors = _refine(nbrs, _initial_colors(init[..., None].to(torch.float64), mask))
    parent = torch.arange(repeats * B, device=init.device) % B      # row r·B + b -> graph b
    if repeats > 1:  # branches of one graph share the u-independent start
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
        if repeats > 1:   # branches of one graph that made the same choices: refine one of them
            rep, inverse = _distinct_rows(torch.cat([parent[active, None], colors[active]], 1))
            _refine(nbrs, colors, graphs=active[rep], parent=parent)
            colors[active] = colors[active[rep]][inverse]
        else:
            _refine(nbrs, colors, graphs=active, parent=parent)
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

    Examples
    --------
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
