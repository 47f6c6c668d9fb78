"""Learned / canonical samplers for O(3), SO(3), S_n × O(3) and SO(2) on point clouds.

Two frame constructions, both ``Q(h·x) = h Q(x)`` for every rotation/reflection ``h``:

* ``frame="vectors"`` (LPS; the default of *learned* samplers): a network predicts 3 equivariant
  vectors ``V(x + ε)`` and :func:`gram_schmidt` orthonormalises them (SO(3): proper frame).
* ``frame="principal"`` (the default of *canonical* samplers): ``Q = E(x) R(x)`` — ``E`` the principal
  axes of the cloud (:func:`principal_axes`: eigenvectors of its second moment, signed by its third
  moment), ``R`` an invariant rotation learned from the network's pooled invariant features (``R ≈ I``
  at initialisation). ``E`` is as well conditioned as a frame of a point cloud gets: it moves by
  (input perturbation)/(relative eigenvalue gap), and a sign changes only where a third moment is
  within rounding of zero.

Why canonical samplers use ``principal``: a canonical wrapper must be exact per call in the user's dtype.
Learned vectors are a cancellation ``Σ_i a(h_i) (x_i − x̄)`` of nearly equal coefficients (at
initialisation ~99.5 % of the node features' variation is ``|x_i − x̄|²``), so a float32 rounding of
the input is amplified 10³–10⁴× on the worst of 1,000 clouds. Measured worst relative equivariance
errors of float32 canonical wrappers (MLP backbone) over 1,000 random 5-point clouds: ``vectors`` in
float32 (the previous canonical frame) 1e-2 – 0.95, median 1.5e-4; ``vectors`` in float64 up to
1.4e-4; ``principal`` in float32 up to 0.5 (a score or sign within float32 rounding of a tie, 1 seed
of 5); ``principal`` in float64 ≤ 7e-6 over 20 seeds (``tests/test_symmetrize_exact.py``). So canonical
samplers compute the network, the scores and the frame in float64 (``frame_dtype``).

For ``sn x o3`` one network (:class:`PointNet`) also gives node scores (→ the permutation, as in
:class:`SnSampler`). SO(2) on 2D points: the same two constructions give an angle.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from ..groups import SO2, SO3, DirectProduct, Group, OrthogonalGroup3, RepLike, Sn, get_group, parse_rep  # noqa: F401 (SO2: doctests)
from ._base import GroupSample, Sampler, repeat_batch
from ._center import position_slice
from ._noise import add_noise
from ._perm import permutation_entropy, straight_through_permutation
from ._pointnet import PointNet, mlp

__all__ = ["gram_schmidt", "principal_axes", "point_features", "FrameSampler", "SO2Sampler", "frame_dtype_for",
           "FRAMES"]

#: frame constructions of :class:`FrameSampler` / :class:`SO2Sampler`
FRAMES = ("vectors", "principal")


def gram_schmidt(V: torch.Tensor, proper: bool = False, eps: Optional[float] = None) -> torch.Tensor:
    """Orthonormalise the vectors ``V`` (B, 3, 3) (rows = vectors) into ``Q`` (B, 3, 3) (columns).

    Math: ``q₁ = v₁/|v₁|``, ``q₂ = w/|w|`` with ``w = v₂ − (v₂·q₁) q₁`` (projected twice), and

        q₃ = s · (q₁ × q₂),   s = sign(det V) = sign(v₃ · (q₁ × q₂))   (``s = 1`` if ``proper``).

    This is the Gram–Schmidt frame of ``(v₁, v₂, v₃)`` (whose third column is ``± q₁ × q₂``), but
    computed stably: ``v₃`` only chooses a sign. Plain Gram–Schmidt divides by the distance of
    ``v₃`` from ``span(v₁, v₂)``, a quantity with density ~1 near 0, so that over many inputs the
    frame's rounding error grows like the condition number of ``V`` (measured up to 4e5 on the
    frame network); here it grows only with ``1/|v₁|`` and ``1/dist(v₂, ℝ v₁)``, whose small values
    are rarer (tails ``ε³``, ``ε²``). The sign is discontinuous only where ``det V = 0``.

    ``Q(V Hᵀ) = H Q(V)`` for orthogonal ``H`` (``q₁ × q₂`` is a pseudovector, ``det V`` a
    pseudoscalar: their product is a proper vector); with ``proper=True``, ``Q ∈ SO(3)`` (the Gram–
    Schmidt frame with its last column multiplied by ``det Q``). ``eps`` (default: the dtype's
    smallest normal number) only guards divisions by zero: a zero ``v₁`` or ``v₂ ∥ v₁`` gives zero
    columns instead of NaN.

    Examples
    --------
    >>> Q = gram_schmidt(torch.randn(4, 3, 3, dtype=torch.float64), proper=True)
    >>> torch.allclose(Q.transpose(1, 2) @ Q, torch.eye(3, dtype=torch.float64).expand(4, 3, 3))
    True
    >>> torch.allclose(torch.linalg.det(Q), torch.ones(4, dtype=torch.float64))
    True
    """
    if V.shape[-2:] != (3, 3):
        raise ValueError(f"V: expected three 3D vectors (..., 3, 3), got shape {tuple(V.shape)}")
    tiny = torch.finfo(V.dtype).tiny if eps is None else eps
    v1, v2, v3 = V[..., 0, :], V[..., 1, :], V[..., 2, :]
    q1 = v1 / v1.norm(dim=-1, keepdim=True).clamp_min(tiny)
    w = v2
    for _ in range(2):  # "twice is enough": the second projection removes the rounding of the first
        w = w - (w * q1).sum(-1, keepdim=True) * q1
    q2 = w / w.norm(dim=-1, keepdim=True).clamp_min(tiny)
    q3 = torch.linalg.cross(q1, q2, dim=-1)
    if not proper:
        s = (v3 * q3).sum(-1, keepdim=True)
        q3 = torch.where(s < 0, -q3, q3)
    return torch.stack([q1, q2, q3], dim=-1)


def principal_axes(u: torch.Tensor, proper: bool = False) -> torch.Tensor:
    """Principal axes ``E`` (B, d, d) (columns) of the vectors ``u`` (B, M, d), d = 2 or 3.

    Math: ``S = Σ_m u_m u_mᵀ``; ``e_j`` its eigenvectors by decreasing eigenvalue, each multiplied by
    ``sign(Σ_m (e_j·u_m)³)`` (``+1`` at 0). With ``proper=True`` the last column is replaced by
    ``e_1 × e_2`` (d = 3) or ``e_1`` turned by +90° (d = 2), so that ``E`` is a rotation.

    ``E(u Hᵀ) = H E(u)`` for orthogonal ``H`` (proper: for rotations ``H``): ``S`` becomes ``H S Hᵀ``
    and the third moments are invariant. ``E`` is defined where the eigenvalues are distinct and the
    third moments non-zero; near such points it moves by ~(perturbation of ``S``)/(eigenvalue gap)
    or flips a sign. Pass positions relative to their centroid.

    Examples
    --------
    >>> u = torch.randn(4, 6, 3, dtype=torch.float64)
    >>> H = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    >>> torch.allclose(principal_axes(u @ H.T), H @ principal_axes(u))
    True
    """
    if u.ndim != 3 or u.shape[-1] not in (2, 3):
        raise ValueError(f"u: expected vectors of shape (B, M, 2 or 3), got {tuple(u.shape)}")
    S = u.transpose(-1, -2) @ u
    _, E = torch.linalg.eigh(S)
    E = E.flip(-1)                                                    # decreasing eigenvalues
    skew = ((u @ E) ** 3).sum(dim=-2, keepdim=True)                  # (B, 1, d)
    E = torch.where(skew < 0, -E, E)
    if proper:
        e1 = E[..., 0]
        if u.shape[-1] == 3:
            last = torch.linalg.cross(e1, E[..., 1], dim=-1)
        else:
            last = torch.stack([-e1[..., 1], e1[..., 0]], dim=-1)
        E = torch.cat([E[..., :-1], last.unsqueeze(-1)], dim=-1)
    return E


@functools.lru_cache(maxsize=32)
def _off_diagonal(n: int, device: torch.device) -> torch.Tensor:
    """Flat indices ``i·n + j`` (long) of the ``n(n − 1)`` ordered pairs ``i ≠ j``, ``i``-major (cached)."""
    return torch.arange(n * n, device=device).view(n, n)[~torch.eye(n, dtype=torch.bool, device=device)]


def point_features(net, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``net.features(x)``: node features ``h`` (B, N, H) and vector channels ``u`` (B, N, C, d); for a
    :class:`PointNet` with the message network evaluated only on the ``N(N − 1)`` pairs ``i ≠ j``.

    :meth:`PointNet.features` computes the messages ``m_ij = MLP(e_ij)`` on all ``N²`` pairs and then
    masks the diagonal out of ``h_i``'s mean ``Σ_{j≠i} m_ij / (N − 1)``. Here the edge inputs ``e_ij`` are
    gathered (one ``index_select``) to the pairs ``i ≠ j`` first, so the MLP runs on ``N(N − 1)`` rows
    (20 instead of 25 per 5-body system) and the mask multiply disappears: the same messages bit for bit,
    the mean summed over 4 instead of 5 terms one of which is 0 (equal to rounding;
    ``tests/test_symmetrize_frames.py``). Any other network: its own ``features``.
    """
    if type(net) is not PointNet:
        return net.features(x)
    B, N, _ = x.shape
    u = torch.stack([x[..., s] for s in net.vec], dim=-2)                 # (B, N, C, d)
    gram = (u.unsqueeze(-2) * u.unsqueeze(-3)).sum(-1).flatten(-2)
    parts = [x[..., s] for s in net.sca] + [x[..., s].pow(2).sum(-1, keepdim=True) for s in net.oth]
    a = torch.cat(parts + [gram], dim=-1)                                  # (B, N, n_node)
    cross = torch.einsum("bicd,bjed->bijce", u, u).flatten(-2)             # u_{c,i}·u_{e,j}
    d2 = (u[:, :, None, 0] - u[:, None, :, 0]).pow(2).sum(-1, keepdim=True)
    e = torch.cat([cross, d2, a.unsqueeze(2).expand(-1, -1, N, -1), a.unsqueeze(1).expand(-1, N, -1, -1)], dim=-1)
    m = net.msg(e.view(B, N * N, -1).index_select(1, _off_diagonal(N, x.device)))   # (B, N(N−1), H)
    agg = m.view(B, N, N - 1, m.shape[-1]).sum(2) / max(N - 1, 1)
    return net.node(torch.cat([a, agg], dim=-1)), u


def frame_dtype_for(x: torch.Tensor, dtype: Optional[torch.dtype]) -> torch.dtype:
    """The dtype a frame network runs in for input ``x``: ``dtype`` (e.g. float64), or ``x``'s own
    dtype if ``dtype`` is None, lower than ``x``'s precision, or unsupported on ``x``'s device (MPS)."""
    if dtype is None or x.device.type == "mps" or torch.finfo(dtype).eps > torch.finfo(x.dtype).eps:
        return x.dtype
    return dtype


def _factors(group: Group):
    fs = group.factors if isinstance(group, DirectProduct) else (group,)
    sn = next((f for f in fs if isinstance(f, Sn)), None)
    rot = next((f for f in fs if isinstance(f, OrthogonalGroup3)), None)
    if rot is None or len(fs) != (2 if sn is not None else 1):
        raise ValueError(f"group: FrameSampler needs 'o3', 'so3', 'sn x o3' or 'sn x so3', got {group.name!r}")
    return sn, rot, fs


def _check_frame(frame: str, deterministic: bool) -> str:
    if frame == "default":
        return "principal" if deterministic else "vectors"
    if frame not in FRAMES:
        raise ValueError(f"frame: expected one of {FRAMES} or 'default', got {frame!r}")
    return frame


def _check_frame_dtype(frame_dtype, default: bool) -> Optional[torch.dtype]:
    """``frame_dtype`` validated; ``"default"``: float64 if ``default`` else None (the input's dtype)."""
    if isinstance(frame_dtype, str) and frame_dtype == "default":
        return torch.float64 if default else None
    if frame_dtype is None or (isinstance(frame_dtype, torch.dtype) and frame_dtype.is_floating_point):
        return frame_dtype
    raise ValueError(f"frame_dtype: expected a floating torch dtype, None or 'default', got {frame_dtype!r}")


class FrameSampler(Sampler):
    """O(3)/SO(3) (optionally × S_n) sampler from one equivariant point network.

    ``g = (p, Q)``: ``Q`` the frame of ``x + ε`` (module doc: ``vectors`` or ``principal``),
    ``p = argsort(scores(x + ε))`` for an ``sn`` factor.

    Parameters
    ----------
    group : ``"o3"``, ``"so3"``, ``"sn x o3"`` or ``"sn x so3"`` (a Group or name; ``n`` inferred).
    rep : input representation (``points`` or ``irreps`` with ``l <= 1`` and a ``1o`` block).
    net : optional :class:`PointNet`-like module with ``features``, ``scores`` (and ``vectors`` for
        ``frame="vectors"``; ``relative`` is used when present). The default :class:`PointNet` sees
        positions relative to their centroid.
    noise : Gaussian input-noise scale (0 and ``deterministic=True``: canonicalization).
    tau, sinkhorn_iters, entropy_weight : S_n straight-through settings (LPS n-body: 0.1, 20, 0.1).
    frame : ``"vectors"``, ``"principal"`` or ``"default"`` (``principal`` when ``deterministic``,
        else ``vectors``).
    frame_dtype : dtype the network, the scores and the frame are computed in; the elements are
        returned in the input's dtype. Default: float64 for a canonical (``deterministic``) sampler
        with the default network, else the input's dtype (a custom ``net`` must accept the dtype
        given). A canonical wrapper is exact per call, so its frame must add no rounding of its own:
        in float64 what remains is the input's own float32 rounding. A learned sampler is
        equivariant only in distribution, with a Monte-Carlo spread ~1e-2 that dwarfs float32
        rounding, and float64 would cost ~40 % of an n-body training step on CPU (k = 20), so it
        keeps the input's dtype. MPS (no float64) always keeps the input's dtype.

    Examples
    --------
    >>> smp = FrameSampler("sn x o3", "points", n=4, deterministic=True)
    >>> s = smp.sample(torch.randn(2, 4, 3), 1); s.g[0].shape, s.g[1].shape, s.g[1].dtype, smp.frame
    (torch.Size([2, 4]), torch.Size([2, 3, 3]), torch.float32, 'principal')
    """

    def __init__(self, group: str | Group, rep: RepLike, n: Optional[int] = None, net=None,
                 hidden: int = 32, noise: float = 0.1, tau: float = 0.1, sinkhorn_iters: int = 20,
                 entropy_weight: float = 0.1, deterministic: bool = False, frame: str = "default",
                 frame_dtype: Optional[torch.dtype] | str = "default"):
        super().__init__(get_group(group, n=n) if isinstance(group, str) else group)
        self.sn, self.rot, self.fs = _factors(self.group)
        self.rep = parse_rep(rep)
        self.frame = _check_frame(frame, deterministic)
        if net is None:
            net = PointNet(self.rep, hidden=hidden, n_vectors=3 if self.frame == "vectors" else 0,
                           relative=position_slice(self.rep) is not None)
        self.net = net
        # principal frames: the invariant rotation R = GS(I + MLP(mean_i h_i)) (module doc)
        self.rotation = mlp(_width(net), hidden, 9) if self.frame == "principal" else None
        self.frame_dtype = _check_frame_dtype(frame_dtype, default=deterministic and isinstance(net, PointNet))
        self.noise = 0.0 if deterministic else float(noise)
        if self.noise < 0:
            raise ValueError(f"noise: expected >= 0, got {noise}")
        self.tau, self.iters, self.entropy_weight = float(tau), int(sinkhorn_iters), float(entropy_weight)
        self.deterministic = bool(deterministic)
        self.exact, self.fixed_k = self.deterministic, (1 if deterministic else None)

    def frame_of(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The frame ``Q`` (B, 3, 3) from node features ``h`` and vector channels ``u`` (B, N, C, 3)."""
        proper = isinstance(self.rot, SO3)
        if self.frame == "vectors":
            return gram_schmidt(self.net.vectors(h, u), proper=proper)
        rel = getattr(self.net, "relative", lambda t: t)(u.to(h.dtype))
        E = principal_axes(rel.flatten(1, 2), proper=proper)
        M = torch.eye(3, dtype=h.dtype, device=h.device) + self.rotation(h.mean(dim=1)).view(-1, 3, 3)
        return E @ gram_schmidt(M, proper=True)

    def sample(self, x: torch.Tensor, k: int, generator: Optional[torch.Generator] = None) -> GroupSample:
        if x.ndim != 3:
            raise ValueError(f"x: expected points/irreps of shape (B, N, dim), got {tuple(x.shape)}")
        if self.sn is not None and self.sn.n is not None and x.shape[1] != self.sn.n:
            raise ValueError(f"x: group {self.group.name!r} permutes n={self.sn.n} points, got "
                             f"{x.shape[1]} (shape {tuple(x.shape)})")
        k = 1 if self.deterministic else int(k)
        xk = add_noise(repeat_batch(x, k), self.noise, "gaussian", generator)
        xk = xk.to(frame_dtype_for(x, self.frame_dtype))
        h, u = point_features(self.net, xk)
        Q = self.frame_of(h, u).to(x.dtype)
        if self.sn is None:
            return GroupSample(g=Q, k=k)
        p, P, P_soft = straight_through_permutation(self.net.scores(h), self.tau, self.iters)
        if self.entropy_weight:  # without gradients every P_soft is a hard matrix: the same entropy (≈ 0) each
            aux = self.entropy_weight * permutation_entropy(P_soft if P_soft.requires_grad else P_soft[:1])
        else:
            aux = x.new_zeros(())
        g = tuple(p if isinstance(f, Sn) else Q for f in self.fs)
        return GroupSample(g=g, k=k, aux_loss=aux.to(x.dtype), perm_matrix=P.to(x.dtype))

    def extra_repr(self) -> str:
        return f"group={self.group.name}, exact={self.exact}, frame={self.frame}, frame_dtype={self.frame_dtype}"


def _width(net) -> int:
    """Width of the node features ``h`` of a PointNet-like network."""
    head = getattr(net, "score_head", None)
    if head is None or not hasattr(head, "in_features"):
        raise ValueError("net: frame='principal' needs a PointNet-like net with a linear score_head "
                         "(its input width is the width of the node features)")
    return int(head.in_features)


class SO2Sampler(Sampler):
    """SO(2) on 2D points ``(B, N, 2)``: an angle ``θ`` with ``θ(R_φ·x) = θ(x) + φ``.

    ``frame="vectors"`` (learned default): ``θ = atan2(v_y, v_x)`` of one equivariant vector
    ``v = Σ_i a(h_i) (x_i − x̄)``. ``frame="principal"`` (canonical default): the angle of the signed
    principal axis ``e_1`` of the centred cloud (:func:`principal_axes`) plus an invariant angle
    ``atan2(m_2, 1 + m_1)``, ``m = MLP(mean_i h_i)``. Computed in ``frame_dtype`` (default as
    :class:`FrameSampler`: float64 when canonical, the input's dtype when learned). The points are
    always taken relative to their centroid: otherwise ``v ≈ ā Σ_i x_i`` for zero-mean clouds is the
    rounding residue of their mean (float32 canonical wrappers, 1,000 centred 6-point clouds: worst
    relative error 1.3e-3 – 3.3e-2).

    Examples
    --------
    >>> smp = SO2Sampler(deterministic=True); x = torch.randn(3, 6, 2, dtype=torch.float64)
    >>> smp = smp.double(); t = smp.sample(x, 1).g
    >>> R = SO2.matrix(torch.tensor(0.7, dtype=torch.float64))
    >>> bool(SO2().equal(smp.sample(x @ R.T, 1).g, (t + 0.7) % (2 * torch.pi), atol=1e-9))
    True
    """

    def __init__(self, hidden: int = 32, noise: float = 0.1, deterministic: bool = False,
                 frame: str = "default", frame_dtype: Optional[torch.dtype] | str = "default"):
        super().__init__(get_group("so2"))
        self.frame = _check_frame(frame, deterministic)
        self.net = PointNet("points", hidden=hidden, n_vectors=1 if self.frame == "vectors" else 0, dim=2,
                            relative=True)
        self.rotation = mlp(hidden, hidden, 2) if self.frame == "principal" else None
        self.frame_dtype = _check_frame_dtype(frame_dtype, default=deterministic)
        self.noise = 0.0 if deterministic else float(noise)
        if self.noise < 0:
            raise ValueError(f"noise: expected >= 0, got {noise}")
        self.deterministic = bool(deterministic)
        self.exact, self.fixed_k = self.deterministic, (1 if deterministic else None)

    def sample(self, x: torch.Tensor, k: int, generator: Optional[torch.Generator] = None) -> GroupSample:
        if x.ndim != 3 or x.shape[-1] != 2:
            raise ValueError(f"x: the learned so2 sampler needs 2D points (B, N, 2), got {tuple(x.shape)}")
        k = 1 if self.deterministic else int(k)
        xk = add_noise(repeat_batch(x, k), self.noise, "gaussian", generator)
        xk = xk.to(frame_dtype_for(x, self.frame_dtype))
        h, u = self.net.features(xk)
        if self.frame == "vectors":
            v = self.net.vectors(h, u)[:, 0]
            theta = torch.atan2(v[:, 1], v[:, 0])
        else:
            e1 = principal_axes(self.net.relative(u)[:, :, 0])[..., 0]
            m = self.rotation(h.mean(dim=1))
            theta = torch.atan2(e1[:, 1], e1[:, 0]) + torch.atan2(m[:, 1], 1.0 + m[:, 0])
        return GroupSample(g=torch.remainder(theta, 2 * torch.pi).to(x.dtype), k=k)

    def extra_repr(self) -> str:
        return f"group={self.group.name}, exact={self.exact}, frame={self.frame}, frame_dtype={self.frame_dtype}"
