"""Default score networks: S_n-equivariant ``x -> (B, N)`` for sets and dense graphs, and the C4 orbit scores
``x -> (B, 4)`` of the canonical c4 sampler."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["DeepSetScores", "GraphScores", "C4OrbitScores"]


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


class C4OrbitScores(nn.Module):
    """C4 orientation logits by scoring the input's four rotations with one plain network.

    Math: with ``P`` the max pooling of each channel to a ``grid × grid`` grid and ``h_r`` the rotation by
    ``r`` quarter turns (on regular fields also rolling the 4 orientations by ``r``),

        ℓ_r(x) = s(h_r⁻¹ · P(x)),   s(z) = v · relu(W vec(z) + b) + c,   r = 0..3.

    ``P`` commutes with ``h`` exactly (a max over a window does not depend on the order of its entries, and
    the windows of an adaptive pooling of a square grid are mapped onto each other by ``rot90``), and
    ``h_r⁻¹ h_1 = h_{r−1}⁻¹`` moves values without arithmetic, so ``ℓ_r(h_1·x) = ℓ_{r−1}(x)`` holds bit for
    bit whatever ``s`` is: ``argmax ℓ`` is an exactly C4-equivariant canonical orientation (up to ties),
    while ``s`` needs no equivariance. Cost per input: one pooling and four evaluations of a
    ``C·grid² → hidden → 1`` MLP (one matmul over the 4·B pooled copies).

    Examples
    --------
    >>> net = C4OrbitScores(1); x = torch.randn(3, 1, 8, 8)
    >>> torch.equal(net(torch.rot90(x, 1, (-2, -1))), net(x).roll(1, -1))
    True
    """

    def __init__(self, in_channels: int = 1, hidden: int = 32, grid: int = 7, regular_input: bool = False):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("hidden", hidden), ("grid", grid)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        if regular_input and in_channels % 4:
            raise ValueError(f"in_channels: regular input needs a multiple of 4, got {in_channels}")
        self.in_channels, self.grid, self.regular_input = in_channels, grid, bool(regular_input)
        self.score = nn.Sequential(nn.Linear(in_channels * grid * grid, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 4)`` of the images ``x`` ``(B, C, H, H)``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-1] != x.shape[-2]:
            raise ValueError(f"x: expected square images (B, {self.in_channels}, H, H), got {tuple(x.shape)}")
        g = self.grid
        z = _block_max(x, g)                                                              # (B, C, g, g)
        turns = []
        for r in range(4):                                                              # h_r⁻¹ · z
            zr = torch.rot90(z, -r, (-2, -1))
            if self.regular_input and r:
                zr = zr.reshape(z.shape[0], -1, 4, g, g).roll(-r, 2)
            turns.append(zr.reshape(z.shape[0], -1))
        return self.score(torch.stack(turns, 1)).squeeze(-1)                            # (B, 4)


def _block_max(x: torch.Tensor, g: int) -> torch.Tensor:
    """Max pooling of square images ``(B, C, H, H)`` to ``(B, C, g, g)`` (adaptive windows unless ``g``
    divides ``H``); a max does not depend on the order of its entries, so this commutes exactly with
    ``rot90``. Where ``g | H``: the maxima of row blocks first (contiguous rows), then of column blocks."""
    B, C, H, W = x.shape
    if H % g or W % g:
        return torch.nn.functional.adaptive_max_pool2d(x, g)
    s = H // g
    v = x.reshape(B, C, g, s, W)
    m = v[:, :, :, 0]
    for i in range(1, s):
        m = torch.maximum(m, v[:, :, :, i])
    return m.reshape(B, C, g, g, W // g).amax(-1)
