"""Canonical node orderings: colour refinement (1-WL) + individualization-refinement search.

``canonical_order(adj, feats)`` returns an ordering ``order`` (``order[i]`` = node placed at
position ``i``) such that relabelling the input graph by any permutation gives the *same*
reordered graph ``adj[order][:, order]`` — a true canonical form, hence an exactly invariant
S_n canonicalization. Algorithm (a small nauty-like search, written from the textbook idea):

1. initial colours = ranks of the invariant node rows ``(features, degree, triangles)``;
2. refine: colour ← rank of ``(colour, #neighbours of each colour)`` until stable (1-WL);
3. if some cell has > 1 node, take the first such cell (smallest colour — an invariant choice),
   individualize each of its nodes in turn (give it a colour just below its cell) and recurse;
4. every discrete leaf gives an ordering; keep the leaf whose certificate
   ``(adj[order][:, order], feats[order])`` is lexicographically smallest (bytes order).

Tie rule: ties after refinement are resolved by this search, never by the input index, so the
result is invariant. Branches are pruned with automorphisms found on the way (two leaves with
equal certificates); ``max_leaves`` bounds the work — when it is exceeded a
:class:`CanonicalBudgetError` is raised rather than returning a non-canonical order.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["refine_colors", "initial_colors", "canonical_order", "CanonicalBudgetError"]


class CanonicalBudgetError(RuntimeError):
    """The individualization-refinement search needed more than ``max_leaves`` leaves."""


def _ranks(rows: np.ndarray) -> np.ndarray:
    """Dense ranks 0..c-1 of the rows of ``rows`` in lexicographic order (an invariant relabel)."""
    return np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1)


def initial_colors(adj: np.ndarray, feats: Optional[np.ndarray] = None) -> np.ndarray:
    """Invariant starting colours from (node features, degree, triangle count).

    Examples
    --------
    >>> initial_colors(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]]))
    array([0, 1, 0])
    """
    a = adj.astype(np.int64)
    cols = [a.sum(1, keepdims=True), np.einsum("ij,jk,ki->i", a, a, a)[:, None]]
    if feats is not None and feats.size:
        cols.insert(0, np.asarray(feats, np.float64).reshape(len(a), -1))
    return _ranks(np.concatenate([np.asarray(c, np.float64) for c in cols], axis=1))


def refine_colors(adj: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """1-WL colour refinement to the coarsest equitable partition finer than ``colors``.

    Colours are dense ranks and the order of existing cells is preserved (refinement only splits).

    Examples
    --------
    >>> path = np.array([[0,1,0,0],[1,0,1,0],[0,1,0,1],[0,0,1,0]])
    >>> refine_colors(path, np.zeros(4, dtype=int))
    array([0, 1, 1, 0])
    """
    colors = _ranks(np.asarray(colors)[:, None])
    a = adj.astype(np.int64)
    while True:
        c = int(colors.max()) + 1
        if c == len(colors):
            return colors
        counts = a @ np.eye(c, dtype=np.int64)[colors]
        new = _ranks(np.concatenate([colors[:, None], counts], axis=1))
        if new.max() == colors.max():
            return new
        colors = new


def _individualize(colors: np.ndarray, v: int) -> np.ndarray:
    c = 2 * colors + 1
    c[v] -= 1
    return _ranks(c[:, None])


def canonical_order(adj: np.ndarray, feats: Optional[np.ndarray] = None,
                    max_leaves: int = 20000) -> np.ndarray:
    """Canonical ordering of the nodes of a graph (see the module docstring).

    Examples
    --------
    >>> p4 = np.array([[0,1,0,0],[1,0,1,0],[0,1,0,1],[0,0,1,0]])
    >>> q = np.array([2, 0, 3, 1]); p4b = p4[q][:, q]          # a relabelled copy
    >>> o, ob = canonical_order(p4), canonical_order(p4b)
    >>> bool((p4[o][:, o] == p4b[ob][:, ob]).all())
    True
    """
    adj = np.asarray(adj)
    n = adj.shape[0]
    if adj.ndim != 2 or adj.shape[1] != n:
        raise ValueError(f"adj: expected a square (n, n) adjacency, got shape {adj.shape}")
    feats = np.zeros((n, 0)) if feats is None else np.asarray(feats, np.float64).reshape(n, -1)
    adj_u8 = (adj != 0).astype(np.uint8)
    best: dict = {"cert": None, "order": None, "leaves": 0}
    autos: list[np.ndarray] = []

    def leaf(colors: np.ndarray) -> None:
        best["leaves"] += 1
        if best["leaves"] > max_leaves:
            raise CanonicalBudgetError(f"canonical_order: more than max_leaves={max_leaves} leaves "
                                       f"(graph with {n} nodes); raise max_leaves")
        order = np.argsort(colors, kind="stable")
        cert = adj_u8[order][:, order].tobytes() + feats[order].tobytes()
        if best["cert"] is None or cert < best["cert"]:
            best["cert"], best["order"] = cert, order
        elif cert == best["cert"]:
            gam = np.empty(n, dtype=np.int64)
            gam[order] = best["order"]  # automorphism mapping this leaf's labelling onto the best one
            autos.append(gam)

    def search(colors: np.ndarray, prefix: list[int]) -> None:
        colors = refine_colors(adj_u8, colors)
        if colors.max() == n - 1:
            leaf(colors)
            return
        sizes = np.bincount(colors)
        target = int(np.flatnonzero(sizes > 1)[0])
        cell = np.flatnonzero(colors == target)
        done: list[int] = []
        for v in cell:
            v = int(v)
            if any(v in _orbit_class(cell, autos, prefix, u) for u in done):
                continue
            done.append(v)
            search(_individualize(colors, v), prefix + [v])

    search(initial_colors(adj_u8, feats), [])
    return best["order"]


def _orbit_class(cell: np.ndarray, autos: list[np.ndarray], prefix: list[int], u: int) -> set[int]:
    """The orbit of ``u`` inside ``cell`` under the found automorphisms that fix ``prefix``."""
    gens = [g for g in autos if all(g[p] == p for p in prefix)]
    orbit, frontier = {u}, [u]
    while frontier:
        x = frontier.pop()
        for g in gens:
            for y in (int(g[x]), int(np.flatnonzero(g == x)[0])):
                if y not in orbit:
                    orbit.add(y)
                    frontier.append(y)
    return orbit & {int(c) for c in cell}
