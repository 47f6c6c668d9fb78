"""``gcnn_c4``: a p4 = C4 ⋉ T(2) group CNN built from escnn steerable convolutions.

Layer 1 lifts ``in_channels`` trivial fields to ``F_1`` C4 *regular* fields (4 orientation
channels each); layers 2..L map regular → regular. Every layer is ``ReLU(K(θ) ⋆ h + b)`` where the
filter bank ``K(θ) = Σ_i θ_i B_i`` is escnn's expansion of the free basis coefficients ``θ``
over the steerable kernel basis ``{B_i}`` (its ``BlocksBasisExpansion``), so that

    K(θ) ⋆ (g·h) = g·(K(θ) ⋆ h)    for every g ∈ p4 and every θ

(rotations rot90 + a cyclic shift of the orientation channels; translations exact thanks to
circular padding; the pointwise ReLU commutes with both). The free parameters drawn from
``N(0, init_std²)`` are the coefficients θ (paper: N(0, 1)).

Speed: the forward pass is one ``F.conv2d`` per layer with a cached expanded filter (the cache is
keyed on the parameter version and used whenever no gradient is needed), i.e. the cost of a plain
conv of the same width. Layers are built with ``recompute=True``: by default escnn shares one
basis module between all convs with the same basis (a global cache), so ``.double()`` on one
teacher would silently change the basis dtype of every other teacher. :meth:`GCNNC4Teacher.export` returns plain torch modules via escnn's
``export()`` with the circular padding that escnn drops restored (docs/design.md §10).

Examples
--------
>>> import torch
>>> t = GCNNC4Teacher(fields=2, depth=2, size=8)
>>> t.reps[0].kind, t.reps[1].kind, t.feature_shapes[1]
('image', 'regular', (8, 8, 8))
>>> x = torch.randn(1, 1, 8, 8)
>>> y, yr = t(x), t(torch.rot90(x, 1, dims=(-2, -1)))
>>> torch.allclose(yr, t.group.act(torch.tensor([1, 0, 0]), y, "regular"), atol=1e-5)
True
"""
from __future__ import annotations

import copy
from typing import Optional, Sequence

import torch
import torch.nn as nn

from symclone.dtypes import default_dtype
from symclone.groups import get_group
from symclone.registry import register_teacher

from ._conv import ConvTeacher, check_padding, check_size, check_widths, reps_of

__all__ = ["GCNNC4Teacher"]


@register_teacher("gcnn_c4")
class GCNNC4Teacher(ConvTeacher):
    """p4-equivariant group CNN (escnn ``R2Conv``: lifting, then regular → regular).

    Parameters
    ----------
    fields : regular fields per layer (int, or a sequence of per-layer counts); a layer with F
        fields has ``4F`` channels.
    depth : number of layers (ignored when ``fields`` is a sequence).
    kernel_size : odd filter size.
    size : square input size N (N×N).
    in_channels : trivial input channels.
    bias : per-field bias (appended to the flat layer parameters).
    init_std : std of the N(0, σ²) draw of the basis coefficients (paper: 1); ``None`` scales the
        coefficients so the expanded filter has He variance ``2 / fan_in``.
    num_classes : linear head on the mean and max of each field over space and orientations
        (p4-invariant).
    seed : seed of the initial coefficients.
    """

    padding = "circular"

    def __init__(self, fields: int | Sequence[int] = 4, depth: int = 2, kernel_size: int = 3,
                 size: int = 28, in_channels: int = 1, bias: bool = False, init_std: Optional[float] = 1.0,
                 num_classes: Optional[int] = None, seed: int = 0):
        super().__init__()
        from escnn import gspaces
        from escnn import nn as enn

        from symclone.validation import check_int
        nf = check_widths(fields, depth, "fields")
        check_int(in_channels, "in_channels", minimum=1)
        check_padding(self.padding, check_int(kernel_size, "kernel_size", minimum=1))
        N, _ = check_size(size, square=True, name="gcnn_c4")
        self.config = {"name": "gcnn_c4", "kwargs": dict(
            fields=list(fields) if not isinstance(fields, int) else fields, depth=depth,
            kernel_size=kernel_size, size=size if isinstance(size, int) else list(size),
            in_channels=in_channels, bias=bias, init_std=init_std, num_classes=num_classes, seed=seed)}
        self.bias, self.init_std = bias, init_std
        self.gspace = gspaces.rot2dOnR2(N=4)
        types = [enn.FieldType(self.gspace, [self.gspace.trivial_repr] * in_channels)]
        types += [enn.FieldType(self.gspace, [self.gspace.regular_repr] * f) for f in nf]
        self.field_types = types
        with default_dtype(torch.float32):  # escnn cannot build under float64 (docs/design.md §10)
            self.convs = nn.ModuleList(
                enn.R2Conv(types[i], types[i + 1], kernel_size, padding=kernel_size // 2,
                           padding_mode="circular", bias=bias, recompute=True) for i in range(len(nf)))
        gen = torch.Generator().manual_seed(seed)
        self._coef_std = []
        with torch.no_grad():
            for conv in self.convs:
                w = torch.randn(conv.weights.shape, generator=gen)
                std = self._he_scale(conv) if init_std is None else float(init_std)
                self._coef_std.append(std)
                conv.weights.copy_(w * std)
                if bias:
                    conv.bias.zero_()
        self.feature_shapes = [(in_channels, N, N)] + [(4 * f, N, N) for f in nf]
        self._ksizes = [kernel_size] * len(nf)
        self.group = get_group("p4", size=N)
        self.reps = reps_of(["image"] + ["regular"] * len(nf))
        self.head = nn.Linear(2 * nf[-1], num_classes) if num_classes else None
        self._cache: dict[int, tuple[tuple, torch.Tensor]] = {}

    @staticmethod
    def _he_scale(conv) -> float:
        """Coefficient std giving expanded filters of variance ``2 / fan_in`` (averaged over
        entries; ``E‖K(θ)‖² = Σ_i ‖B_i‖²`` estimated from 16 seeded draws)."""
        g = torch.Generator().manual_seed(1234)
        draws = torch.randn(16, conv.weights.numel(), generator=g)
        filt = torch.func.vmap(conv.basisexpansion)(draws)
        fan_in = conv.in_type.size * filt.shape[-1]
        return float((2.0 / fan_in / filt.pow(2).mean()).sqrt())

    # ---- parameters ----------------------------------------------------------------------
    def _init_std(self, l: int) -> float:
        return self._coef_std[l - 1]

    def _param_tensors(self, l: int) -> list[torch.Tensor]:
        conv = self.convs[l - 1]
        return [conv.weights] + ([conv.bias] if self.bias else [])

    def layer_params(self, l: int) -> torch.Tensor:
        """Flat ``[escnn basis coefficients, field biases]`` of layer ``l``."""
        self._check_layer(l)
        return torch.cat([t.reshape(-1) for t in self._param_tensors(l)])

    def _shape(self, l: int, filt: torch.Tensor) -> torch.Tensor:
        k = self._ksizes[l - 1]
        return filt.reshape(*filt.shape[:-1], k, k)

    def _kernel_from_params(self, l: int, params: torch.Tensor) -> torch.Tensor:
        conv = self.convs[l - 1]
        return self._shape(l, conv.basisexpansion(params[: conv.weights.numel()]))

    def _batched_kernels(self, l: int, params: torch.Tensor) -> torch.Tensor:
        conv = self.convs[l - 1]
        coef = params[:, : conv.weights.numel()]
        try:
            filt = torch.func.vmap(conv.basisexpansion)(coef)
        except Exception:  # pragma: no cover - escnn internals that do not vmap
            filt = torch.stack([conv.basisexpansion(c) for c in coef])
        return self._shape(l, filt)

    def _bias_from_params(self, l: int, params: torch.Tensor) -> Optional[torch.Tensor]:
        if not self.bias:
            return None
        conv = self.convs[l - 1]
        return conv.bias_expansion.to(params.dtype) @ params[conv.weights.numel():]

    def invalidate_cache(self) -> None:
        """Drop the cached expanded filters (call after changing ``convs[l].weights`` in place
        without bumping their version, e.g. through ``.data``; ``set_layer_params`` calls it)."""
        self._cache.clear()

    def _cached_kernel(self, l: int) -> torch.Tensor:
        w = self.convs[l - 1].weights
        if torch.is_grad_enabled() and w.requires_grad:
            return self.kernel(l)  # differentiable expansion (training)
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        hit = self._cache.get(l)
        if hit is None or hit[0] != key:
            with torch.no_grad():
                hit = (key, self.kernel(l))
            self._cache[l] = hit
        return hit[1]

    def train(self, mode: bool = True) -> "GCNNC4Teacher":
        """Set the mode; the escnn convs stay in training mode: ``R2Conv.eval()`` caches its filter as a
        buffer carrying the weights' autograd graph, which ``copy.deepcopy`` / ``AveragedModel`` reject.
        The forward expands filters itself (``_cached_kernel``), so the convs' mode changes nothing else."""
        if not isinstance(mode, bool):
            raise ValueError(f"mode: expected a bool, got {mode!r}")
        self.training = mode
        for name, child in self.named_children():
            child.train(True if name == "convs" else mode)
        return self

    def _apply(self, fn, *args, **kwargs) -> "GCNNC4Teacher":  # .double(), .to(device): drop cached filters
        self._cache = {}
        return super()._apply(fn, *args, **kwargs)

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        B = h.shape[0]
        hf = h.reshape(B, -1, 4 * h.shape[-2] * h.shape[-1])
        return torch.cat([hf.mean(dim=-1), hf.amax(dim=-1)], dim=-1)

    # ---- escnn views ------------------------------------------------------------------------
    def escnn_layer(self, l: int) -> nn.Module:
        """The escnn ``R2Conv`` of layer ``l`` (acts on ``escnn.nn.GeometricTensor``)."""
        return self.convs[self._check_layer(l) - 1]

    def export(self) -> nn.Sequential:
        """Plain-torch copy of the feature stack: escnn ``export()`` per layer, then the circular
        padding mode that escnn 1.0.11 silently drops is restored, each conv followed by ReLU."""
        mods: list[nn.Module] = []
        for conv in self.convs:
            plain = copy.deepcopy(conv).export()
            plain.padding_mode = "circular"
            py, px = plain.padding
            plain._reversed_padding_repeated_twice = [px, px, py, py]
            mods += [plain, nn.ReLU()]
        return nn.Sequential(*mods)
