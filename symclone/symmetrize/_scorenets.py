"""Default S_n-equivariant score networks ``x -> (B, N)`` for sets and dense graphs."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["DeepSetScores", "GraphScores"]


class DeepSetScores(nn.Module):
    """``s_i = ρ([φ(x_i), mean_j φ(x_j)])`` on sets ``(B, N, ...)`` (features flattened).

    Examples
    --------
    >>> net = DeepSetScores(3); x = torch.randn(2, 5, 3); p = torch.randperm(5)
    >>> torch.allclose(net(x[:, p]), net(x)[:, p], atol=1e-6)
    True
    """

    def __init__(self, in_features: int, hidden: int = 32):
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(in_features, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.rho = nn.Sequential(nn.SiLU(), nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        self.in_features = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2) if x.ndim > 2 else x.unsqueeze(-1)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x: score network expects {self.in_features} features per element, got {x.shape[-1]}")
        h = self.phi(x)
        ctx = h.mean(1, keepdim=True).expand_as(h)
        return self.rho(torch.cat([h, ctx], -1)).squeeze(-1)


class GraphScores(nn.Module):
    """Scores on dense graphs ``[A | X]`` (B, N, N + d): ``s_i = MLP([deg_i, X_i, (A X)_i, (A² 1)_i])``.

    Examples
    --------
    >>> net = GraphScores(2); A = (torch.rand(1, 4, 4) > .5).float(); A = A + A.transpose(1, 2)
    >>> x = torch.cat([A, torch.randn(1, 4, 2)], -1); p = torch.randperm(4)
    >>> xp = torch.cat([A[:, p][:, :, p], x[:, p, 4:]], -1)
    >>> torch.allclose(net(xp), net(x)[:, p], atol=1e-6)
    True
    """

    def __init__(self, d: int, hidden: int = 32):
        super().__init__()
        self.d = d
        self.mlp = nn.Sequential(nn.Linear(2 + 2 * d, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                 nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        if x.shape[2] != n + self.d:
            raise ValueError(f"x: graph score network expects (B, N, N + {self.d}), got {tuple(x.shape)}")
        A, X = x[:, :, :n], x[:, :, n:]
        deg = A.sum(-1, keepdim=True)
        two = A @ deg
        feats = torch.cat([deg, two, X, A @ X], dim=-1)
        return self.mlp(feats).squeeze(-1)
