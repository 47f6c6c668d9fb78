"""Learned / canonical samplers for C4 and p4 on images.

Two score networks (``C4Sampler(net=...)``):

* ``"orbit"`` (the default of the *canonical* c4 sampler): :class:`C4OrbitScores`, the logits
  ``ℓ_r = s(h_r⁻¹·P(x))`` of the input's four rotations under one plain MLP ``s`` after an exactly
  rotation-commuting max pooling ``P``; ``ℓ(h·x)`` is ``ℓ(x)`` rolled by ``h`` bit for bit, at a few
  percent of the escnn network's cost.
* ``"escnn"`` (the default of learned samplers and of p4): the p4-equivariant escnn network below.

An escnn network maps the image to one C4 *regular* field ``L`` (B, 4, H, W) with circular
padding, so ``L(h·x) = h·L(x)`` for every ``h ∈ p4``.

* ``c4``: logits ``ℓ_r = mean_{y,x} L[r, y, x]`` (4 orientations) — ``ℓ(h·x)`` is ``ℓ(x)`` rolled by
  ``h``, so ``g = argmax(ℓ + Gumbel)`` satisfies ``p(h g | h·x) = p(g | x)``.
* ``p4``: the ``4·H·W`` entries of ``L`` are logits over the group itself: entry ``i`` stands for the
  unique element ``φ(i)`` with ``φ(i)·δ₀ = δ_i`` (``δ₀`` the one-hot regular field at orientation 0,
  pixel (0, 0); the action is free and transitive, so ``φ`` is a bijection and
  ``φ(h·i) = h φ(i)``).

Gradient: straight-through one-hot weights over 4 candidates (the 4 orientations; for p4 at the
sampled pixel), ``w = onehot + softmax(ℓ/T) − stopgrad(softmax(ℓ/T))``, so that
``g⁻¹·x = Σ_m w_m c_m⁻¹·x`` exactly in the forward pass.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..groups import C4, P4, Group, get_group
from ._base import GroupSample, Sampler, repeat_batch
from ..dtypes import default_dtype
from ._noise import add_noise
from ._scorenets import C4OrbitScores

__all__ = ["C4Net", "C4Sampler", "gumbel", "NETS"]

#: score networks of :class:`C4Sampler`
NETS = ("orbit", "escnn")


def gumbel(shape, like: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Standard Gumbel noise ``−log(−log U)``."""
    u = torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
    return -torch.log(-torch.log(u.clamp(1e-12, 1 - 1e-12)))


class C4Net(nn.Module):
    """escnn p4-equivariant CNN: ``in_channels`` trivial (or regular) fields → 1 regular field.

    Examples
    --------
    >>> net = C4Net(in_channels=1, hidden=2)
    >>> x = torch.randn(1, 1, 8, 8); L = net(x)
    >>> torch.allclose(net(torch.rot90(x, 1, (-2, -1))), C4().act(torch.tensor(1), L, "regular"), atol=1e-5)
    True
    """

    def __init__(self, in_channels: int = 1, hidden: int = 8, layers: int = 2, kernel_size: int = 5,
                 regular_input: bool = False):
        super().__init__()
        from escnn import gspaces, nn as enn
        with default_dtype(torch.float32):
            gs = gspaces.rot2dOnR2(N=4)
            if regular_input:
                if in_channels % 4:
                    raise ValueError(f"in_channels: regular input needs a multiple of 4, got {in_channels}")
                self.in_type = enn.FieldType(gs, [gs.regular_repr] * (in_channels // 4))
            else:
                self.in_type = enn.FieldType(gs, [gs.trivial_repr] * in_channels)
            mods, t = [], self.in_type
            for i in range(layers):
                last = i == layers - 1
                out = enn.FieldType(gs, [gs.regular_repr] * (1 if last else hidden))
                mods.append(enn.R2Conv(t, out, kernel_size, padding=kernel_size // 2,
                                       padding_mode="circular", recompute=True))
                if not last:
                    mods.append(enn.ReLU(out))
                t = out
            self.net = enn.SequentialModule(*mods)

    def train(self, mode: bool = True) -> "C4Net":
        """Set the mode; the escnn convolutions stay in training mode.

        escnn's ``R2Conv.eval()`` caches the expanded filter as a *buffer* that still carries the
        autograd graph of the weights: the module then cannot be deep-copied (nor wrapped by
        ``AveragedModel``), its ``state_dict`` gains ``filter`` keys that a training-mode twin rejects,
        and a later ``.double()`` or weight update leaves the cache stale. The convolutions have no
        mode-dependent layers, so expanding the filter at every call (a small matmul) computes the same
        function without that state.
        """
        if not isinstance(mode, bool):
            raise ValueError(f"mode: expected a bool, got {mode!r}")
        self.training = mode
        self.net.train(True)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # imported here rather than kept on the module: a module object as an attribute makes
        # copy.deepcopy (and AveragedModel, which deep-copies) fail with "cannot pickle 'module'"
        from escnn.nn import GeometricTensor
        return self.net(GeometricTensor(x, self.in_type)).tensor


class C4Sampler(Sampler):
    """C4 or p4 sampler (learned with Gumbel + straight-through, or canonical argmax).

    Parameters
    ----------
    group : ``"c4"`` or ``"p4"`` (a p4 group needs ``size``).
    in_channels : image channels (rep ``image``) or regular channels (rep ``regular``).
    noise : Gaussian input-noise scale; temperature ``T`` of the straight-through softmax.
    deterministic : canonicalization (argmax, no noise, k = 1).
    net : ``"orbit"`` (:class:`C4OrbitScores`; c4 only) or ``"escnn"`` (:class:`C4Net`); default
        ``"orbit"`` for the canonical c4 sampler, ``"escnn"`` otherwise (learned samplers, p4).
    hidden : hidden units of the orbit MLP (default 32) or regular fields of the escnn network (default 8).
    layers, kernel_size : depth (default 2) and filter size (default 5) of the escnn network.
    grid : side of the max-pooled grid the orbit MLP reads (default 7).

    Examples
    --------
    >>> smp = C4Sampler("c4", in_channels=1, hidden=2, deterministic=True)
    >>> x = torch.randn(2, 1, 8, 8); g = smp.sample(x, 1).g
    >>> torch.equal(smp.sample(torch.rot90(x, 1, (-2, -1)), 1).g, (g + 1) % 4)
    True
    >>> type(smp.net).__name__, type(C4Sampler("c4", hidden=2, layers=2).net).__name__
    ('C4OrbitScores', 'C4Net')
    """

    def __init__(self, group: str | Group = "c4", in_channels: int = 1, hidden: Optional[int] = None,
                 layers: Optional[int] = None, kernel_size: Optional[int] = None, noise: float = 0.0,
                 temperature: float = 1.0, deterministic: bool = False, regular_input: bool = False, size=None,
                 net: Optional[str] = None, grid: Optional[int] = None):
        super().__init__(get_group(group, size=size) if isinstance(group, str) else group)
        if not isinstance(self.group, (C4, P4)):
            raise ValueError(f"group: C4Sampler needs 'c4' or 'p4', got {self.group.name!r}")
        if net is None:
            net = "orbit" if deterministic and isinstance(self.group, C4) else "escnn"
        if net not in NETS:
            raise ValueError(f"net: expected one of {NETS}, got {net!r}")
        self.net_kind = net
        if net == "orbit":
            if not isinstance(self.group, C4):
                raise ValueError("net: the orbit scores give C4 logits; p4 needs net='escnn' (logits over its "
                                 "4·N² elements)")
            if layers is not None or kernel_size is not None:
                raise ValueError("layers, kernel_size: options of net='escnn'; the orbit scores take hidden and grid")
            self.net = C4OrbitScores(in_channels, 32 if hidden is None else hidden, 7 if grid is None else grid,
                                     regular_input)
        else:
            if grid is not None:
                raise ValueError("grid: an option of net='orbit'")
            hidden, layers = 8 if hidden is None else hidden, 2 if layers is None else layers
            kernel_size = 5 if kernel_size is None else kernel_size
            self._check_escnn_layers(layers)
            self.net = C4Net(in_channels, hidden, layers, kernel_size, regular_input)
        self.noise = 0.0 if deterministic else float(noise)
        self.temperature = float(temperature)
        self.deterministic = bool(deterministic)
        self.exact, self.fixed_k = self.deterministic, (1 if deterministic else None)
        self._table: Optional[torch.Tensor] = None

    @property
    def in_size(self) -> int:
        """Channels the score network reads."""
        return self.net.in_channels if self.net_kind == "orbit" else self.net.in_type.size

    def _check_escnn_layers(self, layers: int) -> None:
        if isinstance(self.group, C4) and int(layers) < 2:
            # the c4 logits average the regular field over the image; after one (linear) convolution
            # that average is (Σ K_r)·(Σ x) with Σ K_r the same for every rotated filter: four equal
            # logits, and the argmax would be decided by rounding
            raise ValueError(f"layers: the c4 sampler needs >= 2 layers (one convolution gives four equal "
                             f"logits), got {layers}")

    def _p4_table(self, H: int) -> torch.Tensor:
        """``φ``: flat index (orientation-major) -> p4 element ``(k, dy, dx)``."""
        if self._table is None or self._table.shape[0] != 4 * H * H:
            G = P4(H)
            els = G.elements()
            delta = torch.zeros(len(els), 4, H, H)
            delta[:, 0, 0, 0] = 1.0
            idx = G.act(els, delta, "regular").flatten(1).argmax(1)
            table = torch.empty_like(els)
            table[idx] = els
            self._table = table
        return self._table

    def sample(self, x: torch.Tensor, k: int, generator: Optional[torch.Generator] = None) -> GroupSample:
        if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
            raise ValueError(f"x: expected square images (B, C, H, W), got {tuple(getattr(x, 'shape', ()))}")
        if x.shape[1] != self.in_size:
            raise ValueError(f"x: the sampler network expects {self.in_size} channels, got {x.shape[1]}")
        k = 1 if self.deterministic else int(k)
        xk = add_noise(x if k == 1 else repeat_batch(x, k), self.noise, "gaussian", generator)
        n = xk.shape[0]
        if self.net_kind == "orbit":
            logits = self.net(xk)                                              # (kB, 4)
        else:
            L = self.net(xk)                                                   # (kB, 4, H, W)
        if isinstance(self.group, C4):
            if self.net_kind != "orbit":
                logits = L.mean(dim=(-2, -1))
            if not self.deterministic:
                logits = logits + gumbel(logits.shape, logits, generator)
            r = logits.argmax(-1)
            cands = torch.arange(4, device=x.device).expand(n, 4)
            g = r
        else:
            flat = L.flatten(1)
            if not self.deterministic:
                flat = flat + gumbel(flat.shape, flat, generator)
            idx = flat.argmax(-1)
            HW = L.shape[-1] * L.shape[-2]
            pos, r = idx % HW, idx // HW
            logits = flat.view(n, 4, HW).gather(2, pos.view(n, 1, 1).expand(n, 4, 1)).squeeze(-1)
            table = self._p4_table(L.shape[-1]).to(x.device)
            cands = table[torch.arange(4, device=x.device)[None, :] * HW + pos[:, None]]  # (n, 4, 3)
            g = table[idx]
        soft = torch.softmax(logits / self.temperature, dim=-1)
        w = torch.nn.functional.one_hot(r, 4).to(soft.dtype) + (soft - soft.detach())
        return GroupSample(g=g, k=k, candidate_weights=w, candidates=cands)
