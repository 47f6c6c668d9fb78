"""Family closed form at scale, part 2: Gram matrices and the Eckart–Young solution from the sparse
entries of a layer's basis maps (part 1, probing the maps: :mod:`._sparse_maps`).

**Gram matrices** (:func:`pair_gram`). With ``Σ = E[x̃ x̃ᵀ]`` the whitened inner products are
``G_rs[p, q] = Σ_o T_p[(o, r), :] Σ T_q[(o, s), :]ᵀ`` (``r, s``: output orientations, ``o``: the row within an
orientation), a join of the entries of ``p`` and ``q`` on the row: ``Σ_row (entries in the row)²`` products
(32.5 M for the layer above), streamed in chunks.

**The band of Σ** (:func:`layer_moment`, :class:`BandedMoment`). The join reads ``Σ[i, j]`` only for input
pairs that share an output row: for a convolution, column offsets ``δ = j − i`` within the kernel's
footprint (13 offsets ``δ ≥ 0`` for a 3×3 single-channel conv). Streaming the inputs once,
``D_δ[i] = E[x_i x_{i+δ}]`` costs ``nδ · N · I`` products and ``8 nδ I`` bytes, against ``N · I²`` and
``8 I²`` for the dense ``Σ`` (at 112 px: 0.33 G vs 322 G products, 1 MB vs 1.26 GB); streamed as BLAS
column tiles when the offsets are short. A layer whose joins read most input pairs uses the dense ``Σ``.

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
from typing import Iterator

import torch

from ._sparse_maps import Entries, SparseAffineMaps

__all__ = ["pair_gram", "second_moment", "family_blocks_solve", "family_blocks_from_grams", "FamilySolution",
           "PAIR_CHUNK", "BandedMoment", "join_offsets", "layer_moment"]

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


def _join(left: Entries, right: Entries, chunk: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, tuple]]:
    """Every (left, right) entry pair with equal keys, in chunks of about ``chunk`` pairs: ``(li, ri, right
    sorted by key as (p, col, val))`` with ``li`` indexing ``left`` and ``ri`` the sorted right entries."""
    device = left.val.device
    order = torch.argsort(right.key)
    rk, rs = right.key[order], (right.p[order], right.col[order], right.val[order])
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
            yield li, start[li] + (torch.arange(total, device=device) - first), rs
        i0 = i1


def pair_gram(left: Entries, right: Entries, sigma: "torch.Tensor | BandedMoment", P: int, Q: int,
              chunk: int = PAIR_CHUNK) -> torch.Tensor:
    """``G[p, q] = Σ_{a ∈ left, b ∈ right, key_a = key_b} val_a val_b Σ[col_a, col_b]`` ``(P, Q)`` float64.

    With keys = output rows this is ``Σ_o T_p[o] Σ T_q[o]ᵀ = tr(T_p Σ T_qᵀ)``. The join enumerates, per
    key, every (left, right) pair, in chunks of about ``chunk`` pairs. ``sigma``: the dense second moment
    or its band (:class:`BandedMoment`, indexed the same way).
    """
    G = torch.zeros(P * Q, dtype=torch.float64, device=left.val.device)
    if left.val.numel() == 0 or right.val.numel() == 0:
        return G.reshape(P, Q)
    for li, ri, (rp, rc, rv) in _join(left, right, chunk):
        w = left.val[li].double() * rv[ri].double() * sigma[left.col[li], rc[ri]]
        G.index_add_(0, left.p[li] * Q + rp[ri], w)
    return G.reshape(P, Q)


class BandedMoment:
    """The entries of ``Σ = E[x̃ x̃ᵀ]`` (``x̃ = [1; x]``) on a set of column offsets: the diagonals
    ``D_δ[i] = E[x_i x_{i+δ}]`` for the offsets ``δ ≥ 0`` a Gram join needs, and the mean ``E[x]`` (the bias
    row). A 3×3 convolution on ``H × W`` images joins columns ``|δ| = |dy·W + dx| ≤ 2W + 2``: 13 diagonals,
    ``13 · N · I`` products instead of the ``N · I²`` of the dense ``Σ``.

    ``self[ci, cj]`` gathers ``Σ[ci, cj]`` for augmented columns (``0``: the bias), as a dense ``Σ`` would.

    Examples
    --------
    >>> h = torch.randn(50, 6, dtype=torch.float64)
    >>> band = BandedMoment.from_inputs(h, torch.tensor([0, 2]))
    >>> dense = second_moment(h)
    >>> i, j = torch.tensor([0, 1, 3, 5, 2]), torch.tensor([4, 1, 1, 3, 0])
    >>> torch.allclose(band[i, j], dense[i, j])
    True
    """

    def __init__(self, offsets: torch.Tensor, diagonals: torch.Tensor, mean: torch.Tensor):
        self.offsets, self.diagonals, self.mean = offsets, diagonals, mean  # (nδ,), (nδ, I), (I,)
        self.device = mean.device
        self.shape = (mean.numel() + 1, mean.numel() + 1)

    @property
    def nbytes(self) -> int:
        return 8 * (self.diagonals.numel() + self.mean.numel())

    @classmethod
    def from_inputs(cls, h_flat: torch.Tensor, offsets: torch.Tensor, chunk: int = 256) -> "BandedMoment":
        """``D_δ = mean_n x_i x_{i+δ}`` over ``h_flat (N, I)`` in float64, by the cheaper of two streams
        (:func:`band_cost`): column tiles ``X_tᵀ [X_t X_{t+1..t+δmax}]`` (BLAS, ``2 N I (b + δmax)`` flops
        for tiles of ``b = max(64, δmax)`` columns) or one product ``x_i x_{i+δ}`` per offset and row chunk."""
        N, I = h_flat.shape
        offsets = torch.unique(offsets.to(device=h_flat.device, dtype=torch.long))
        if offsets.numel() and (int(offsets[0]) < 0 or int(offsets[-1]) >= I):
            raise ValueError(f"offsets: expected values in [0, {I}), got {offsets.tolist()[:4]}...")
        D = torch.zeros(offsets.numel(), I, dtype=torch.float64, device=h_flat.device)
        mean = h_flat.sum(0, dtype=torch.float64)
        costs = band_cost(I, offsets)
        if offsets.numel() and costs["tiles"] <= costs["offsets"]:
            dmax = int(offsets[-1])
            b = max(64, dmax)
            for t0 in range(0, I, b):
                t1, e = min(I, t0 + b), min(I, t0 + b + dmax)
                xb = h_flat[:, t0:e].double()
                G = xb[:, :t1 - t0].T @ xb  # (t1 - t0, e - t0): E[x_i x_j] for i in the tile, j - i <= dmax
                r = torch.arange(t1 - t0, device=G.device)[:, None]
                c = r + offsets[None]
                ok = c < e - t0
                D[:, t0:t1].T[ok] = G[r.expand_as(c)[ok], c[ok]]
        else:
            for n0 in range(0, N, chunk):
                xt = h_flat[n0:n0 + chunk].T.double().contiguous()  # (I, n): contiguous rows per input
                for k, d in enumerate(offsets.tolist()):
                    D[k, :I - d] += (xt[:I - d] * xt[d:]).sum(1)
        return cls(offsets, D / max(N, 1), mean / max(N, 1))

    def __getitem__(self, idx: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        ci, cj = idx
        i, j = torch.minimum(ci, cj) - 1, torch.maximum(ci, cj) - 1  # -1: the bias
        k = torch.searchsorted(self.offsets, (j - i).clamp_min(0))
        k_ok = k.clamp_max(max(self.offsets.numel() - 1, 0))
        if self.offsets.numel() == 0 or bool(((self.offsets[k_ok] != j - i) & (i >= 0)).any()):
            raise KeyError("BandedMoment: an entry outside the stored offsets was requested")
        band = self.diagonals[k_ok, i.clamp_min(0)] if self.offsets.numel() else torch.zeros_like(i, dtype=torch.float64)
        bias = torch.where(j >= 0, self.mean[j.clamp_min(0)], torch.ones_like(band))
        return torch.where(i >= 0, band, bias)


def band_cost(I: int, offsets: torch.Tensor) -> dict:
    """Cost per input row, in BLAS-flop equivalents, of the three ways to get the entries of ``Σ`` on
    ``offsets``: the dense ``Σ`` (``2 I²``), column tiles (``2 I (b + δmax)``) and one element-wise pass per
    offset (``100 I nδ``: memory-bound passes run ~1/50 of the BLAS rate, measured on one CPU core)."""
    dmax = int(offsets.max()) if offsets.numel() else 0
    return {"dense": 2.0 * I * I, "tiles": 2.0 * I * (max(64, dmax) + dmax), "offsets": 100.0 * I * offsets.numel()}


def join_offsets(pairs: list[tuple[Entries, Entries]], chunk: int = PAIR_CHUNK) -> torch.Tensor:
    """The offsets ``|col_a − col_b|`` between the input (non-bias) columns of every joined entry pair."""
    found = []
    for left, right in pairs:
        if left.val.numel() == 0 or right.val.numel() == 0:
            continue
        for li, ri, (_, rc, _) in _join(left, right, chunk):
            a, b = left.col[li], rc[ri]
            keep = (a > 0) & (b > 0)
            found.append(torch.unique((a[keep] - b[keep]).abs()))
    return torch.unique(torch.cat(found)) if found else torch.zeros(0, dtype=torch.long)


def _orientation_pairs(maps: SparseAffineMaps, R: int, fields: int) -> list[tuple[Entries, Entries]]:
    """The entry sets the Gram matrices join: ``(orientation 0, orientation r)`` for ``r = 0 … R−1``,
    keyed by the row within an orientation."""
    out = maps.out_dim
    _check_layout(out, fields, R)
    pix, dev = out // (fields * R), maps.row.device
    key = _row_key(out, pix, R, dev)
    left = maps.entries(rows=_orientation_mask(out, pix, R, 0, dev), key=key)
    return [(left, left if r == 0 else maps.entries(rows=_orientation_mask(out, pix, R, r, dev), key=key))
            for r in range(R)]


def layer_moment(maps: SparseAffineMaps, h_flat: torch.Tensor, orientations: int, fields: int
                 ) -> "torch.Tensor | BandedMoment":
    """What :func:`family_blocks_solve` needs of ``Σ = E[x̃ x̃ᵀ]`` over ``h_flat (N, I)``: its band on the
    offsets the Gram joins use (:class:`BandedMoment`), or the dense ``Σ`` (:func:`second_moment`, one BLAS
    ``N · I²`` product) when that is cheaper (:func:`band_cost`: maps that join most input pairs)."""
    offsets = join_offsets(_orientation_pairs(maps, orientations, fields)).to(h_flat.device)
    costs = band_cost(h_flat.shape[1], offsets)
    if costs["dense"] < min(costs["tiles"], costs["offsets"]):
        return second_moment(h_flat).to(maps.val.device)
    return BandedMoment.from_inputs(h_flat, offsets)


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
    """The ``blocks``-block solution of :mod:`module docstring <symclone.distill._family_solve>` from the
    second moment ``Σ``: the Gram matrices come from :func:`pair_gram` (entry joins), the rest from
    :func:`family_blocks_from_grams`.

    Parameters
    ----------
    maps : the layer's basis maps; output rows in the order ``(field, orientation, pixel)``.
    sigma : ``E[x̃ x̃ᵀ]`` ``(I+1, I+1)`` float64, or its band (:func:`layer_moment`).
    blocks : ``B``.
    orientations : ``R`` (4 for C4-regular outputs, else 1).
    fields : output fields ``F`` (``out = F · R · pixels``).
    """
    P, R = maps.num_params, orientations
    if tuple(sigma.shape) != (maps.in_dim + 1, maps.in_dim + 1):
        raise ValueError(f"sigma: expected shape ({maps.in_dim + 1}, {maps.in_dim + 1}), got {tuple(sigma.shape)}")
    grams = [pair_gram(left, right, sigma, P, P) for left, right in _orientation_pairs(maps, R, fields)]
    return family_blocks_from_grams(maps, torch.stack(grams), blocks, R, fields)


def family_blocks_from_grams(maps: SparseAffineMaps, grams: torch.Tensor, blocks: int, orientations: int,
                             fields: int) -> FamilySolution:
    """The ``blocks``-block solution from the Gram matrices ``grams (R, P, P)`` (``G_00, G_01, …``; float64).

    ``G_00 = V diag(σ²) Vᵀ`` (descending): ``H = V_Bᵀ``, ``W̃_b = Σ_p V_pb T_p`` (``B < P``) or ``H = I``,
    ``W̃_b = T_b`` (``B ≥ P``), ``A_r = V_B diag(σ_B⁻²) V_Bᵀ G_0r``, relative error
    ``sqrt(Σ_{b>B} σ_b² / Σ σ_b²)``. Only the entries of orientation 0 are read from ``maps``.
    """
    P, out, R = maps.num_params, maps.out_dim, orientations
    _check_layout(out, fields, R)
    if tuple(grams.shape) != (R, P, P):
        raise ValueError(f"grams: expected shape ({R}, {P}, {P}), got {tuple(grams.shape)}")
    pix = out // (fields * R)
    O = out // R
    row = maps.row
    left = maps.entries(rows=_orientation_mask(out, pix, R, 0, row.device), key=_row_key(out, pix, R, row.device))
    grams = grams.to(device=row.device, dtype=torch.float64)
    G00 = 0.5 * (grams[0] + grams[0].T)
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
    A = [proj @ grams[r] for r in range(1, R)]
    bias = col == 0
    c = torch.zeros(blocks, O, dtype=torch.float64, device=row.device)
    c.index_put_((b[bias], o[bias]), val[bias], accumulate=True)
    Hf = torch.zeros(blocks, P, dtype=torch.float64, device=row.device)
    Hf[:H.shape[0]] = H
    A_t = torch.stack(A) if A else torch.zeros(0, P, P, dtype=torch.float64, device=row.device)
    w = ~bias
    return FamilySolution(b[w], o[w], col[w] - 1, val[w], c, Hf, A_t, sig.tolist(), pred)


def _check_layout(out: int, fields: int, R: int) -> None:
    if out % (fields * R):
        raise ValueError(f"fields, orientations: output size {out} is not divisible by {fields} x {R}")


def _orientation_mask(out: int, pix: int, R: int, r: int, device: torch.device) -> torch.Tensor:
    rows = torch.arange(out, device=device)
    return (rows // pix) % R == r


def _row_key(out: int, pix: int, R: int, device: torch.device) -> torch.Tensor:
    """Output row ``(field, r, pixel)`` -> its row ``(field, pixel)`` within one orientation."""
    rows = torch.arange(out, device=device)
    return (rows // (pix * R)) * pix + rows % pix
