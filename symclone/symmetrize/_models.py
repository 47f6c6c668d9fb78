"""A plain (non-equivariant in O(3)) transformer over particles for n-body prediction.

``y_i = p_i + W_out · Enc(W_in x_i)_i`` with a pre-LN ``nn.TransformerEncoder`` over the ``N``
particle tokens (no positional embedding), input ``x`` (B, N, in_dim) whose first 3 entries are
the positions ``p``. It is permutation-equivariant but not rotation-equivariant; wrap it in
:class:`Symmetrized` with group ``sn x o3`` to make it O(3)-equivariant.

>>> m = ParticleTransformer(in_dim=7, dim=16, depth=1, heads=2)
>>> m(torch.randn(2, 5, 7)).shape
torch.Size([2, 5, 3])
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ParticleTransformer"]


class ParticleTransformer(nn.Module):
    """Transformer over particles predicting positions as ``p + Δ`` (see module doc)."""

    def __init__(self, in_dim: int = 7, out_dim: int = 3, dim: int = 64, depth: int = 4, heads: int = 4,
                 mlp_ratio: int = 2, dropout: float = 0.0, residual: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim/heads: dim={dim} must be divisible by heads={heads}")
        self.config = dict(in_dim=in_dim, out_dim=out_dim, dim=dim, depth=depth, heads=heads,
                           mlp_ratio=mlp_ratio, dropout=dropout, residual=residual)
        self.embed = nn.Linear(in_dim, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, mlp_ratio * dim, dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_dim)
        self.in_dim, self.out_dim, self.residual = in_dim, out_dim, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.in_dim:
            raise ValueError(f"x: expected (B, N, {self.in_dim}), got {tuple(x.shape)}")
        h = self.head(self.norm(self.encoder(self.embed(x))))
        return x[..., :self.out_dim] + h if self.residual else h
