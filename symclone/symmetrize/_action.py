"""Differentiable application of a :class:`GroupSample` to a tensor.

``transform(group, s, x, rep, inverse)`` computes ``g·x`` (or ``g⁻¹·x``) for the ``k·B`` sampled
elements, using the straight-through carriers of the sample when present so that gradients reach
the sampler:

* ``perm_matrix`` ``P`` (``sn`` factor): ``g·x = P x``, ``g⁻¹·x = Pᵀ x`` (``P A Pᵀ`` on graphs);
* ``candidate_weights`` over ``candidates`` (finite groups): ``Σ_m w_m c_m^{±1}·x``.

Everything else goes through :meth:`Group.act <symclone.groups.Group.act>` without value checks
(the samplers produce valid elements); in particular O(3)/SO(3) on points and irreps is
:func:`symclone.groups.act_o3`, differentiable in ``Q`` (closed form for ``l <= 1``).
"""
from __future__ import annotations

import torch

from ..groups import DirectProduct, Group, Rep, RepLike, Sn, parse_rep
from ._base import GroupSample

__all__ = ["transform", "permute_by_matrix"]


def permute_by_matrix(P: torch.Tensor, x: torch.Tensor, rep: Rep, inverse: bool) -> torch.Tensor:
    """``P x`` (``Pᵀ x`` if ``inverse``) along axis 1; graphs ``[A | X]`` get ``P A Pᵀ`` too.

    ``P`` is ``(B, N, N)`` (or one ``(N, N)``), ``x`` ``(B, N, ...)`` laid out as ``rep``. With
    ``P[i, j] = [p(j) = i]`` this equals ``Sn().act(p, x, rep)`` (``inverse``: ``p⁻¹``), and it is
    differentiable in ``P`` (the straight-through matrices of :func:`straight_through_permutation`).

    Examples
    --------
    >>> from symclone.groups import Sn, parse_rep
    >>> p = torch.tensor([[2, 0, 1]]); P = torch.eye(3)[:, p[0]][None]; x = torch.randn(1, 3, 2)
    >>> torch.equal(permute_by_matrix(P, x, parse_rep("set"), False), Sn(3).act(p, x, "set"))
    True
    """
    M = P.transpose(-1, -2) if inverse else P
    M = M.to(x.dtype)
    if rep.kind == "graph":
        n = x.shape[1]
        A, X = x[:, :, :n], x[:, :, n:]
        A = M @ A @ M.transpose(-1, -2)
        X = (M @ X.flatten(2)).view(X.shape)
        return torch.cat([A, X], dim=2)
    return (M @ x.flatten(2)).view(x.shape)


def _act_one(group: Group, g, x: torch.Tensor, rep: Rep) -> torch.Tensor:
    return group.act(g, x, rep, validate=False)  # elements come from the samplers


def _act_factors(group: Group, g, x: torch.Tensor, rep: Rep, perm_matrix, inverse: bool):
    factors = group.factors if isinstance(group, DirectProduct) else (group,)
    gs = g if isinstance(group, DirectProduct) else (g,)
    for f, gi in zip(factors, gs):
        if not f.acts_on(rep) or rep.kind == "trivial":
            continue
        if isinstance(f, Sn) and perm_matrix is not None:
            x = permute_by_matrix(perm_matrix, x, rep, inverse)
        else:
            x = _act_one(f, f.inverse(gi, validate=False) if inverse else gi, x, rep)
    return x


def transform(group: Group, s: GroupSample, x: torch.Tensor, rep: RepLike,
              inverse: bool = False) -> torch.Tensor:
    """Apply the sampled elements (``g`` or ``g⁻¹`` if ``inverse``) to ``x`` of batch ``k·B``.

    Sample ``i`` of ``s`` acts on ``x[i]`` (the sample-major layout of :func:`repeat_batch`). The
    result equals ``group.act(s.g, x, rep)`` (``group.act(group.inverse(s.g), x, rep)``) in the
    forward pass; through ``s.perm_matrix`` and ``s.candidate_weights`` gradients reach the sampler.

    Examples
    --------
    >>> from symclone.groups import get_group
    >>> G = get_group("c4"); g = torch.tensor([1, 3]); x = torch.randn(2, 1, 4, 4)
    >>> torch.equal(transform(G, GroupSample(g=g, k=1), x, "image", inverse=True), G.act(-g % 4, x))
    True
    """
    rep = parse_rep(rep)
    if rep.kind == "trivial":
        return x
    if s.candidate_weights is not None:
        if s.candidates is None:
            raise ValueError("candidates: straight-through candidate_weights need candidate elements")
        out = 0
        w = s.candidate_weights.to(x.dtype)
        for m in range(w.shape[1]):
            c = s.candidates[:, m]
            y = _act_one(group, group.inverse(c, validate=False) if inverse else c, x, rep)
            out = out + w[:, m].view(-1, *([1] * (x.ndim - 1))) * y
        return out
    if s.blockwise:
        return _act_blocks(group, s, x, rep, inverse)
    return _act_factors(group, s.g, x, rep, s.perm_matrix, inverse)


def _act_blocks(group: Group, s: GroupSample, x: torch.Tensor, rep: Rep, inverse: bool) -> torch.Tensor:
    """``transform`` when block ``i`` of the sample-major layout holds one element for every input:
    one unbatched action per block, written into one ``(k·B, ...)`` buffer. ``x`` is the repeated batch
    ``(k·B, ...)`` or the ``B`` inputs themselves (then every block reads them)."""
    els = s.block_elements
    k = s.k
    repeated = _batch_of(s.g) == x.shape[0]
    B = x.shape[0] // k if repeated else x.shape[0]
    out = None
    for i in range(k):
        el = tuple(t[i] for t in els) if isinstance(els, tuple) else els[i]
        xi = x[i * B:(i + 1) * B] if repeated else x
        yi = _act_factors(group, el, xi, rep, None, inverse)
        if out is None:
            out = yi.new_empty((k * B,) + tuple(yi.shape[1:]))
        out[i * B:(i + 1) * B] = yi
    return out


def _batch_of(g) -> int:
    return len(g[0]) if isinstance(g, tuple) else len(g)
