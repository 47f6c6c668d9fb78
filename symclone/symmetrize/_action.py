"""Differentiable application of a :class:`GroupSample` to a tensor.

``transform(group, s, x, rep, inverse)`` computes ``g·x`` (or ``g⁻¹·x``) for the ``k·B`` sampled
elements, using the straight-through carriers of the sample when present so that gradients reach
the sampler:

* ``perm_matrix`` ``P`` (``sn`` factor): ``g·x = P x``, ``g⁻¹·x = Pᵀ x`` (``P A Pᵀ`` on graphs);
* ``candidate_weights`` over ``candidates`` (finite groups): ``Σ_m w_m c_m^{±1}·x``.

Per-sample elements of the grid groups (c4, p4, t2 on images / regular fields) are applied as one
quarter turn per turn over all samples that drew it plus cyclic shifts read as row slices
(:meth:`act_from`, no per-pixel index tensors), reading the ``B`` un-repeated inputs when given them
(:func:`reads_inputs`). Everything else goes through :meth:`Group.act <symclone.groups.Group.act>` without value checks
(the samplers produce valid elements); in particular O(3)/SO(3) on points and irreps is
:func:`symclone.groups.act_o3`, differentiable in ``Q`` (closed form for ``l <= 1``).
"""
from __future__ import annotations

import torch

from ..groups import DirectProduct, Group, Rep, RepLike, Sn, parse_rep
from ._base import GroupSample

__all__ = ["transform", "permute_by_matrix", "reads_inputs"]


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


def _permute_hard(p: torch.Tensor, x: torch.Tensor, inverse: bool) -> torch.Tensor:
    """``P x`` (``Pᵀ x`` if ``inverse``) for ``P[i, j] = [p(j) = i]`` by one gather / scatter of the rows of
    ``x`` (B, N, ...) instead of a batched matmul: ``(Pᵀ x)_j = x_{p(j)}``, ``(P x)_{p(j)} = x_j``."""
    flat = x.flatten(2)
    idx = p.unsqueeze(-1).expand(-1, -1, flat.shape[-1])
    out = flat.gather(1, idx) if inverse else torch.empty_like(flat).scatter_(1, idx, flat)
    return out.view(x.shape)


def _act_one(group: Group, g, x: torch.Tensor, rep: Rep) -> torch.Tensor:
    return group.act(g, x, rep, validate=False)  # elements come from the samplers


def _act_factors(group: Group, g, x: torch.Tensor, rep: Rep, perm_matrix, inverse: bool):
    factors = group.factors if isinstance(group, DirectProduct) else (group,)
    gs = g if isinstance(group, DirectProduct) else (g,)
    for f, gi in zip(factors, gs):
        if not f.acts_on(rep) or rep.kind == "trivial":
            continue
        if isinstance(f, Sn) and perm_matrix is not None:
            if rep.kind != "graph" and not (torch.is_grad_enabled() and perm_matrix.requires_grad):
                x = _permute_hard(gi, x, inverse)  # no gradient to carry: P is exactly the matrix of gi
            else:
                x = permute_by_matrix(perm_matrix, x, rep, inverse)
        else:
            x = _act_one(f, f.inverse(gi, validate=False) if inverse else gi, x, rep)
    return x


def reads_inputs(group: Group, s: GroupSample, rep: RepLike) -> bool:
    """Whether :func:`transform` accepts the ``B`` un-repeated inputs for ``s`` instead of the ``k·B``
    repeated batch of :func:`repeat_batch` (so that the ``k``-fold copy need not be built).

    True for block-wise samples (one element per block) and for per-sample elements of the grid groups
    (c4, p4, t2: ``act_from`` reads sample ``i·B + b`` from input ``b``) on images and regular fields.

    Examples
    --------
    >>> from symclone.groups import get_group
    >>> reads_inputs(get_group("c4"), GroupSample(g=torch.tensor([1, 3]), k=2), "image")
    True
    >>> reads_inputs(get_group("o3"), GroupSample(g=torch.eye(3).expand(2, 3, 3), k=2), "points")
    False
    """
    if s.blockwise:
        return True
    rep = parse_rep(rep)
    return (rep.is_image and hasattr(group, "act_from") and isinstance(s.g, torch.Tensor)
            and s.perm_matrix is None and s.candidate_weights is None)


def transform(group: Group, s: GroupSample, x: torch.Tensor, rep: RepLike,
              inverse: bool = False) -> torch.Tensor:
    """Apply the sampled elements (``g`` or ``g⁻¹`` if ``inverse``) to ``x`` of batch ``k·B``.

    Sample ``i`` of ``s`` acts on ``x[i]`` (the sample-major layout of :func:`repeat_batch`), or on
    ``x[i mod B]`` when :func:`reads_inputs` holds and ``x`` holds the ``B`` un-repeated inputs. The
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
        w = s.candidate_weights
        if not (torch.is_grad_enabled() and w.requires_grad):
            # w is exactly one-hot in the forward pass: Σ_m w_m c_m·x is the action of g itself
            return _act_factors(group, s.g, x, rep, None, inverse)
        out = 0
        w = w.to(x.dtype)
        for m in range(w.shape[1]):
            c = s.candidates[:, m]
            if isinstance(c, torch.Tensor) and c.shape[0] and bool((c == c[:1]).all()):
                c = c[0]  # the same candidate for every sample (c4 orientations): one unbatched action
            y = _act_one(group, group.inverse(c, validate=False) if inverse else c, x, rep)
            out = out + w[:, m].view(-1, *([1] * (x.ndim - 1))) * y
        return out
    if s.blockwise:
        return _act_blocks(group, s, x, rep, inverse)
    if x.shape[0] != _batch_of(s.g) and reads_inputs(group, s, rep):
        g = group.inverse(s.g, validate=False) if inverse else s.g
        return group.act_from(g, x, rep)
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
