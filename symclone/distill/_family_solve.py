"""Family closed form at scale, part 2: Gram matrices and the Eckart–Young solution from the sparse
entries of a layer's basis maps (part 1, probing the maps: :mod:`._sparse_maps`).

**Gram matrices** (:func:`pair_gram`). With ``Σ = E[x̃ x̃ᵀ]`` the whitened inner products are
``G_rs[p, q] = Σ_o T_p[(o, r), :] Σ T_q[(o, s), :]ᵀ`` (``r, s``: output orientations, ``o``: the row within an
orientation), a join of the entries of ``p`` and ``q`` on the row: ``Σ_row (entries in the row)²`` products
(32.5 M for the layer above), streamed in chunks.

**Solution** (:func:`family_blocks_solve`, Eckart–Young in the ``Σ`` metric). With ``G_00 = V diag(σ²) Vᵀ``
(descending), ``B`` blocks give ``H = V_Bᵀ`` and ``W̃_b = Σ_p V_pb T_p`` (an entry-wise combination: no
whitening of the maps is needed), with relative error ``sqrt(Σ_{b>B} σ_b² / Σ σ_b²)``. For ``B ≥ P`` the
exact ``H = I``, ``W̃_b = T_b`` keeps every block as sparse as one basis map. Orientations ``r > 0`` of
C4-regular outputs use the least-squares maps ``A_r = V_B diag(σ_B⁻²) V_Bᵀ G_0r``.

Examples
--------
>>> import torch
>>> from symclone.distill._sparse_maps import SparseAffineMaps
>>> T = torch.zeros(2, 3, 4, dtype=torch.float64); T[0, :, 1] = 1.0; T[1, 0, 0] = 2.0
>>> maps = SparseAffineMaps.from_dense(T)
>>> G = pair_gram(maps.entries(), maps.entries(), torch.eye(4, dtype=torch.float64), 2, 2)
>>> G.tolist()
[[3.0, 0.0], [0.0, 4.0]]
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ._sparse_maps import Entries, SparseAffineMaps

__all__ = ["pair_gram", "second_moment", "family_blocks_solve", "FamilySolution", "PAIR_CHUNK"]

log = logging.getLogger(__name__)

#: (left, right) entry pairs per chunk of :func:`pair_gram`
PAIR_CHUNK = 1 << 22


def second_moment(h_flat: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """``E[x̃ x̃ᵀ]`` ``(I+1, I+1)`` float64 of ``x̃ = [1; h]`` over the rows of ``h_flat (N, I)`` (streamed)."""
    N, I = h_flat.shape
    M = torch.zeros(I + 1, I + 1, dtype=torch.float64, device=h_flat.device)
    for i in range(0, N, chunk):
        x = h_flat[i:i + chunk].double()
        x = torch.cat([torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device), x], 1)
        M.addmm_(x.T, x)
    return M / max(N, 1)


def pair_gram(left: Entries, right: Entries, sigma: torch.Tensor, P: int, Q: int,
              chunk: int = PAIR_CHUNK) -> torch.Tensor:
    """``G[p, q] = Σ_{a ∈ left, b ∈ right, key_a = key_b} val_a val_b Σ[col_a, col_b]`` ``(P, Q)`` float64.

    With keys = output rows this is ``Σ_o T_p[o] Σ T_q[o]ᵀ = tr(T_p Σ T_qᵀ)``. The join enumerates, per
    key, every (left, right) pair, in chunks of about ``chunk`` pairs.
    """
    device = sigma.device
    G = torch.zeros(P * Q, dtype=torch.float64, device=device)
    if left.val.numel() == 0 or right.val.numel() == 0:
        return G.reshape(P, Q)
    order = torch.argsort(right.key)
    rk, rp, rc, rv = right.key[order], right.p[order], right.col[order], right.val[order].double()
    start = torch.searchsorted(rk, left.key, side="left")
    count = torch.searchsorted(rk, left.key, side="right") - start
    csum = torch.cumsum(count, 0)
    n_left = left.val.numel()
    i0 = 0
    while i0 < n_left:
        base = int(csum[i0 - 1]) if i0 > 0 else 0
        i1 = int(torch.searchsorted(csum, torch.tensor(base + chunk, device=csum.device), side="right"))
        i1 = min(max(i1, i0 + 1), n_left)
        cnt = count[i0:i1]
        total = int(cnt.sum())
        if total:
            li = torch.repeat_interleave(torch.arange(i0, i1, device=device), cnt)
            first = torch.repeat_interleave(torch.cumsum(cnt, 0) - cnt, cnt)
            ri = start[li] + (torch.arange(total, device=device) - first)
            w = left.val[li].double() * rv[ri] * sigma[left.col[li], rc[ri]]
            G.index_add_(0, left.p[li] * Q + rp[ri], w)
        i0 = i1
    return G.reshape(P, Q)


# ---- the solution --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FamilySolution:
    """Optimal blocks of one layer (float64).

    ``W`` as entries ``(b, o, i, value)`` of ``W_b[o, i]`` (``o``: row within orientation 0, ``i``: input),
    ``c (B, O)``, ``H (B, P)``, ``A (R-1, P, P)``, the singular values ``σ`` of the whitened maps
    (orientation 0, descending) and the predicted relative error ``sqrt(Σ_{b>B} σ_b² / Σ σ_b²)``.
    """

    W_block: torch.Tensor
    W_row: torch.Tensor
    W_col: torch.Tensor
    W_val: torch.Tensor
    c: torch.Tensor
    H: torch.Tensor
    A: torch.Tensor
    singular_values: list
    predicted_rel_error: float

    def dense_W(self, blocks: int, O: int, I: int) -> torch.Tensor:
        """``W`` as a dense ``(B, O, I)`` tensor."""
        W = torch.zeros(blocks, O, I, dtype=torch.float64, device=self.W_val.device)
        W.index_put_((self.W_block, self.W_row, self.W_col), self.W_val, accumulate=True)
        return W


def family_blocks_solve(maps: SparseAffineMaps, sigma: torch.Tensor, blocks: int, orientations: int,
                        fields: int) -> FamilySolution:
    """The ``blocks``-block solution of :mod:`module docstring <symclone.distill._sparse_maps>`.

    Parameters
    ----------
    maps : the layer's basis maps; output rows in the order ``(field, orientation, pixel)``.
    sigma : ``E[x̃ x̃ᵀ]`` ``(I+1, I+1)`` float64.
    blocks : ``B``.
    orientations : ``R`` (4 for C4-regular outputs, else 1).
    fields : output fields ``F`` (``out = F · R · pixels``).
    """
    P, out, R = maps.num_params, maps.out_dim, orientations
    if out % (fields * R):
        raise ValueError(f"fields, orientations: output size {out} is not divisible by {fields} x {R}")
    if tuple(sigma.shape) != (maps.in_dim + 1, maps.in_dim + 1):
        raise ValueError(f"sigma: expected shape ({maps.in_dim + 1}, {maps.in_dim + 1}), got {tuple(sigma.shape)}")
    pix = out // (fields * R)
    O = out // R
    row = maps.row
    left = maps.entries(rows=_orientation_mask(out, pix, R, 0, row.device), key=_row_key(out, pix, R, row.device))
    G00 = pair_gram(left, left, sigma, P, P)
    G00 = 0.5 * (G00 + G00.T)
    evals, V = torch.linalg.eigh(G00)
    order = torch.argsort(evals, descending=True)
    evals, V = evals[order].clamp_min(0), V[:, order]
    sig = evals.sqrt()
    total = float(evals.sum()) or 1.0
    Bk = min(blocks, P)
    pred = max(0.0, float(evals[Bk:].sum()) / total) ** 0.5
    keep = evals > evals[0] * 1e-18 if P else evals > 0
    if blocks >= P:  # exact: H = I, W_b = T_b (as sparse as the basis maps)
        H = torch.eye(P, dtype=torch.float64, device=row.device)
        inv = torch.where(keep, 1.0 / evals.clamp_min(1e-300), torch.zeros_like(evals))
        proj = V @ (inv[:, None] * V.T)  # G00⁺
        b, o, col, val = left.p, left.key, left.col, left.val
    else:
        Vb = V[:, :Bk]
        H = Vb.T.contiguous()
        inv = torch.where(keep[:Bk], 1.0 / evals[:Bk].clamp_min(1e-300), torch.zeros_like(evals[:Bk]))
        proj = Vb @ (inv[:, None] * Vb.T)
        b = torch.arange(Bk, device=row.device).repeat_interleave(left.p.numel())
        val = (Vb[left.p].T * left.val).reshape(-1)  # (Bk, nnz) -> W̃_b = Σ_p V_pb T_p
        o, col = left.key.repeat(Bk), left.col.repeat(Bk)
    A = []
    for r in range(1, R):
        right = maps.entries(rows=_orientation_mask(out, pix, R, r, row.device), key=_row_key(out, pix, R, row.device))
        A.append(proj @ pair_gram(left, right, sigma, P, P))
    bias = col == 0
    c = torch.zeros(blocks, O, dtype=torch.float64, device=row.device)
    c.index_put_((b[bias], o[bias]), val[bias], accumulate=True)
    Hf = torch.zeros(blocks, P, dtype=torch.float64, device=row.device)
    Hf[:H.shape[0]] = H
    A_t = torch.stack(A) if A else torch.zeros(0, P, P, dtype=torch.float64, device=row.device)
    w = ~bias
    return FamilySolution(b[w], o[w], col[w] - 1, val[w], c, Hf, A_t, sig.tolist(), pred)


def _orientation_mask(out: int, pix: int, R: int, r: int, device: torch.device) -> torch.Tensor:
    rows = torch.arange(out, device=device)
    return (rows // pix) % R == r


def _row_key(out: int, pix: int, R: int, device: torch.device) -> torch.Tensor:
    """Output row ``(field, r, pixel)`` -> its row ``(field, pixel)`` within one orientation."""
    rows = torch.arange(out, device=device)
    return (rows // (pix * R)) * pix + rows % pix
