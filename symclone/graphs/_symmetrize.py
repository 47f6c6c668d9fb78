"""Wrap a graph backbone into an S_n-symmetrized, permutation-invariant graph model."""
from __future__ import annotations

from typing import Optional, Union

from torch import nn

from ..symmetrize import Symmetrized
from ._samplers import GraphSampler, make_graph_sampler

__all__ = ["symmetrize_graph_model"]


def symmetrize_graph_model(model: nn.Module, sampler: Union[str, GraphSampler], n_max: int, d: int = 0,
                           k: int = 10, k_eval: Optional[int] = None, **sampler_kw) -> Symmetrized:
    """``f_sym(x) = (1/k) Σ_i f(g_i⁻¹·x)``, ``g_i ~ p(g | x)``, for invariant graph outputs.

    ``model`` maps ``(B, n_max, n_max + 1 + d)`` graphs to ``(B, ...)`` invariant outputs (rep
    ``trivial``); ``sampler`` is ``"uniform"``, ``"canonical"``, ``"learned"`` or a
    :class:`GraphSampler`. Returns the :class:`~symclone.symmetrize.Symmetrized` wrapper.

    Examples
    --------
    >>> import torch
    >>> from symclone.graphs import GraphMLP
    >>> f = symmetrize_graph_model(GraphMLP(4, 0, (8,), 2), "canonical", n_max=4)
    >>> x = torch.zeros(1, 4, 5); x[0, :3, 4] = 1; x[0, 0, 1] = x[0, 1, 0] = 1
    >>> y = x[:, [2, 3, 0, 1]][:, :, [2, 3, 0, 1, 4]]            # relabel the nodes
    >>> torch.equal(f(x), f(y))
    True
    """
    if isinstance(sampler, str):
        sampler = make_graph_sampler(sampler, n_max, d, **sampler_kw)
    elif sampler_kw:
        raise ValueError(f"sampler_kw: options {sorted(sampler_kw)} only apply to named samplers")
    return Symmetrized(model, sampler.group, "graph", "trivial", sampler=sampler, k=k,
                       k_eval=k if k_eval is None else k_eval)
