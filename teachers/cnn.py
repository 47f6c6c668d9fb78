"""``cnn``: a plain Conv2d + ReLU stack, exactly equivariant to cyclic translations T(2).

Layer ``l``: ``f_l(h) = ReLU(k_l ⋆ h + b_l)`` with a ``C_l × C_{l-1} × k × k`` kernel. With circular
padding ``roll_t(f(h)) = f(roll_t(h))`` for every shift ``t`` (exact). The free parameters of a
layer are the raw kernel entries (then the bias, if ``bias=True``), drawn ``N(0, init_std²)``;
``init_std=None`` selects He init ``sqrt(2 / fan_in)`` (for training).

``paper_layer=True`` is the layer of *Symmetry From Scratch*: one 3×3 valid conv, 1 → 1 channel,
no bias, 28×28 → 26×26, kernel ~ N(0, 1).

Examples
--------
>>> import torch
>>> t = CNNTeacher(channels=4, depth=2, size=8)
>>> [tuple(f.shape) for f in t.forward_features(torch.randn(2, 1, 8, 8))]
[(2, 4, 8, 8), (2, 4, 8, 8)]
>>> CNNTeacher(paper_layer=True).feature_shapes
[(1, 28, 28), (1, 26, 26)]
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn

from symclone.groups import get_group
from symclone.registry import register_teacher

from ._conv import ConvTeacher, check_padding, check_size, check_widths, reps_of

__all__ = ["CNNTeacher"]


@register_teacher("cnn")
class CNNTeacher(ConvTeacher):
    """Translation-equivariant CNN teacher.

    Parameters
    ----------
    channels : int or sequence of per-layer output channels.
    depth : number of conv layers (ignored when ``channels`` is a sequence).
    kernel_size : odd for circular padding.
    padding : ``"circular"`` (exact T(2)) or ``"valid"`` (shrinks by ``k-1``; equivariant only
        away from the border).
    bias : add a per-channel bias (appended to the flat layer parameters).
    size : input ``H`` or ``(H, W)``.
    in_channels : input channels.
    init_std : std of the N(0, σ²) init of kernels (paper: 1); ``None`` = He init.
    num_classes : attach a linear head on the spatial mean and max of the last feature (T(2)-invariant).
    paper_layer : the paper's single 3×3 valid 1→1 conv (overrides the shape options).
    seed : initial parameters are drawn from ``torch.Generator().manual_seed(seed)``.
    """

    def __init__(self, channels: int | Sequence[int] = 8, depth: int = 2, kernel_size: int = 3,
                 padding: str = "circular", bias: bool = False, size: int | Sequence[int] = 28,
                 in_channels: int = 1, init_std: Optional[float] = 1.0, num_classes: Optional[int] = None,
                 paper_layer: bool = False, seed: int = 0):
        super().__init__()
        from symclone.validation import check_int
        chans = check_widths(channels, depth, "channels")
        check_int(kernel_size, "kernel_size", minimum=1)
        check_int(in_channels, "in_channels", minimum=1)
        H, W = check_size(size, square=False, name="cnn")
        self.config = {"name": "cnn", "kwargs": dict(
            channels=list(channels) if not isinstance(channels, int) else channels, depth=depth,
            kernel_size=kernel_size, padding=padding, bias=bias,
            size=list(size) if not isinstance(size, int) else size, in_channels=in_channels,
            init_std=init_std, num_classes=num_classes, paper_layer=paper_layer, seed=seed)}
        if paper_layer:
            channels, depth, kernel_size, padding, bias, in_channels = [1], 1, 3, "valid", False, 1
            chans = [1]
        self.padding = check_padding(padding, kernel_size)
        self.init_std = init_std
        self.bias = bias
        gen = torch.Generator().manual_seed(seed)
        shapes = [(in_channels, H, W)]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList() if bias else None
        for c in chans:
            cin, h, w = shapes[-1]
            if self.padding == "valid":
                h, w = h - kernel_size + 1, w - kernel_size + 1
                if min(h, w) < 1:
                    raise ValueError(f"size: {size} is too small for {len(chans)} valid {kernel_size}x"
                                     f"{kernel_size} convs")
            shapes.append((c, h, w))
            std = self._std_for(cin * kernel_size ** 2)
            self.weights.append(nn.Parameter(torch.randn(c, cin, kernel_size, kernel_size, generator=gen) * std))
            if bias:
                self.biases.append(nn.Parameter(torch.zeros(c)))
        self.feature_shapes = shapes
        self._ksizes = [kernel_size] * len(chans)
        self.group = get_group("t2", size=(H, W))
        self.reps = reps_of(["image"] * len(shapes))
        self.head = nn.Linear(2 * chans[-1], num_classes) if num_classes else None

    def _std_for(self, fan_in: int) -> float:
        return math.sqrt(2.0 / fan_in) if self.init_std is None else float(self.init_std)

    def _init_std(self, l: int) -> float:
        w = self.weights[l - 1]
        return self._std_for(w[0].numel())

    def _param_tensors(self, l: int) -> list[torch.Tensor]:
        return [self.weights[l - 1]] + ([self.biases[l - 1]] if self.bias else [])

    def layer_params(self, l: int) -> torch.Tensor:
        """Flat ``[kernel.ravel(), bias]`` of layer ``l`` (differentiable w.r.t. the module)."""
        self._check_layer(l)
        return torch.cat([t.reshape(-1) for t in self._param_tensors(l)])

    def _kernel_from_params(self, l: int, params: torch.Tensor) -> torch.Tensor:
        shape = self.weights[l - 1].shape
        return params[: shape.numel()].reshape(shape)

    def _batched_kernels(self, l: int, params: torch.Tensor) -> torch.Tensor:
        shape = self.weights[l - 1].shape
        return params[:, : shape.numel()].reshape(-1, *shape)

    def _bias_from_params(self, l: int, params: torch.Tensor) -> Optional[torch.Tensor]:
        if not self.bias:
            return None
        return params[self.weights[l - 1].numel():]

    def _cached_kernel(self, l: int) -> torch.Tensor:
        return self.weights[l - 1]

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([h.mean(dim=(-2, -1)), h.amax(dim=(-2, -1))], dim=-1)
