"""Reynolds projection onto equivariant linear maps and the structure residual.

For a finite group G with orthogonal representations ρ_in, ρ_out (every permutation action —
rolls, rot90, orientation shifts, node permutations — and rotations of points are orthogonal),

    R(W) = (1/|G|) Σ_g ρ_out(g)⁻¹ W ρ_in(g) = (1/|G|) Σ_g ρ_out(g) W ρ_in(g)ᵀ

(substituting g → g⁻¹ and ρ(g⁻¹) = ρ(g)ᵀ). ``ρ_out(g) W`` applies g to every column of W (a
vector of the output space) and ``W ρ_in(g)ᵀ = (ρ_in(g) Wᵀ)ᵀ`` applies g to every row (a vector
of the input space). R is the orthogonal projection (idempotent, self-adjoint in the Frobenius
inner product) onto {W : W ρ_in(g) = ρ_out(g) W ∀g}. The residual

    δ_G(W) = ‖W − R(W)‖_F / ‖W‖_F

is 0 for an equivariant layer and ≈ √(1 − dim(range R)/size(W)) for a Gaussian W; when G acts
freely on the entries (t2, c4 on regular fields) that is √(1 − 1/|G|).

Fast paths (``W`` viewed as the 6-tensor ``W[o, y', x', i, y, x]``):

* ``t2``: the mean along each cyclic diagonal (y − y', x − x') (see ``_shifts``); with unequal
  input/output grids (valid convs) the Toeplitz projection, i.e. the mean along non-cyclic diagonals.
* ``c4``: each term ``ρ_out(g) W ρ_in(g)ᵀ`` is one gather ``W[σ_out(a), σ_in(b)]`` with the index
  permutations σ_g of ``rot90`` (plus the roll of the 4 orientation channels of regular fields),
  obtained by applying ``group.act`` to index tensors; terms are accumulated one at a time.
* ``p4 = C4 ⋉ T(2)``: ``R_p4 = R_c4 ∘ R_t2`` (T(2) is normal, so the two averages commute).

The generic path enumerates ``group.elements()`` and applies ``group.act`` to the rows and the
columns of W; it works for any finite group and rep with an orthogonal action.

Examples
--------
>>> import torch
>>> W = torch.randn(9, 9, dtype=torch.float64)
>>> R = project(W, "t2", (1, 3, 3), (1, 3, 3))
>>> structure_residual(R, "t2", (1, 3, 3), (1, 3, 3)) < 1e-12
True
>>> torch.allclose(project(R, "t2", (1, 3, 3), (1, 3, 3)), R)
True
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

import torch

from symclone.groups import C4, Group, RepLike

from ._checks import Layout, resolve
from ._shifts import diagonal_means, from_diagonals

__all__ = ["project", "structure_residual", "c4_project", "generic_project"]

log = logging.getLogger(__name__)


def _permutation(g, shape: tuple, rep, device) -> torch.Tensor:
    """σ_g with ``(g·v)[a] = v[σ_g(a)]`` for a permutation rep: the action applied to ``arange``."""
    idx = torch.arange(math.prod(shape), device=device).view(1, *shape)
    return C4().act(g, idx, rep).reshape(-1)


def c4_project(W: torch.Tensor, lay: Layout) -> torch.Tensor:
    """C4 Reynolds projection: ``(ρ_out(g) W ρ_in(g)ᵀ)[a, b] = W[σ_out(a), σ_in(b)]`` with the
    permutations σ_g of ``group.act`` on index tensors; one broadcast gather per element, so the
    peak is W, the running sum and one term."""
    Co, Ci = lay.out_shape[0], lay.in_shape[0]
    ro = 4 if lay.out_rep.kind == "regular" else 1
    ri = 4 if lay.in_rep.kind == "regular" else 1
    A, B = W.shape[0] // (Co // ro), W.shape[1] // (Ci // ri)
    T = W.view(Co // ro, A, Ci // ri, B)
    acc = W.clone().view_as(T)
    for k in range(1, 4):
        so = _permutation(torch.tensor(k), (ro, *lay.out_shape[1:]), lay.out_rep, W.device)
        si = _permutation(torch.tensor(k), (ri, *lay.in_shape[1:]), lay.in_rep, W.device)
        term = T[:, so[:, None], :, si[None, :]]  # advanced indices first: (A, B, F_out, F_in)
        acc += term.permute(2, 0, 3, 1)
        del term
    return acc.div_(4).view(W.shape)


def _t2_project(W: torch.Tensor, lay: Layout) -> torch.Tensor:
    K = diagonal_means(W, lay.in_shape, lay.out_shape, lay.cyclic)
    return from_diagonals(K, lay.in_shape, lay.out_shape, lay.cyclic)


def _elements(G: Group) -> list:
    els = G.elements()
    n = len(els[0]) if isinstance(els, tuple) else len(els)
    return [G.index(els, i) for i in range(n)]


def _act_rows(G: Group, g, M: torch.Tensor, shape: tuple, rep) -> torch.Tensor:
    return G.act(g, M.reshape(M.shape[0], *shape), rep).reshape(M.shape)


def _check_orthogonal(G: Group, g, shape: tuple, rep, dtype) -> None:
    v = torch.randn(2, *shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
    gv = G.act(g, v, rep)
    if not torch.allclose(gv.flatten(1).norm(dim=1), v.flatten(1).norm(dim=1), rtol=1e-5):
        raise ValueError(f"group: the generic Reynolds path needs an orthogonal (norm-preserving) action; "
                         f"{G.name!r} on rep {rep} with shape {shape} is not")


def generic_project(W: torch.Tensor, lay: Layout) -> torch.Tensor:
    """``(1/|G|) Σ_g ρ_out(g) W ρ_in(g)ᵀ`` by ``group.act`` on rows, then columns; one running sum.

    Time O(|G|·size(W)); memory O(size(W)).
    """
    G = lay.group
    els = _elements(G)
    if len(els) > 5000:
        log.warning("generic Reynolds projection over %d elements of %s: this is slow", len(els), G.name)
    _check_orthogonal(G, els[min(1, len(els) - 1)], lay.in_shape, lay.in_rep, W.dtype)
    _check_orthogonal(G, els[min(1, len(els) - 1)], lay.out_shape, lay.out_rep, W.dtype)
    acc = torch.zeros_like(W)
    for g in els:
        M = _act_rows(G, g, W, lay.in_shape, lay.in_rep)  # W ρ_in(g)ᵀ
        acc += _act_rows(G, g, M.t(), lay.out_shape, lay.out_rep).t()  # ρ_out(g) (W ρ_in(g)ᵀ)
    return acc.div_(len(els))


def _project(W: torch.Tensor, lay: Layout) -> torch.Tensor:
    if not lay.fast:
        return generic_project(W, lay)
    name = lay.group.name
    if name == "t2":
        return _t2_project(W, lay)
    if name == "c4":
        return c4_project(W, lay)
    return c4_project(_t2_project(W, lay), lay)  # p4


def project(W: torch.Tensor, group: str | Group, in_shape: Sequence[int], out_shape: Sequence[int],
            in_rep: RepLike = "image", out_rep: RepLike = "image", padding: str | None = None,
            method: str = "auto") -> torch.Tensor:
    """The Reynolds projection ``R(W)`` onto ``group``-equivariant linear maps.

    Parameters
    ----------
    W : ``(prod(out_shape), prod(in_shape))`` matrix, ``y = W x`` (PyTorch ``Linear`` convention).
    group : ``"t2" | "c4" | "p4"`` (fast strided paths on ``image``/``regular`` reps) or any finite
        :class:`~symclone.groups.Group` / name (generic path through ``group.act``).
    in_shape, out_shape : per-sample shapes, ``(C, H, W)`` for images/regular fields.
    padding : translation structure for ``t2``/``p4``: ``"circular"`` (cyclic shifts; default when
        the grids are equal) or ``"valid"``/``"zeros"`` (non-cyclic Toeplitz diagonals; default when
        they differ, e.g. a 3x3 valid conv 28 -> 26).
    method : ``"auto"``, ``"fast"`` or ``"generic"`` (``group.act`` over all elements).

    Returns
    -------
    Tensor of W's shape (and dtype, half precisions promoted to float32).

    Examples
    --------
    >>> W = torch.randn(16, 16, dtype=torch.float64)
    >>> a = project(W, "c4", (1, 4, 4), (1, 4, 4))
    >>> torch.allclose(a, project(W, "c4", (1, 4, 4), (1, 4, 4), method="generic"))
    True
    """
    W, lay = resolve(W, group, in_shape, out_shape, in_rep, out_rep, padding, method)
    return _project(W, lay)


def structure_residual(W: torch.Tensor, group: str | Group, in_shape: Sequence[int],
                       out_shape: Sequence[int], in_rep: RepLike = "image", out_rep: RepLike = "image",
                       padding: str | None = None, method: str = "auto") -> float:
    """δ_G = ‖W − R(W)‖_F / ‖W‖_F (0 for an equivariant layer, ≈ √(1 − 1/|G|) for Gaussian W).

    Arguments as in :func:`project`. Returns 0.0 for ``W = 0``.

    Examples
    --------
    >>> W = torch.randn(4 * 36, 36, dtype=torch.float64)
    >>> round(structure_residual(W, "c4", (1, 6, 6), (4, 6, 6), out_rep="regular"), 1)
    0.9
    """
    W, lay = resolve(W, group, in_shape, out_shape, in_rep, out_rep, padding, method)
    norm = float(torch.linalg.vector_norm(W))
    if norm == 0.0 or not math.isfinite(norm):
        return 0.0 if norm == 0.0 else float("nan")
    R = _project(W, lay)
    return float(torch.linalg.vector_norm(R.sub_(W))) / norm
