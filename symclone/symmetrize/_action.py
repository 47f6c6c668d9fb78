"""Differentiable application of a :class:`GroupSample` to a tensor.

``transform(group, s, x, rep, inverse)`` computes ``g·x`` (or ``g⁻¹·x``) for the ``k·B`` sampled
elements, using the straight-through carriers of the sample when present so that gradients reach
the sampler:

* ``perm_matrix`` ``P`` (``sn`` factor): ``g·x = P x``, ``g⁻¹·x = Pᵀ x`` (``P A Pᵀ`` on graphs);
* ``weights`` over ``candidates`` (finite groups): ``Σ_m w_m c_m^{±1}·x``;
* O(3)/SO(3) on irreps with ``l ≤ 1``: a fast block-diagonal ``D(Q)`` built from ``Q`` itself
  (``1o: Q``, ``1e: det Q · Q``, ``0o: det Q``), equal to e3nn's ``D_from_matrix`` and
  differentiable in ``Q`` (tested against :meth:`Group.act`).

Everything else goes through :meth:`Group.act`.
"""
from __future__ import annotations

import functools

import torch

from ..groups import DirectProduct, Group, Rep, parse_rep
from ..groups._spatial import SO3, Sn
from ._base import GroupSample

__all__ = ["transform", "act_o3_fast", "permute_by_matrix"]


@functools.lru_cache(maxsize=64)
def _low_l_blocks(irreps: str):
    """``[(start, mul, l, p)]`` if every irrep has ``l <= 1``, else ``None``."""
    from e3nn import o3
    out, start = [], 0
    for mul, ir in o3.Irreps(irreps):
        if ir.l > 1:
            return None
        out.append((start, mul, ir.l, ir.p))
        start += mul * ir.dim
    return out


def act_o3_fast(Q: torch.Tensor, x: torch.Tensor, rep: Rep) -> torch.Tensor | None:
    """``Q·x`` for points or low-``l`` irreps (``None`` when not applicable).

    >>> from symclone.groups import get_group
    >>> G = get_group("o3"); Q = G.sample(2); x = torch.randn(2, 4, 7, dtype=torch.float64)
    >>> rep = parse_rep("irreps:1x1o+1x1e+1x0o")
    >>> torch.allclose(act_o3_fast(Q, x, rep), G.act(Q, x, rep))
    True
    """
    Q = Q.to(x.dtype)
    if Q.ndim == 3:
        Qb = Q.view(Q.shape[0], *([1] * (x.ndim - 3)), 3, 3)
    else:
        Qb = Q
    if rep.kind == "points":
        return x @ Qb.transpose(-1, -2)
    if rep.kind != "irreps":
        return None
    blocks = _low_l_blocks(rep.irreps)
    if blocks is None:
        return None
    det = torch.linalg.det(Q)
    detb = det.view(-1, *([1] * (x.ndim - 1))) if det.ndim == 1 else det
    parts = []
    for start, mul, l, p in blocks:
        if l == 0:
            seg = x[..., start:start + mul]
            parts.append(seg * detb if p == -1 else seg)
            continue
        seg = x[..., start:start + 3 * mul].unflatten(-1, (mul, 3))
        rot = seg @ Qb.unsqueeze(-3).transpose(-1, -2)
        if p == 1:
            rot = rot * detb.unsqueeze(-1)
        parts.append(rot.flatten(-2))
    return torch.cat(parts, dim=-1)


def permute_by_matrix(P: torch.Tensor, x: torch.Tensor, rep: Rep, inverse: bool) -> torch.Tensor:
    """``P x`` (``Pᵀ x`` if ``inverse``) along axis 1; graphs ``[A | X]`` get ``P A Pᵀ`` too."""
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
    if isinstance(group, SO3) and isinstance(g, torch.Tensor):
        y = act_o3_fast(g, x, rep)
        if y is not None:
            return y
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


def transform(group: Group, s: GroupSample, x: torch.Tensor, rep, inverse: bool = False) -> torch.Tensor:
    """Apply the sampled elements (``g`` or ``g⁻¹`` if ``inverse``) to ``x`` of batch ``k·B``."""
    rep = parse_rep(rep)
    if rep.kind == "trivial":
        return x
    if s.weights is not None:
        if s.candidates is None:
            raise ValueError("candidates: straight-through weights need candidate elements")
        out = 0
        w = s.weights.to(x.dtype)
        for m in range(w.shape[1]):
            c = s.candidates[:, m]
            y = _act_one(group, group.inverse(c, validate=False) if inverse else c, x, rep)
            out = out + w[:, m].view(-1, *([1] * (x.ndim - 1))) * y
        return out
    return _act_factors(group, s.g, x, rep, s.perm_matrix, inverse)
