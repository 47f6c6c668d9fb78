"""Wrap a graph backbone into an S_n-symmetrized model: invariant graph outputs or equivariant node outputs."""
from __future__ import annotations

from typing import Optional, Union

from torch import nn

from ..symmetrize import Symmetrized
from ._samplers import GraphSampler, make_graph_sampler

__all__ = ["symmetrize_graph_model"]

_OUTPUTS = ("trivial", "set")


def symmetrize_graph_model(model: nn.Module, sampler: Union[str, GraphSampler], n_max: Optional[int], d: int = 0,
                           k: int = 10, k_eval: Optional[int] = None, rep_out: str = "trivial",
                           **sampler_kw) -> Symmetrized:
    """``f_sym(x) = (1/k) Σ_i g_i · f(g_i⁻¹·x)``, ``g_i ~ p(g | x)``, for graph or node outputs.

    ``model`` maps ``(B, N, N + 1 + d)`` graphs (``N = n_max``; ``n_max=None``: any ``N``) to
    ``(B, ...)`` outputs laid out as ``rep_out``:

    * ``"trivial"`` — one invariant output per graph; ``g_i ·`` is the identity and ``f_sym`` is
      permutation invariant;
    * ``"set"`` — one output per node ``(B, N, ...)``; ``g_i ·`` moves the output of position ``j``
      back to the node it came from, ``(g·y)_{g(j)} = y_j``, so ``f_sym(h·x) = h·f_sym(x)``
      (node outputs are an equivariant representation of S_n). With the canonical sampler this is
      exact per call for graphs without non-trivial automorphisms; on a graph with automorphisms the
      node outputs are determined up to one (automorphic nodes may exchange their outputs), as for
      any canonicalization of node-level outputs.

    ``sampler`` is ``"uniform"``, ``"canonical"``, ``"learned"`` or a :class:`GraphSampler`. Returns the
    :class:`~symclone.symmetrize.Symmetrized` wrapper.

    Examples
    --------
    >>> import torch
    >>> from symclone.graphs import GraphMLP
    >>> f = symmetrize_graph_model(GraphMLP(4, 0, (8,), 2), "canonical", n_max=4)
    >>> x = torch.zeros(1, 4, 5); x[0, :3, 4] = 1; x[0, 0, 1] = x[0, 1, 0] = 1
    >>> y = x[:, [2, 3, 0, 1]][:, :, [2, 3, 0, 1, 4]]            # relabel the nodes
    >>> torch.equal(f(x), f(y))
    True
    >>> node = torch.nn.Sequential(torch.nn.Flatten(1), torch.nn.Linear(24, 4), torch.nn.Unflatten(1, (4, 1)))
    >>> g = symmetrize_graph_model(node, "canonical", n_max=4, d=1, rep_out="set")
    >>> x = torch.cat([x, torch.tensor([[[0.], [1.], [2.], [0.]]])], 2)   # features: no automorphism
    >>> y = x[:, [2, 3, 0, 1]][:, :, [2, 3, 0, 1, 4, 5]]
    >>> torch.equal(g(y), g(x)[:, [2, 3, 0, 1]])                  # node outputs follow their nodes
    True
    """
    if rep_out not in _OUTPUTS:
        raise ValueError(f"rep_out: expected 'trivial' (graph outputs) or 'set' (node outputs), got {rep_out!r}")
    if isinstance(sampler, str):
        sampler = make_graph_sampler(sampler, n_max, d, **sampler_kw)
    elif sampler_kw:
        raise ValueError(f"sampler_kw: options {sorted(sampler_kw)} only apply to named samplers")
    return Symmetrized(model, sampler.group, "graph", rep_out, sampler=sampler, k=k,
                       k_eval=k if k_eval is None else k_eval)
