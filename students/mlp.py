"""``mlp``: one dense block per teacher layer, ``f_l(h) = σ_l(W_l vec(h) + b_l)``.

``W_l`` is ``(out_dim, in_dim)`` with the teacher's flattened feature sizes; nothing ties its
entries together, so the student is equivariant only if it learns to be. ``dense_matrix(l)``
returns ``W_l`` (PyTorch ``Linear`` convention, ``C, H, W`` flattened row-major).

Examples
--------
>>> import torch
>>> s = MLPStudent(feature_shapes=[[1, 4, 4], [2, 4, 4]], reps=["image", "image"])
>>> [tuple(f.shape) for f in s.forward_features(torch.randn(3, 1, 4, 4))]
[(3, 2, 4, 4)]
>>> s.dense_matrix(1).shape
torch.Size([32, 16])
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from symclone.registry import register_student

from ._base import StudentBase

__all__ = ["MLPStudent"]


@register_student("mlp")
class MLPStudent(StudentBase):
    """Dense student sized to a teacher's features.

    Parameters
    ----------
    feature_shapes : per-sample feature shapes, input first (``L + 1`` entries).
    reps : representation names, input first (copied from the teacher).
    activations : per-layer pointwise nonlinearity (``"relu"``, ``"identity"``, ``"silu"``, ...).
    bias : learn a bias per layer.
    seed : initialisation seed (``None``: torch's global RNG).
    teacher : build the layout from this teacher instead (``like``).
    """

    def __init__(self, feature_shapes: Optional[Sequence[Sequence[int]]] = None,
                 reps: Optional[Sequence[str]] = None, activations: Optional[Sequence[str]] = None,
                 bias: bool = True, seed: Optional[int] = 0, teacher: Any = None):
        super().__init__()
        self._init_layout(feature_shapes, reps, activations, teacher)
        self.config = {"name": "mlp", "kwargs": dict(
            feature_shapes=[list(s) for s in self.feature_shapes], reps=[str(r) for r in self.reps],
            activations=list(self.activations), bias=bias, seed=seed)}
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.layers = nn.ModuleList()
        for l in range(1, self.num_layers + 1):
            lin = nn.Linear(self.in_dim(l), self.out_dim(l), bias=bias)
            bound = 1.0 / math.sqrt(self.in_dim(l))
            with torch.no_grad():
                torch.rand(lin.weight.shape, generator=gen, out=lin.weight.data).mul_(2).mul_(bound).sub_(bound)
                if bias:
                    lin.bias.copy_(torch.rand(lin.bias.shape, generator=gen) * 2 * bound - bound)
            self.layers.append(lin)

    @classmethod
    def like(cls, teacher: Any, **kwargs: Any) -> "MLPStudent":
        """An MLP student with ``teacher``'s feature layout and nonlinearities."""
        return cls(teacher=teacher, **kwargs)

    def _pre(self, l: int, h: torch.Tensor, params: Optional[torch.Tensor]) -> torch.Tensor:
        lead = h.shape[: h.ndim - len(self.feature_shapes[l - 1])]
        z = self.layers[l - 1](h.reshape(*lead, -1))
        return z.reshape(*lead, *self.feature_shapes[l])

    def dense_matrix(self, l: int, params: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``W_l`` of shape ``(out_dim, in_dim)``."""
        return self.layers[self._check_layer(l) - 1].weight.detach()

    @torch.no_grad()
    def set_affine(self, l: int, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> None:
        """Overwrite layer ``l`` with ``z = W h + b`` (used by the closed-form solve)."""
        lin = self.layers[self._check_layer(l) - 1]
        if tuple(weight.shape) != tuple(lin.weight.shape):
            raise ValueError(f"weight: layer {l} expects shape {tuple(lin.weight.shape)}, got {tuple(weight.shape)}")
        lin.weight.copy_(weight)
        if lin.bias is not None:
            lin.bias.copy_(bias if bias is not None else torch.zeros_like(lin.bias))
