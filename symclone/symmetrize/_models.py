"""Transformers over particles for n-body prediction (not O(3)-equivariant; wrap in ``Symmetrized``).

:class:`ParticleTransformer` — ``y_i = p_i + W_out · Enc(W_in x_i)_i`` with a pre-LN
``nn.TransformerEncoder`` over the ``N`` particle tokens (no positional embedding). Input ``x``
(B, N, in_dim) whose first 3 entries are the positions ``p``.

:class:`PairTransformer` — the same pre-LN transformer with Graphormer-style *pair features*: for
every ordered pair the raw (not rotation-invariant) vector ``e_ij = [x_i − x_j, ‖p_i − p_j‖]`` (all
input channels differenced, plus the distance) enters each layer as a per-head attention bias and an
additive value term,

    a_ij = softmax_j( q_i·k_j / √d + b_l(e_ij) ),    h_i ← h_i + Σ_j a_ij (W_v h_j + W_e,l(e_ij)),

so that pairwise interactions (the physics of a charged n-body system) need not be recovered from
absolute token positions. Both models are permutation-equivariant but not rotation-equivariant: wrap
them in :class:`Symmetrized` with group ``sn x o3`` to make them O(3)-equivariant.

Examples
--------
>>> m = ParticleTransformer(in_dim=7, dim=16, depth=1, heads=2)
>>> m(torch.randn(2, 5, 7)).shape
torch.Size([2, 5, 3])
>>> PairTransformer(in_dim=7, dim=16, depth=1, heads=2)(torch.randn(2, 5, 7)).shape
torch.Size([2, 5, 3])
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ParticleTransformer", "PairTransformer"]


def _check_input(x: torch.Tensor, in_dim: int) -> None:
    if x.ndim != 3 or x.shape[-1] != in_dim:
        raise ValueError(f"x: expected (B, N, {in_dim}), got {tuple(x.shape)}")


class _ParticleModel(nn.Module):
    """Shared input embedding, final norm and read-out ``y = p + head(norm(h))`` (``residual``)."""

    def _init_io(self, in_dim: int, out_dim: int, dim: int, heads: int, residual: bool, **config) -> None:
        if dim % heads:
            raise ValueError(f"dim/heads: dim={dim} must be divisible by heads={heads}")
        self.config = dict(in_dim=in_dim, out_dim=out_dim, dim=dim, heads=heads, residual=residual, **config)
        self.embed = nn.Linear(in_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_dim)
        self.in_dim, self.out_dim, self.residual = in_dim, out_dim, residual

    def _readout(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        h = self.head(self.norm(h))
        return x[..., :self.out_dim] + h if self.residual else h


class ParticleTransformer(_ParticleModel):
    """Transformer over particles predicting positions as ``p + Δ`` (see module doc)."""

    def __init__(self, in_dim: int = 7, out_dim: int = 3, dim: int = 64, depth: int = 4, heads: int = 4,
                 mlp_ratio: int = 2, dropout: float = 0.0, residual: bool = True):
        super().__init__()
        self._init_io(in_dim, out_dim, dim, heads, residual, depth=depth, mlp_ratio=mlp_ratio, dropout=dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, mlp_ratio * dim, dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.in_dim)
        return self._readout(x, self.encoder(self.embed(x)))


class _EdgeMessages(nn.Module):
    """MPNN-style messages ``Σ_{j≠i} W_2 σ(A h_i + B h_j + C e_ij)``: a one-hidden-layer MLP on ``[h_i, h_j, e_ij]``
    (its first layer split into per-token and per-pair parts, so it costs one pair-sized matmul per layer)."""

    def __init__(self, dim: int, pair_dim: int):
        super().__init__()
        self.receiver, self.sender = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False)
        self.edge, self.out = nn.Linear(pair_dim, dim, bias=False), nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
        N = h.shape[1]
        hidden = self.receiver(h).unsqueeze(2) + self.sender(h).unsqueeze(1) + self.edge(pair)   # (B, N, N, D)
        off_diagonal = ~torch.eye(N, dtype=torch.bool, device=h.device)
        return self.out((torch.nn.functional.gelu(hidden) * off_diagonal[..., None]).sum(2))


class _PairBlock(nn.Module):
    """One pre-LN block with pair-biased attention and edge-conditioned values (module doc)."""

    def __init__(self, dim: int, heads: int, pair_dim: int, mlp_ratio: int, dropout: float = 0.0,
                 edge_messages: bool = False):
        super().__init__()
        self.ln_edge = nn.LayerNorm(dim) if edge_messages else None
        self.edges = _EdgeMessages(dim, pair_dim) if edge_messages else None
        self.heads, self.hd = heads, dim // heads
        self.drop = nn.Dropout(dropout)
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.bias = nn.Linear(pair_dim, heads)
        self.edge_value = nn.Linear(pair_dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, h: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
        B, N, D = h.shape
        q, k, v = self.qkv(self.ln1(h)).view(B, N, 3, self.heads, self.hd).unbind(2)   # (B, N, H, hd)
        logits = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(self.hd)
        logits = logits + self.bias(pair).permute(0, 3, 1, 2)                          # (B, H, N, N)
        att = logits.softmax(-1)
        ev = self.edge_value(pair).view(B, N, N, self.heads, self.hd)                 # (B, N, N, H, hd)
        out = torch.einsum("bhij,bjhd->bihd", att, v) + torch.einsum("bhij,bijhd->bihd", att, ev)
        h = h + self.drop(self.proj(out.reshape(B, N, D)))
        if self.edges is not None:
            h = h + self.drop(self.edges(self.ln_edge(h), pair))
        return h + self.drop(self.mlp(self.ln2(h)))


class PairTransformer(_ParticleModel):
    """Transformer over particles with pair features in every layer, predicting ``p + Δ`` (module doc).

    Parameters
    ----------
    in_dim, out_dim : per-particle input / output sizes (the first ``out_dim`` inputs are the positions
        the residual adds to when ``residual``).
    dim, depth, heads, mlp_ratio : width, number of blocks, attention heads, MLP expansion.
    pair_hidden : width of the shared pair-feature MLP applied to ``e_ij`` before the per-layer maps.
    dropout : dropout on each block's attention and MLP outputs (training only).
    center : the token embedding sees positions relative to the system's mean position, so ``Δ`` is
        invariant to translations of the system (the pair features already are).
    velocity_step : predict ``p + τ v + Δ`` with a learned scalar ``τ`` (initialised to 1, the time between
        input and target frames of the n-body task), i.e. ``Δ`` is the residual over a constant-velocity
        step; needs the velocities at inputs ``out_dim … 2 out_dim − 1``.
    charge_pairs : append the charge product ``q_i q_j`` and the clipped pair force
        ``q_i q_j (p_i − p_j) / ‖p_i − p_j‖³`` (components clipped to ±100, as in the simulator) to ``e_ij``;
        needs the charge as the last input. Both transform like the positions they are made of, so the
        model's symmetry is unchanged.
    charge_flip_invariant : make ``Δ`` exactly invariant to flipping the sign of every charge (a symmetry of
        Coulomb dynamics, whose forces depend on ``q_i q_j`` only): the token embedding gets ``|q_i|`` instead of
        ``q_i`` and the pair vector ``|q_i − q_j|`` instead of ``q_i − q_j``; with ``charge_pairs`` the sign
        information left is the flip-invariant ``q_i q_j``.
    galilean : exact Galilean equivariance ``f(p, v + u, q) = f(p, v, q) + T u`` for a common velocity ``u``
        (a symmetry of any dynamics whose forces depend on position differences only, as the n-body
        simulator's): the blocks see the velocities relative to their mean ``v̄`` and the prediction is
        ``p + T v̄ [+ τ (v − v̄)] + Δ``, with ``T = frame_time``. Needs the velocities at inputs
        ``out_dim … 2 out_dim − 1``; with ``center`` as well, ``Δ`` sees the system in its centre-of-mass frame.
    frame_time : the time ``T`` between the input and the output frame (``1.0`` for the n-body task: 1,000
        simulator steps of ``1e-3``), used by ``galilean``.
    encounter : append the straight-line encounter of each pair over the output horizon ``T = frame_time``
        (relative motion ``r(t) = r + t w``, ``r = p_i − p_j``, ``w = v_i − v_j``): ``log ‖r‖``, the radial
        velocity ``r·w / ‖r‖``, ``‖w‖``, the time of closest approach ``t* = clamp(−r·w / ‖w‖², 0, T) / T``,
        ``log ‖r(t*)‖`` and the closest-approach vector ``r(t*)``. Close encounters dominate the n-body error
        (the closest 5 % of test systems hold most of the MSE), and these resolve their geometry, which the
        pair MLP would otherwise have to compute from raw differences. Needs the velocities at inputs
        ``out_dim … 2 out_dim − 1``; the scalars are invariant and ``r(t*)`` transforms like a position.
    edge_messages : every block also adds MPNN-style messages ``Σ_{j≠i} W₂ GELU(A h_i + B h_j + C e_ij)`` (a
        nonlinear function of both tokens and their pair, as in a message-passing GNN) after its attention.
    refine : iterative position refinement (EGNN-like coordinate updates): every block but the last reads
        out an estimate ``p̂_l = p [+ τ v] + W_l LN(h)`` of the output positions, and the next block's pair
        features are ``E(e_ij) + E'(e_ij(p̂_l))``, the second term computed from the pair vector with the
        positions replaced by ``p̂_l`` (a second pair MLP ``E'`` shared across blocks). The read-outs ``W_l``
        start at zero, so an untrained model sees the pair features of ``p [+ τ v]``. Costs one pair MLP
        per extra block; the symmetry is unchanged (``p̂_l`` transforms like ``p``).

    Examples
    --------
    >>> m = PairTransformer(dim=16, depth=1, heads=2, center=True, velocity_step=True, charge_pairs=True)
    >>> x = torch.randn(2, 5, 7)
    >>> shift = torch.tensor([1.0, -2.0, 0.5, 0, 0, 0, 0])
    >>> torch.allclose(m(x + shift), m(x) + shift[:3], atol=1e-5)   # translation-equivariant when centred
    True
    >>> g = PairTransformer(dim=16, depth=1, heads=2, galilean=True)
    >>> boost = torch.tensor([0, 0, 0, 0.3, -0.1, 0.2, 0])
    >>> torch.allclose(g(x + boost), g(x) + boost[3:6], atol=1e-5)   # Galilean-equivariant (T = 1)
    True
    >>> PairTransformer(dim=16, depth=2, heads=2, refine=True)(x).shape
    torch.Size([2, 5, 3])
    """

    def __init__(self, in_dim: int = 7, out_dim: int = 3, dim: int = 64, depth: int = 4, heads: int = 4,
                 mlp_ratio: int = 2, pair_hidden: int = 32, residual: bool = True, dropout: float = 0.0,
                 center: bool = False, velocity_step: bool = False, charge_pairs: bool = False,
                 charge_flip_invariant: bool = False, refine: bool = False, galilean: bool = False,
                 frame_time: float = 1.0, edge_messages: bool = False, encounter: bool = False):
        super().__init__()
        if galilean and (not residual or in_dim < 2 * out_dim):
            raise ValueError(f"galilean: needs residual=True and in_dim >= 2 * out_dim = {2 * out_dim} "
                             f"(positions then velocities), got residual={residual}, in_dim={in_dim}")
        if encounter and in_dim < 2 * out_dim:
            raise ValueError(f"encounter: needs in_dim >= 2 * out_dim = {2 * out_dim} (positions then velocities), "
                             f"got in_dim={in_dim}")
        if velocity_step and (not residual or in_dim < 2 * out_dim):
            raise ValueError(f"velocity_step: needs residual=True and in_dim >= 2 * out_dim = {2 * out_dim} "
                             f"(positions then velocities), got residual={residual}, in_dim={in_dim}")
        if (charge_pairs or charge_flip_invariant) and in_dim < out_dim + 1:
            raise ValueError(f"charge_pairs: needs the charge as the last of in_dim > out_dim inputs, got in_dim={in_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
        self._init_io(in_dim, out_dim, dim, heads, residual, depth=depth, mlp_ratio=mlp_ratio,
                      pair_hidden=pair_hidden, dropout=dropout, center=center, velocity_step=velocity_step,
                      charge_pairs=charge_pairs, charge_flip_invariant=charge_flip_invariant, refine=refine,
                      galilean=galilean, frame_time=frame_time, edge_messages=edge_messages,
                      encounter=encounter)
        self.galilean, self.frame_time = galilean, float(frame_time)
        self.center, self.charge_pairs, self.flip_invariant = center, charge_pairs, charge_flip_invariant
        self.encounter = encounter
        pair_in = in_dim + 1 + (1 + out_dim if charge_pairs else 0) + (5 + out_dim if encounter else 0)
        pair_mlp = lambda: nn.Sequential(nn.Linear(pair_in, pair_hidden), nn.GELU(),
                                         nn.Linear(pair_hidden, pair_hidden))
        self.pair_embed = pair_mlp()
        self.blocks = nn.ModuleList(_PairBlock(dim, heads, pair_hidden, mlp_ratio, dropout, edge_messages)
                                    for _ in range(depth))
        self.tau = nn.Parameter(torch.ones(())) if velocity_step else None
        self.refine_embed = pair_mlp() if refine and depth > 1 else None
        self.refine_heads = nn.ModuleList(nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, out_dim))
                                          for _ in range(depth - 1)) if self.refine_embed is not None else None
        for head in self.refine_heads or ():
            nn.init.zeros_(head[1].weight)
            nn.init.zeros_(head[1].bias)

    def _pair_features(self, x: torch.Tensor) -> torch.Tensor:
        diff = x.unsqueeze(2) - x.unsqueeze(1)                                           # (B, N, N, in)
        dist = diff[..., :self.out_dim].norm(dim=-1, keepdim=True)
        if self.flip_invariant:
            diff = torch.cat([diff[..., :-1], diff[..., -1:].abs()], -1)
        feats = [diff, dist]
        if self.charge_pairs:
            qq = (x[..., -1:].unsqueeze(2) * x[..., -1:].unsqueeze(1))                   # (B, N, N, 1)
            cube = torch.where(dist > 0, dist.pow(3), torch.ones_like(dist))             # i == j: force 0
            force = (qq * diff[..., :self.out_dim] / cube).clamp(-100.0, 100.0)
            feats += [qq, force]
        if self.encounter:
            feats += self._encounter_features(diff[..., :self.out_dim], diff[..., self.out_dim:2 * self.out_dim], dist)
        return torch.cat(feats, -1)

    def _encounter_features(self, r: torch.Tensor, w: torch.Tensor, dist: torch.Tensor) -> list[torch.Tensor]:
        """The straight-line encounter of every pair (``encounter``); zero on the diagonal."""
        T, tiny = self.frame_time, 1e-6
        speed = w.norm(dim=-1, keepdim=True)
        rw = (r * w).sum(-1, keepdim=True)
        t_close = (-rw / speed.pow(2).clamp_min(tiny)).clamp(0.0, T)
        closest = r + t_close * w
        off = (dist > 0).to(r.dtype)
        log = lambda d: torch.log(d.clamp_min(tiny)) * off
        return [log(dist), rw / dist.clamp_min(tiny) * off, speed, t_close / T, log(closest.norm(dim=-1, keepdim=True)),
                closest]

    def _velocities(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(v − v̄, v̄)`` with ``galilean``, else ``(v, 0)``."""
        v = x[..., self.out_dim:2 * self.out_dim]
        if not self.galilean:
            return v, torch.zeros_like(v[:, :1])
        mean = v.mean(1, keepdim=True)
        return v - mean, mean

    def _drift(self, x: torch.Tensor) -> torch.Tensor:
        """``p + T v̄ + τ (v − v̄)`` (terms present as ``galilean`` / ``velocity_step`` say): what the
        read-outs add their ``Δ`` to."""
        p = x[..., :self.out_dim]
        if self.tau is None and not self.galilean:
            return p
        v_rel, v_mean = self._velocities(x)
        drift = p + self.frame_time * v_mean if self.galilean else p
        return drift if self.tau is None else drift + self.tau * v_rel

    def _refined_pairs(self, x: torch.Tensor, pair0: torch.Tensor, h: torch.Tensor, step: int) -> torch.Tensor:
        """Pair features for block ``step + 1``: the input's plus those of the estimated positions ``p̂``."""
        p_hat = self._drift(x) + self.refine_heads[step](h)
        x_hat = torch.cat([p_hat, x[..., self.out_dim:]], -1)
        return pair0 + self.refine_embed(self._pair_features(x_hat))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.in_dim)
        pair = pair0 = self.pair_embed(self._pair_features(x))
        tokens = torch.cat([x[..., :-1], x[..., -1:].abs()], -1) if self.flip_invariant else x
        if self.center:
            p = x[..., :self.out_dim]
            tokens = torch.cat([p - p.mean(1, keepdim=True), tokens[..., self.out_dim:]], -1)
        if self.galilean:
            o = self.out_dim
            tokens = torch.cat([tokens[..., :o], self._velocities(x)[0], tokens[..., 2 * o:]], -1)
        h = self.embed(tokens)
        for step, blk in enumerate(self.blocks):
            if step and self.refine_embed is not None:
                pair = self._refined_pairs(x, pair0, h, step - 1)
            h = blk(h, pair)
        y = self._readout(x, h)                 # p + Δ, then the drift terms (the float order of _drift differs)
        if self.galilean or self.tau is not None:
            v_rel, v_mean = self._velocities(x)
            y = y + self.frame_time * v_mean if self.galilean else y
            y = y if self.tau is None else y + self.tau * v_rel
        return y
