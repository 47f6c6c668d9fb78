"""``e3nn``: an O(3)-equivariant message-passing network on point clouds / n-body systems.

Input ``x`` is either points ``(B, N, 3)`` (rep ``points``) or an n-body state ``(B, N, 7)`` =
``[position | velocity | charge]`` (rep ``irreps:1x1o+1x1o+1x0e``). Every hidden feature keeps
the positions in front, ``h = [p | s | v]`` with irreps ``1x1o + M x0e + V x1o``, so each layer is a
function of the previous feature alone. Layer ``l`` on a complete (or radius) graph:

    r_ij = p_j − p_i,   Y_ij = Y^{0..lmax}(r_ij / |r_ij|),   w_ij = MLP(RBF(|r_ij|))
    m_i  = (1/deg_i) Σ_{j ∈ N(i)} TP_{w_ij}(h_j ⊗ Y_ij) + Linear(h_i)
    h'_i = [p_i | Gate(m_i)]          (last layer: h'_i = m_i ∈ 1x1o, a vector per particle)

with e3nn ``FullyConnectedTensorProduct`` (weights from the radial MLP) and ``Gate`` (SiLU on
scalars, sigmoid gates on vectors). Each term is equivariant to rotations/reflections Q
(``Y(Qr) = D(Q) Y(r)``, distances invariant) and to permutations of the particles, so the
teacher's group is ``sn x o3``. Free parameters (radial MLP and linear weights) use e3nn's
``N(0, 1)`` parametrisation (normalisation is inside the forward pass), drawn with ``init_std``.

Examples
--------
>>> import torch
>>> t = E3NNTeacher(n_points=4, mul=2, depth=2)
>>> [tuple(f.shape) for f in t.forward_features(torch.randn(3, 4, 3))]
[(3, 4, 11), (3, 4, 3)]
>>> str(t.reps[1]), str(t.reps[2])
('irreps:1x1o+2x0e+2x1o', 'irreps:1x1o')
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

from symclone.groups import get_group, parse_rep
from symclone.layered import LayeredModule
from symclone.registry import register_teacher

__all__ = ["E3NNTeacher", "MessageLayer", "NBODY_IRREPS"]

NBODY_IRREPS = "1x1o+1x1o+1x0e"


class MessageLayer(nn.Module):
    """One equivariant message-passing layer (see the module docstring)."""

    def __init__(self, irreps_in: str, irreps_out: str, lmax: int, num_basis: int, radial_hidden: int,
                 max_radius: float, radius: Optional[float], gated: bool):
        super().__init__()
        from e3nn import nn as enn
        from e3nn import o3

        self.irreps_in = o3.Irreps(irreps_in)
        self.sh = o3.Irreps.spherical_harmonics(lmax)
        self.num_basis, self.max_radius, self.radius, self.gated = num_basis, max_radius, radius, gated
        target = o3.Irreps(irreps_out)
        if gated:
            scalars = o3.Irreps([(m, ir) for m, ir in target if ir.l == 0])
            gated_irreps = o3.Irreps([(m, ir) for m, ir in target if ir.l > 0])
            gates = o3.Irreps(f"{gated_irreps.num_irreps}x0e")
            self.gate = enn.Gate(scalars, [torch.nn.functional.silu], gates, [torch.sigmoid], gated_irreps)
            pre = self.gate.irreps_in
        else:
            self.gate, pre = None, target
        self.irreps_pre = pre
        self.irreps_out = target
        self.tp = o3.FullyConnectedTensorProduct(self.irreps_in, self.sh, pre, shared_weights=False,
                                                 internal_weights=False)
        self.radial = enn.FullyConnectedNet([num_basis, radial_hidden, self.tp.weight_numel],
                                            torch.nn.functional.silu)
        self.self_interaction = o3.Linear(self.irreps_in, pre)

    def forward(self, h: torch.Tensor, pre_activation: bool = False) -> torch.Tensor:
        """``h (B, N, d_in)`` (positions ``p = h[..., :3]``) -> ``[p | Gate(m)]`` ``(B, N, 3 + dim(irreps_out))``,
        or ``[p | m]`` with ``m`` in ``irreps_pre`` (gate scalars included) if ``pre_activation``; the
        ungated last layer returns ``m`` ``(B, N, 3)``."""
        from e3nn import o3
        from e3nn.math import soft_one_hot_linspace

        B, N, _ = h.shape
        pos = h[..., :3]
        rel = pos[:, None, :, :] - pos[:, :, None, :]  # rel[b, i, j] = p_j - p_i
        eye = torch.eye(N, dtype=torch.bool, device=h.device)
        dist = rel.norm(dim=-1)
        mask = ~eye[None]
        if self.radius is not None:
            mask = mask & (dist < self.radius)
        safe = torch.where(mask[..., None], rel, torch.ones_like(rel))  # no 0/0 on the diagonal
        Y = o3.spherical_harmonics(self.sh, safe, normalize=True, normalization="component")
        emb = soft_one_hot_linspace(dist, 0.0, self.max_radius, self.num_basis, basis="gaussian",
                                    cutoff=False) * math.sqrt(self.num_basis)
        w = self.radial(emb)
        hj = h[:, None, :, :].expand(B, N, N, h.shape[-1])
        msg = self.tp(hj, Y, w) * mask[..., None].to(h.dtype)
        deg = mask.sum(-1, keepdim=True).clamp(min=1).to(h.dtype)
        m = msg.sum(2) / deg + self.self_interaction(h)
        if self.gate is None:
            return m
        if pre_activation:
            return torch.cat([pos, m], dim=-1)
        return torch.cat([pos, self.gate(m)], dim=-1)


@register_teacher("e3nn")
class E3NNTeacher(LayeredModule):
    """O(3) × S_n-equivariant point-cloud / n-body teacher built from e3nn.

    ``forward(x)`` is the last feature: one vector (irreps ``1x1o``) per particle, ``(B, N, 3)``.

    Parameters
    ----------
    input : ``"points"`` ``(B, N, 3)`` or ``"nbody"`` ``(B, N, 7)`` = positions, velocities, charges.
    n_points : N.
    mul, mul_vec : scalar (0e) and vector (1o) channels of the hidden features (``mul_vec``
        defaults to ``mul``).
    depth : number of layers (hidden gated layers + one linear vector readout).
    lmax : max degree of the spherical-harmonic edge attributes.
    num_basis, radial_hidden, max_radius : Gaussian radial basis on ``[0, max_radius]`` and the
        radial MLP width.
    radius : ``None`` for a complete graph, else a radius graph ``|r_ij| < radius``.
    init_std : std of the N(0, σ²) init of all free parameters (e3nn parametrisation: 1).
    seed : seed of the initial parameters.
    """

    activation = "gate"
    head = None

    def __init__(self, input: str = "points", n_points: int = 5, mul: int = 8, mul_vec: Optional[int] = None,
                 depth: int = 3, lmax: int = 2, num_basis: int = 8, radial_hidden: int = 16,
                 max_radius: float = 4.0, radius: Optional[float] = None, init_std: float = 1.0, seed: int = 0):
        super().__init__()
        self.config = {"name": "e3nn", "kwargs": dict(
            input=input, n_points=n_points, mul=mul, mul_vec=mul_vec, depth=depth, lmax=lmax,
            num_basis=num_basis, radial_hidden=radial_hidden, max_radius=max_radius, radius=radius,
            init_std=init_std, seed=seed)}
        if input not in ("points", "nbody"):
            raise ValueError(f"input: expected 'points' (B, N, 3) or 'nbody' (B, N, 7), got {input!r}")
        if n_points < 2 or depth < 1 or mul < 1 or lmax < 0:
            raise ValueError(f"n_points/depth/mul/lmax: expected n_points >= 2, depth >= 1, mul >= 1, "
                             f"lmax >= 0, got {n_points}, {depth}, {mul}, {lmax}")
        if radius is not None and radius <= 0:
            raise ValueError(f"radius: expected a positive radius or None (complete graph), got {radius}")
        mv = mul if mul_vec is None else mul_vec
        self.input, self.n_points, self.init_std = input, n_points, float(init_std)
        in_irreps = "1x1o" if input == "points" else NBODY_IRREPS
        hidden = f"{mul}x0e+{mv}x1o"
        irreps = [in_irreps] + [f"1x1o+{hidden}"] * (depth - 1) + ["1x1o"]
        self.layers = nn.ModuleList(
            MessageLayer(irreps[i], hidden if i < depth - 1 else "1x1o", lmax, num_basis, radial_hidden,
                         max_radius, radius, gated=i < depth - 1) for i in range(depth))
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * self.init_std)
        self.reps = [parse_rep("points" if input == "points" else f"irreps:{in_irreps}")]
        self.reps += [parse_rep(f"irreps:{s}") for s in irreps[1:]]
        from e3nn import o3

        self.feature_shapes = [(n_points, 3 if input == "points" else 7)]
        self.feature_shapes += [(n_points, o3.Irreps(s).dim) for s in irreps[1:]]
        self.group = get_group("sn x o3", n=n_points)
        self._names = [[n for n, _ in layer.named_parameters()] for layer in self.layers]

    def _feature_description(self, l: int) -> str:
        if l > 1:
            return f"feature {l - 1}"
        return "points (B, N, 3)" if self.input == "points" else \
            "n-body states (B, N, 7) = [position, velocity, charge]"

    # ---- parameters ----------------------------------------------------------------------
    def layer_params(self, l: int) -> torch.Tensor:
        """All free parameters of layer ``l`` (radial MLP, linear), flattened in name order."""
        return torch.cat([p.reshape(-1) for p in self.layers[self._check_layer(l) - 1].parameters()])

    def num_layer_params(self, l: int) -> int:
        """``P_l``, the number of free parameters of layer ``l`` (radial MLP and linear weights)."""
        return sum(p.numel() for p in self.layers[self._check_layer(l) - 1].parameters())

    def sample_params(self, l: int, k: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``k`` draws ``(k, P_l)`` of layer ``l``'s free parameters from the init ``N(0, init_std²)``."""
        p = self.layer_params(l)
        return torch.randn(k, p.numel(), generator=generator, dtype=p.dtype) * self.init_std

    def _unflatten(self, l: int, params: torch.Tensor) -> dict[str, torch.Tensor]:
        layer = self.layers[l - 1]
        shapes = [p.shape for p in layer.parameters()]
        chunks = torch.split(params, [s.numel() for s in shapes])
        return {n: c.reshape(s) for n, c, s in zip(self._names[l - 1], chunks, shapes)}

    def set_layer_params(self, l: int, params: torch.Tensor) -> None:
        """Copy a flat parameter vector ``(P_l,)`` (the layout of ``layer_params(l)``) into layer ``l``
        (in place, no grad)."""
        params = self._check_params(self._check_layer(l), params, batched=False)
        with torch.no_grad():
            for p, v in zip(self.layers[l - 1].parameters(), self._unflatten(l, params).values()):
                p.copy_(v)

    # ---- forward ---------------------------------------------------------------------------
    def layer_forward(self, l: int, h: torch.Tensor, params: Optional[torch.Tensor] = None,
                      pre_activation: bool = False) -> torch.Tensor:
        """Layer ``l`` applied to feature ``l-1``; with ``params`` ``(P_l,)`` or ``(K, P_l)`` the
        layer runs functionally (``torch.func.functional_call``); batched output ``(K, B, N, d)``."""
        self._check_layer(l)
        layer = self.layers[l - 1]
        if params is None:
            self._check_feature(l, h)
            own = self.layer_params(l)
            if h.is_floating_point() and own.dtype != h.dtype:  # e.g. a float64 check of a float32 teacher
                params = own.detach().to(h.dtype)
            else:
                return layer(h, pre_activation)
        params = self._check_params(l, params)
        batched = params.ndim == 2
        self._check_feature(l, h, lead_dims=2 if batched else 1)
        # e3nn keeps float buffers (Wigner 3j constants): cast them along when the dtype differs
        bufs = {n: b.to(h.dtype) for n, b in layer.named_buffers()
                if b.is_floating_point() and h.is_floating_point() and b.dtype != h.dtype}
        call = lambda p, x: torch.func.functional_call(  # noqa: E731
            layer, {**self._unflatten(l, p.to(x.dtype) if x.is_floating_point() else p), **bufs},
            (x, pre_activation))
        if not batched:
            return call(params, h)
        self._check_batch(l, h, params.shape[0])
        hs = h if h.ndim == 4 else h.unsqueeze(0).expand(params.shape[0], *h.shape)
        return torch.stack([call(p, x) for p, x in zip(params, hs)])
