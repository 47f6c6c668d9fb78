"""PATTERN statistics (measured and implied by the recipe), class weights and the benchmark's metric.

The generator and storage are in :mod:`._pattern`; the training loop in :mod:`._pattern_train`.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ._pattern import PatternData, PatternRecipe, generate_pattern  # noqa: F401 (generate_pattern: doctests)

__all__ = ["pattern_statistics", "pattern_expectations", "weighted_accuracy", "pattern_class_weights"]


def pattern_statistics(data: PatternData) -> dict:
    """Summary of a set: node counts, edges, degree and class balance.

    Returns ``{"graphs", "nodes_min", "nodes_mean", "nodes_max", "edges_directed_mean",
    "degree_mean", "pattern_fraction", "class_balance"}`` where ``degree_mean`` is the mean node
    degree over all nodes, ``pattern_fraction`` the fraction of label-1 nodes over all nodes and
    ``class_balance`` the per-class node fractions ``[π_0, π_1]``.

    Examples
    --------
    >>> s = pattern_statistics(generate_pattern(5, seed=0))
    >>> s["graphs"], 45 <= s["nodes_min"] <= s["nodes_max"] <= 195
    (5, True)
    """
    if len(data) == 0:
        raise ValueError("data: expected at least one graph")
    edges = data.num_edges()
    nodes = data.sizes
    counts = np.bincount(data.labels, minlength=2).astype(np.float64)
    return {"graphs": len(data), "nodes_min": int(nodes.min()), "nodes_mean": float(nodes.mean()),
            "nodes_max": int(nodes.max()), "edges_directed_mean": float(2 * edges.mean()),
            "degree_mean": float(2 * edges.sum() / nodes.sum()),
            "pattern_fraction": float(counts[1] / counts.sum()),
            "class_balance": (counts / counts.sum()).tolist()}


def pattern_expectations(recipe: PatternRecipe = PatternRecipe()) -> dict:
    """Exact moments of the recipe: mean and sd of the node count, expected directed edges per graph.

    With ``s ~ U{a, …, b}`` (``m`` values): ``E s = (a + b)/2``, ``Var s = (m² − 1)/12``, ``n_G = Σ_r s_r``
    over ``c`` communities, ``E C(n_G, 2) = (Var n_G + (E n_G)² − E n_G)/2`` and the edges as in the
    module docstring.

    Examples
    --------
    >>> e = pattern_expectations()
    >>> e["nodes_mean"], e["nodes_sd"], round(e["edges_directed_mean"])
    (120.0, 20.0, 6140)
    """
    r = recipe
    m = r.size_max - r.size_min + 1
    es, vs = (r.size_min + r.size_max) / 2, (m * m - 1) / 12
    eng, vng = r.communities * es, r.communities * vs
    within = r.communities * (vs + es * es - es) / 2
    pairs = (vng + eng * eng - eng) / 2
    P = r.pattern_size
    edges = r.p * within + r.q * (pairs - within) + r.p_pattern * P * (P - 1) / 2 + r.q_pattern * P * eng
    return {"nodes_mean": eng + P, "nodes_sd": math.sqrt(vng), "edges_directed_mean": 2 * edges}


def pattern_class_weights(data: PatternData, num_classes: int = 2) -> torch.Tensor:
    """Loss weights of the benchmark: ``w_c = 1 − π_c`` with ``π_c`` the fraction of nodes of class ``c``.

    Examples
    --------
    >>> w = pattern_class_weights(generate_pattern(4, seed=0)); bool(w[1] > w[0])
    True
    """
    counts = np.bincount(data.labels, minlength=num_classes)[:num_classes].astype(np.float64)
    return torch.tensor(1.0 - counts / counts.sum(), dtype=torch.float32)


def weighted_accuracy(pred: torch.Tensor, target: torch.Tensor, num_classes: int = 2) -> float:
    """Class-weighted accuracy: the mean over present classes of the recall ``TP_c / |{y = c}|``.

    ``pred``: class indices with the shape of ``target``, or scores with one more trailing axis of
    size ``num_classes`` (argmax). Entries with ``target < 0`` (padding) are ignored; a class absent
    from ``target`` does not enter the mean.

    Examples
    --------
    >>> pred = torch.tensor([[0, 0, 1, 1, 0, 1]]); target = torch.tensor([[0, 0, 0, 1, 1, -1]])
    >>> weighted_accuracy(pred, target)          # recalls 2/3 (class 0) and 1/2 (class 1)
    0.5833333333333333
    """
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError("pred, target: expected torch tensors")
    if pred.shape == target.shape + (num_classes,) and pred.is_floating_point():
        pred = pred.argmax(-1)
    if pred.shape != target.shape:
        raise ValueError(f"pred: expected class indices of shape {tuple(target.shape)} or scores of shape "
                         f"{tuple(target.shape) + (num_classes,)}, got {tuple(pred.shape)}")
    valid = target >= 0
    t, p = target[valid].long(), pred[valid].long()
    recalls = []
    for c in range(num_classes):
        sel = t == c
        if bool(sel.any()):
            recalls.append(float((p[sel] == c).double().mean()))
    if not recalls:
        raise ValueError("target: expected at least one non-padding entry (target >= 0)")
    return sum(recalls) / len(recalls)
