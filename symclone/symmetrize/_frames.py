"""Learned / canonical samplers for O(3), SO(3), S_n × O(3) and SO(2) from equivariant vectors.

``g = GS(V(x + ε))``: a network predicts 3 O(3)-equivariant vectors ``V`` (columns), Gram–Schmidt
orthonormalises them into ``Q`` with ``Q(h·x) = h Q(x)``; for SO(3) the last column is multiplied by
``det Q``. For ``sn x o3`` one network (:class:`PointNet`) has two heads: node scores (→ the
permutation, as in :class:`SnSampler`) and vectors (→ ``Q``). SO(2) on 2D points: one vector
``v`` → angle ``atan2(v_y, v_x)``.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..groups import DirectProduct, Group, RepLike, get_group, parse_rep
from ..groups._planar import SO2
from ..groups._spatial import SO3, Sn
from ._base import GroupSample, Sampler, repeat_batch
from ._noise import add_noise
from ._perm import permutation_entropy, straight_through_permutation
from ._pointnet import PointNet

__all__ = ["gram_schmidt", "FrameSampler", "SO2Sampler"]


def gram_schmidt(V: torch.Tensor, proper: bool = False, eps: float = 1e-9) -> torch.Tensor:
    """Orthonormalise the vectors ``V`` (B, 3, 3) (rows = vectors) into ``Q`` (B, 3, 3) (columns).

    ``Q(V Hᵀ) = H Q(V)`` for orthogonal ``H``; with ``proper=True`` the last column is flipped by
    ``det Q`` so that ``Q ∈ SO(3)``.

    >>> Q = gram_schmidt(torch.randn(4, 3, 3, dtype=torch.float64), proper=True)
    >>> torch.allclose(Q.transpose(1, 2) @ Q, torch.eye(3, dtype=torch.float64).expand(4, 3, 3))
    True
    >>> torch.allclose(torch.linalg.det(Q), torch.ones(4, dtype=torch.float64))
    True
    """
    cols = []
    for i in range(V.shape[-2]):
        v = V[..., i, :]
        for u in cols:
            v = v - (v * u).sum(-1, keepdim=True) * u
        cols.append(v / v.norm(dim=-1, keepdim=True).clamp_min(eps))
    Q = torch.stack(cols, dim=-1)
    if proper:
        det = torch.linalg.det(Q).sign()
        Q = torch.cat([Q[..., :-1], Q[..., -1:] * det[..., None, None]], dim=-1)
    return Q


def _factors(group: Group):
    fs = group.factors if isinstance(group, DirectProduct) else (group,)
    sn = next((f for f in fs if isinstance(f, Sn)), None)
    rot = next((f for f in fs if isinstance(f, SO3)), None)
    if rot is None or len(fs) != (2 if sn is not None else 1):
        raise ValueError(f"group: FrameSampler needs 'o3', 'so3', 'sn x o3' or 'sn x so3', got {group.name!r}")
    return sn, rot, fs


class FrameSampler(Sampler):
    """O(3)/SO(3) (optionally × S_n) sampler from one equivariant point network.

    Parameters
    ----------
    group : ``"o3"``, ``"so3"``, ``"sn x o3"`` or ``"sn x so3"`` (a Group or name; ``n`` inferred).
    rep : input representation (``points`` or ``irreps`` with ``l <= 1`` and a ``1o`` block).
    net : optional :class:`PointNet`-like module with ``features``, ``scores``, ``vectors``.
    noise : Gaussian input-noise scale (0 and ``deterministic=True``: canonicalization).
    tau, sinkhorn_iters, entropy_weight : S_n straight-through settings (LPS n-body: 0.1, 20, 0.1).

    >>> smp = FrameSampler("sn x o3", "points", n=4, deterministic=True)
    >>> s = smp.sample(torch.randn(2, 4, 3), 1); s.g[0].shape, s.g[1].shape
    (torch.Size([2, 4]), torch.Size([2, 3, 3]))
    """

    def __init__(self, group: str | Group, rep: RepLike, n: Optional[int] = None, net=None,
                 hidden: int = 32, noise: float = 0.1, tau: float = 0.1, sinkhorn_iters: int = 20,
                 entropy_weight: float = 0.1, deterministic: bool = False):
        super().__init__(get_group(group, n=n) if isinstance(group, str) else group)
        self.sn, self.rot, self.fs = _factors(self.group)
        self.rep = parse_rep(rep)
        self.net = net if net is not None else PointNet(self.rep, hidden=hidden, n_vectors=3)
        self.noise = 0.0 if deterministic else float(noise)
        if self.noise < 0:
            raise ValueError(f"noise: expected >= 0, got {noise}")
        self.tau, self.iters, self.entropy_weight = float(tau), int(sinkhorn_iters), float(entropy_weight)
        self.deterministic = bool(deterministic)
        self.exact, self.fixed_k = self.deterministic, (1 if deterministic else None)

    def sample(self, x: torch.Tensor, k: int, generator: Optional[torch.Generator] = None) -> GroupSample:
        if x.ndim != 3:
            raise ValueError(f"x: expected points/irreps of shape (B, N, dim), got {tuple(x.shape)}")
        if self.sn is not None and self.sn.n is not None and x.shape[1] != self.sn.n:
            raise ValueError(f"x: group {self.group.name!r} permutes n={self.sn.n} points, got "
                             f"{x.shape[1]} (shape {tuple(x.shape)})")
        k = 1 if self.deterministic else int(k)
        xk = add_noise(repeat_batch(x, k), self.noise, "gaussian", generator)
        h, u = self.net.features(xk)
        Q = gram_schmidt(self.net.vectors(h, u), proper=self.rot.name == "so3")
        if self.sn is None:
            return GroupSample(g=Q, k=k)
        p, P, P_soft = straight_through_permutation(self.net.scores(h), self.tau, self.iters)
        aux = self.entropy_weight * permutation_entropy(P_soft) if self.entropy_weight else x.new_zeros(())
        g = tuple(p if isinstance(f, Sn) else Q for f in self.fs)
        return GroupSample(g=g, k=k, aux_loss=aux, perm_matrix=P)


class SO2Sampler(Sampler):
    """SO(2) on 2D points ``(B, N, 2)``: angle of one equivariant vector ``Σ_i a(h_i) x_i``.

    >>> smp = SO2Sampler(deterministic=True); x = torch.randn(3, 6, 2, dtype=torch.float64)
    >>> smp = smp.double(); t = smp.sample(x, 1).g
    >>> R = SO2.matrix(torch.tensor(0.7, dtype=torch.float64))
    >>> bool(SO2().equal(smp.sample(x @ R.T, 1).g, (t + 0.7) % (2 * torch.pi), atol=1e-9))
    True
    """

    def __init__(self, hidden: int = 32, noise: float = 0.1, deterministic: bool = False):
        super().__init__(get_group("so2"))
        self.net = PointNet("points", hidden=hidden, n_vectors=1, dim=2)
        self.noise = 0.0 if deterministic else float(noise)
        self.deterministic = bool(deterministic)
        self.exact, self.fixed_k = self.deterministic, (1 if deterministic else None)

    def sample(self, x: torch.Tensor, k: int, generator: Optional[torch.Generator] = None) -> GroupSample:
        if x.ndim != 3 or x.shape[-1] != 2:
            raise ValueError(f"x: the learned so2 sampler needs 2D points (B, N, 2), got {tuple(x.shape)}")
        k = 1 if self.deterministic else int(k)
        xk = add_noise(repeat_batch(x, k), self.noise, "gaussian", generator)
        v = self.net.vectors(*self.net.features(xk))[:, 0]
        theta = torch.remainder(torch.atan2(v[:, 1], v[:, 0]), 2 * torch.pi)
        return GroupSample(g=theta, k=k)
