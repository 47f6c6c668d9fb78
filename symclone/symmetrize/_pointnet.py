"""A small O(3)-invariant, S_n-equivariant message-passing network on point sets.

Input: points ``(B, N, 3)`` or low-order irreps ``(B, N, dim)`` (``l <= 1``; e.g. the n-body
packing ``1x1o+1x1o+1x0e``). The ``1o`` blocks are vector channels ``u_c`` (c = 1..C), the ``0e``
blocks scalars. Node invariants: scalars, the Gram matrix ``u_c·u_d`` of the node's vectors, norms
of any other blocks; edge invariants: ``u_{c,i}·u_{d,j}`` and ``|u_{1,i} − u_{1,j}|²``. One round of
messages ``h_i = MLP([a_i, Σ_j φ(e_ij, a_i, a_j)])`` gives node features ``h`` (B, N, H) that are
invariant under O(3) and permute with the nodes. Two heads read them out:

* ``scores(h) -> (B, N)``: S_n-equivariant, O(3)-invariant;
* ``vectors(h, u) -> (B, m, 3)``: ``V_m = Σ_i Σ_c a_{mc}(h_i) u_{c,i}`` — O(3)-equivariant
  (proper vectors) and S_n-invariant.

With ``relative=True`` the position channel (``u_1``: the points, or the first ``1o`` block of irreps
that start with one) enters ``V`` relative to its centroid, ``Σ_i a_i (x_i − x̄)``: the same function
as the plain head on centred input, but the centring's float32 residue (``x̄ ≈ 1e-8·|x|``) no longer
enters ``V`` multiplied by the mean coefficient ``ā``, which at initialisation is ~100× the
coefficients' variation over the points (measured: the dominant float32 error of the frames).
``n_vectors=0`` builds no vector head (networks that only need ``features`` and ``scores``).

Every layer computes in the dtype of its input (weights are cast on use), so a float32 network can
be evaluated in float64 without a copy.

Examples
--------
>>> net = PointNet("irreps:1x1o+1x1o+1x0e", n_vectors=3)
>>> x = torch.randn(2, 5, 7); h, u = net.features(x)
>>> net.scores(h).shape, net.vectors(h, u).shape
(torch.Size([2, 5]), torch.Size([2, 3, 3]))
>>> net.vectors(*net.features(x.double())).dtype
torch.float64
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..groups import RepLike, irreps_blocks, parse_rep

__all__ = ["PointNet", "CastLinear", "split_irreps", "mlp"]


def split_irreps(rep: RepLike, dim: int = 3) -> tuple[list[slice], list[slice], list[slice]]:
    """``(vector_slices, scalar_slices, other_slices)`` of the last axis for ``rep``.

    Vector slices are the ``1o`` copies (points: the whole axis); scalars the ``0e`` copies;
    others (``0o``, ``1e``) enter only through their squares / norms.
    """
    rep = parse_rep(rep)
    if rep.kind == "points":
        return [slice(0, dim)], [], []
    if rep.kind != "irreps":
        raise ValueError(f"rep: the point network needs rep 'points' or 'irreps:...', got {rep}")
    blocks = irreps_blocks(rep.irreps)
    if any(l > 1 for _, _, l, _ in blocks):
        raise ValueError(f"rep: the learned O(3) sampler supports irreps with l <= 1, got {rep.irreps!r}")
    vec, sca, oth = [], [], []
    for start, mul, l, p in blocks:
        size = 1 if l == 0 else 3
        for c in range(mul):
            s = slice(start + c * size, start + (c + 1) * size)
            (vec if (l, p) == (1, -1) else sca if (l, p) == (0, 1) else oth).append(s)
    if not vec:
        raise ValueError(f"rep: a frame needs at least one 1o (vector) block, got {rep.irreps!r}")
    return vec, sca, oth


class CastLinear(nn.Linear):
    """``nn.Linear`` computing in the dtype of its input (weight and bias cast on use).

    Same parameters and state-dict keys as ``nn.Linear``; gradients reach the stored parameters
    through the cast.

    Examples
    --------
    >>> CastLinear(3, 2)(torch.randn(4, 3, dtype=torch.float64)).dtype
    torch.float64
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), b)


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """Three :class:`CastLinear` layers with SiLU (computes in the input's dtype)."""
    return nn.Sequential(CastLinear(n_in, hidden), nn.SiLU(), CastLinear(hidden, hidden), nn.SiLU(),
                         CastLinear(hidden, n_out))


class PointNet(nn.Module):
    """O(3)-invariant node features with a score head and a vector head (see module doc).

    Parameters
    ----------
    rep : ``points`` or ``irreps:...`` with ``l <= 1`` and at least one ``1o`` block.
    hidden : width of the message, node and head MLPs.
    n_vectors : number ``m`` of output vectors.
    dim : dimension of the points (3; 2 for SO(2) samplers).
    relative : the position channel enters the vectors relative to its centroid (module doc);
        needs positions (rep ``points`` or irreps whose first block is ``1o``).
    """

    def __init__(self, rep: RepLike, hidden: int = 32, n_vectors: int = 3, dim: int = 3,
                 relative: bool = False):
        super().__init__()
        rep = parse_rep(rep)
        self.vec, self.sca, self.oth = split_irreps(rep, dim)
        C, S, O = len(self.vec), len(self.sca), len(self.oth)
        n_node = S + O + C * C
        n_edge = C * C + 1
        self.n_vectors, self.C = n_vectors, C
        self.position_channel: Optional[int] = None
        if relative:
            if rep.kind != "points" and self.vec[0].start != 0:
                raise ValueError(f"relative: rep {rep} carries no positions (expected 'points' or irreps "
                                 "whose first block is 1o)")
            self.position_channel = 0
        if isinstance(n_vectors, bool) or not isinstance(n_vectors, int) or n_vectors < 0:
            raise ValueError(f"n_vectors: expected an integer >= 0, got {n_vectors!r}")
        self.msg = mlp(n_edge + 2 * n_node, hidden, hidden)
        self.node = mlp(n_node + hidden, hidden, hidden)
        self.score_head = CastLinear(hidden, 1)
        self.vec_head = mlp(hidden, hidden, n_vectors * C) if n_vectors else None

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Node features and vector channels of ``x`` (B, N, dim), computed in ``x.dtype``.

        Returns
        -------
        h : (B, N, H) node features, O(3)-invariant and permuting with the nodes.
        u : (B, N, C, d) the ``C`` vector channels of every node (the ``1o`` blocks, or the points).
        """
        u = torch.stack([x[..., s] for s in self.vec], dim=-2)               # (B, N, C, 3)
        gram = (u.unsqueeze(-2) * u.unsqueeze(-3)).sum(-1).flatten(-2)       # (B, N, C*C)
        parts = [x[..., s] for s in self.sca] + [x[..., s].pow(2).sum(-1, keepdim=True) for s in self.oth]
        a = torch.cat(parts + [gram], dim=-1)                                  # (B, N, n_node)
        N = x.shape[1]
        cross = torch.einsum("bicd,bjed->bijce", u, u).flatten(-2)            # u_{c,i}·u_{e,j}
        d2 = (u[:, :, None, 0] - u[:, None, :, 0]).pow(2).sum(-1, keepdim=True)
        e = torch.cat([cross, d2, a.unsqueeze(2).expand(-1, -1, N, -1),
                       a.unsqueeze(1).expand(-1, N, -1, -1)], dim=-1)
        m = self.msg(e)
        off = 1.0 - torch.eye(N, dtype=x.dtype, device=x.device)
        agg = (m * off[None, :, :, None]).sum(2) / max(N - 1, 1)
        h = self.node(torch.cat([a, agg], dim=-1))
        return h, u

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        """Node scores ``(B, N)`` from node features ``h`` (B, N, H): S_n-equivariant, O(3)-invariant."""
        return self.score_head(h).squeeze(-1)

    def relative(self, u: torch.Tensor) -> torch.Tensor:
        """``u`` (B, N, C, d) with the position channel replaced by ``x_i − x̄`` (unchanged if none)."""
        p = self.position_channel
        if p is None:
            return u
        pos = u[:, :, p:p + 1]
        return torch.cat([u[:, :, :p], pos - pos.mean(dim=1, keepdim=True), u[:, :, p + 1:]], dim=2)

    def vectors(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``(B, m, d)`` equivariant vectors ``V_m = Σ_i Σ_c a_{mc}(h_i) u_{c,i}`` (see module doc)."""
        if self.vec_head is None:
            raise ValueError("n_vectors: this PointNet was built without a vector head (n_vectors=0)")
        a = self.vec_head(h).view(*h.shape[:2], self.n_vectors, self.C)     # (B, N, m, C)
        return torch.einsum("bnmc,bncd->bmd", a, self.relative(u.to(h.dtype)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, N)`` (usable as ``SnSampler`` score network)."""
        return self.scores(self.features(x)[0])
