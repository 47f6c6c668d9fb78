"""Readers for the graph benchmarks: graph6 (plain Python) and EXP (``exp.npz``, numpy, no pickle).

A graph is returned as a :class:`Graph`: a dense symmetric 0/1 adjacency ``adj`` (n, n) numpy
array (uint8, zero diagonal) and node features ``x`` (n, d) float32 (d = 0 when there are none).

Data location (first hit wins): the ``root`` argument / ``--data-root``; the environment variable
``SYMCLONE_GRAPH_DATA``; the copy bundled with the package in ``symclone/graphs/_data/``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np

__all__ = ["Graph", "parse_graph6", "to_graph6", "read_graph6", "load_exp", "load_graph8c",
           "find_graph_data", "GRAPH_DATA_ENV"]

GRAPH_DATA_ENV = "SYMCLONE_GRAPH_DATA"
_BUNDLED = Path(__file__).resolve().parent / "_data"
PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class Graph:
    """A simple undirected graph: ``adj`` (n, n) uint8 symmetric 0/1 and node features ``x`` (n, d)."""

    adj: np.ndarray
    x: np.ndarray

    @property
    def num_nodes(self) -> int:
        return int(self.adj.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.adj.sum()) // 2


def _graph6_size(line: str, where: str) -> tuple[int, int]:
    """Return (n, number of characters used by the size field)."""
    c = [ord(ch) - 63 for ch in line[:8]]
    if not c or c[0] < 0:
        raise ValueError(f"{where}: empty or invalid graph6 size field")
    if c[0] <= 62:
        return c[0], 1
    if len(c) >= 2 and c[1] == 63:  # '~~' + 6 chars, 36 bits
        if len(c) < 8:
            raise ValueError(f"{where}: truncated 36-bit graph6 size field")
        n, used = 0, 8
        for v in c[2:8]:
            n = (n << 6) | v
        return n, used
    if len(c) < 4:
        raise ValueError(f"{where}: truncated 18-bit graph6 size field")
    return (c[1] << 12) | (c[2] << 6) | c[3], 4


def parse_graph6(line: Union[str, bytes], where: str = "graph6") -> np.ndarray:
    """Decode one graph6 string into a dense adjacency matrix.

    graph6 stores ``n`` (one character ``n + 63`` for n <= 62) followed by the upper triangle
    ``x(i, j), i < j`` in column order ``(0,1), (0,2), (1,2), (0,3), ...``, packed big-endian into
    6-bit groups, each written as the character ``value + 63`` and zero-padded at the end.

    Examples
    --------
    >>> parse_graph6("Bw")          # the triangle
    array([[0, 1, 1],
           [1, 0, 1],
           [1, 1, 0]], dtype=uint8)
    >>> parse_graph6("Ch").sum(0)   # the path P4 0-1-2-3: degrees
    array([1, 2, 2, 1], dtype=uint64)
    """
    if isinstance(line, bytes):
        line = line.decode("ascii", errors="replace")
    line = line.strip()
    if line.startswith(">>graph6<<"):
        line = line[len(">>graph6<<"):]
    if line.startswith(":") or line.startswith(";"):
        raise ValueError(f"{where}: sparse6/digraph6 is not supported (line starts with {line[0]!r})")
    bad = [ch for ch in line if not 63 <= ord(ch) <= 126]
    if bad:
        raise ValueError(f"{where}: invalid graph6 character {bad[0]!r} (allowed: ASCII 63..126)")
    n, used = _graph6_size(line, where)
    nbits = n * (n - 1) // 2
    body = line[used:]
    need = (nbits + 5) // 6
    if len(body) != need:
        raise ValueError(f"{where}: graph6 line for n={n} needs {need} data characters, got {len(body)}")
    vals = np.frombuffer(body.encode("ascii"), dtype=np.uint8).astype(np.int64) - 63
    if (vals > 63).any():
        raise ValueError(f"{where}: invalid graph6 data character (value > 63)")
    bits = ((vals[:, None] >> np.arange(5, -1, -1)[None, :]) & 1).reshape(-1)
    if bits[nbits:].any():
        raise ValueError(f"{where}: nonzero padding bits in graph6 line")
    j, i = np.triu_indices(n, k=1)[::-1]  # column order: for j, for i < j -> rows of tril
    order = np.lexsort((i, j))
    adj = np.zeros((n, n), dtype=np.uint8)
    sel = bits[:nbits].astype(bool)
    ii, jj = i[order][sel], j[order][sel]
    adj[ii, jj] = 1
    adj[jj, ii] = 1
    return adj


def to_graph6(adj: np.ndarray) -> str:
    """Encode a symmetric 0/1 adjacency (n <= 62) as graph6 (inverse of :func:`parse_graph6`).

    Examples
    --------
    >>> to_graph6(parse_graph6("Ch"))
    'Ch'
    """
    adj = np.asarray(adj)
    n = adj.shape[0]
    if adj.ndim != 2 or adj.shape[1] != n or n > 62:
        raise ValueError(f"adj: expected a square (n, n) matrix with n <= 62, got {adj.shape}")
    bits = [int(adj[i, j] != 0) for j in range(1, n) for i in range(j)]
    bits += [0] * (-len(bits) % 6)
    chars = [chr(63 + int("".join(map(str, bits[k:k + 6])), 2)) for k in range(0, len(bits), 6)]
    return chr(63 + n) + "".join(chars)


def find_graph_data(name: str, root: Optional[PathLike] = None) -> Path:
    """Locate a graph data file (see the module docstring for the search order)."""
    candidates = []
    if root is not None:
        candidates.append(Path(root))
    if os.environ.get(GRAPH_DATA_ENV):
        candidates.append(Path(os.environ[GRAPH_DATA_ENV]))
    candidates.append(_BUNDLED)
    for c in candidates:
        if (c / name).is_file():
            return c / name
        if root is not None and c == Path(root):
            raise FileNotFoundError(f"root: {name} not found in --data-root {c}")
    raise FileNotFoundError(f"{name} not found in any of {[str(c) for c in candidates]}; "
                            f"set {GRAPH_DATA_ENV} or pass --data-root")


def read_graph6(lines_or_path: Union[PathLike, Iterable[str]]) -> list[np.ndarray]:
    """Read a graph6 file (one graph per line; blank lines skipped) into adjacency matrices.

    Errors name the file and the 1-based line number.
    """
    if isinstance(lines_or_path, (str, os.PathLike)) and Path(lines_or_path).is_file():
        where, lines = str(lines_or_path), Path(lines_or_path).read_text(encoding="ascii").splitlines()
    elif isinstance(lines_or_path, (str, os.PathLike)):
        raise FileNotFoundError(f"path: graph6 file {lines_or_path} does not exist")
    else:
        where, lines = "graph6", list(lines_or_path)
    out = []
    for k, line in enumerate(lines, 1):
        if line.strip():
            out.append(parse_graph6(line, where=f"{where}:{k}"))
    return out


def load_graph8c(root: Optional[PathLike] = None) -> list[Graph]:
    """GRAPH8c: the 11,117 connected graphs on 8 vertices (no node features, d = 0)."""
    adjs = read_graph6(find_graph_data("graph8c.g6", root))
    return [Graph(a, np.zeros((a.shape[0], 0), np.float32)) for a in adjs]


def load_exp(root: Optional[PathLike] = None) -> tuple[list[Graph], np.ndarray]:
    """EXP: 1,200 graphs (pairs 2i, 2i+1) with a binary node feature (d = 1) and SAT labels.

    Returns ``(graphs, labels)``; the file is read with ``allow_pickle=False``.
    """
    path = find_graph_data("exp.npz", root)
    with np.load(path, allow_pickle=False) as z:
        missing = {"num_nodes", "num_edges", "node_features", "edge_index", "label"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: missing arrays {sorted(missing)}")
        nn_, ne, feat, ei, lab = (z[k] for k in ("num_nodes", "num_edges", "node_features",
                                                 "edge_index", "label"))
    if feat.shape[0] != nn_.sum() or ei.shape != (2, ne.sum()) or lab.shape != nn_.shape:
        raise ValueError(f"{path}: inconsistent array sizes")
    graphs, n0, e0 = [], 0, 0
    for n, e in zip(nn_.tolist(), ne.tolist()):
        src, dst = ei[:, e0:e0 + e]
        if e and (src.max() >= n or dst.max() >= n or src.min() < 0):
            raise ValueError(f"{path}: edge index out of range in graph with {n} nodes")
        adj = np.zeros((n, n), np.uint8)
        adj[src, dst] = 1
        adj[dst, src] = 1
        np.fill_diagonal(adj, 0)
        graphs.append(Graph(adj, feat[n0:n0 + n, None].astype(np.float32)))
        n0, e0 = n0 + n, e0 + e
    return graphs, lab.astype(np.int64)
