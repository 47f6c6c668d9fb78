"""Graph backbones on the dense layout ``[A | m | X]``: a plain MLP and a 1-WL message-passing net.

* :class:`GraphMLP` flattens the whole ``(N, N + 1 + d)`` tensor and applies an MLP: maximally
  expressive but **not** permutation invariant (it sees node positions).
* :class:`MessagePassing` is a GIN-style network, ``h ← MLP((1 + ε) h + A h)`` on real nodes,
  followed by a masked sum readout of every layer: invariant by construction, and bounded by
  the 1-WL test (it cannot separate graphs that colour refinement cannot, e.g. the EXP pairs).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ._batch import check_graph_batch, graph_width, split_graph

__all__ = ["GraphMLP", "MessagePassing", "mlp"]


def mlp(sizes: Sequence[int], act: type[nn.Module] = nn.ReLU, last_act: bool = False) -> nn.Sequential:
    """``Linear -> act -> ... -> Linear`` through ``sizes`` (no activation after the last layer).

    Examples
    --------
    >>> mlp([4, 8, 2])
    Sequential(
      (0): Linear(in_features=4, out_features=8, bias=True)
      (1): ReLU()
      (2): Linear(in_features=8, out_features=2, bias=True)
    )
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_act:
            layers.append(act())
    return nn.Sequential(*layers)


class GraphMLP(nn.Module):
    """MLP on the flattened dense graph: ``f(x) = MLP(vec([A | m | X]))``, output ``(B, out_dim)``.

    Parameters
    ----------
    n_max, d : padded node count and node-feature dimension (input ``(B, n_max, n_max + 1 + d)``).
    hidden : hidden widths. out_dim : embedding / logit size.

    Examples
    --------
    >>> f = GraphMLP(n_max=4, d=1, hidden=(16,), out_dim=3)
    >>> f(torch.zeros(2, 4, 6)).shape
    torch.Size([2, 3])
    """

    def __init__(self, n_max: int, d: int = 0, hidden: Sequence[int] = (256, 256), out_dim: int = 64):
        super().__init__()
        self.n_max, self.d, self.out_dim = int(n_max), int(d), int(out_dim)
        self.in_dim = self.n_max * graph_width(self.n_max, self.d)
        self.net = mlp([self.in_dim, *hidden, out_dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = check_graph_batch(x)
        if n != self.n_max or x.shape[2] != graph_width(self.n_max, self.d):
            raise ValueError(f"x: GraphMLP expects shape (B, {self.n_max}, "
                             f"{graph_width(self.n_max, self.d)}), got {tuple(x.shape)}")
        return self.net(x.reshape(x.shape[0], -1))


class MessagePassing(nn.Module):
    """GIN-style message passing with a masked sum readout (1-WL bounded, invariant).

    ``h⁰ = [m | X]``, ``h^{l+1} = MLP_l((1 + ε_l) h^l + A h^l) · m``,
    ``f(x) = W [Σ_i h^1_i | ... | Σ_i h^L_i]``.

    Examples
    --------
    >>> f = MessagePassing(d=1, hidden=8, layers=2, out_dim=3)
    >>> x = torch.zeros(2, 4, 6); x[:, :3, 4] = 1
    >>> f(x).shape
    torch.Size([2, 3])
    """

    def __init__(self, d: int = 0, hidden: int = 64, layers: int = 4, out_dim: int = 64):
        super().__init__()
        self.d = int(d)
        self.eps = nn.Parameter(torch.zeros(layers))
        sizes = [1 + self.d] + [hidden] * layers
        self.layers = nn.ModuleList(mlp([a, b, b], last_act=True) for a, b in zip(sizes[:-1], sizes[1:]))
        self.readout = nn.Linear(hidden * layers, out_dim)

    def node_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer node states ``h^l`` (B, N, hidden), zero on padding nodes."""
        a, m, f = split_graph(x)
        if f.shape[-1] != self.d:
            raise ValueError(f"x: MessagePassing built for d={self.d} node features, got {f.shape[-1]}")
        h = torch.cat([m[..., None], f], dim=-1)
        out = []
        for eps, layer in zip(self.eps, self.layers):
            h = layer((1 + eps) * h + a @ h) * m[..., None]
            out.append(h)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hs = self.node_features(x)
        return self.readout(torch.cat([h.sum(1) for h in hs], dim=-1))
