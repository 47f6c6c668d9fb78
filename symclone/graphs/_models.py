"""Graph backbones on the dense layout ``[A | m | X]``: graph-level and node-level.

Graph-level (one output per graph):

* :class:`GraphMLP` flattens the whole ``(N, N + 1 + d)`` tensor and applies an MLP: maximally
  expressive but **not** permutation invariant (it sees node positions).
* :class:`MessagePassing` is a GIN-style network, ``h ← MLP((1 + ε) h + A h)`` on real nodes,
  followed by a masked sum readout of every layer: invariant by construction, and bounded by
  the 1-WL test (it cannot separate graphs that colour refinement cannot, e.g. the EXP pairs).

Node-level (one output per node, ``(B, N, out_dim)``, zero on padding; PATTERN):

* :class:`NodeTransformer` — a transformer over node tokens built from the node's adjacency row
  and features: **not** permutation equivariant (the row is read through a linear layer whose
  weights are tied to node positions), the backbone that S_n symmetrization makes equivariant;
* :class:`NodeMessagePassing` — residual mean-aggregation message passing with the degree as an
  input: permutation equivariant by construction, bounded by 1-WL.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ._batch import check_graph_batch, graph_width, split_graph

__all__ = ["GraphMLP", "MessagePassing", "NodeTransformer", "NodeMessagePassing", "mlp"]


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


def _node_input(x: torch.Tensor, d: int, who: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a, m, f = split_graph(x)
    if f.shape[-1] != d:
        raise ValueError(f"x: {who} built for d={d} node features, got shape {tuple(x.shape)} "
                         f"(d = {f.shape[-1]})")
    return a, m, f


class NodeTransformer(nn.Module):
    """Transformer over node tokens with per-node outputs (not permutation equivariant).

    Token of node ``i``: ``t_i = W_A a_i + W_X [m_i | X_i]`` with ``a_i ∈ {0,1}^N`` the node's row of
    ``A``; then ``layers`` pre-norm transformer encoder layers whose attention ignores padding keys,
    and a linear head: ``f(x)_i = W_o h_i · m_i`` (B, N, out_dim). ``W_A a_i = Σ_j A_ij w_j`` gives
    neighbour ``j`` the weight column of *position* ``j``, so relabelling the nodes changes the
    outputs beyond a permutation: the backbone sees the node order, as :class:`GraphMLP` does.

    Any ``N ≤ n_max`` is accepted (``W_A`` restricted to its first ``N`` columns): a batch trimmed to
    its largest graph gives the same outputs on real nodes as the same batch padded to ``n_max``,
    as long as the real nodes come first (fresh batches, and every graph sampler's ``g⁻¹·x``).

    Parameters
    ----------
    n_max : largest number of nodes. d : node-feature dimension.
    d_model, heads, layers, ff : width, attention heads, depth, feed-forward width.
    dropout : dropout of the encoder layers. out_dim : outputs per node.

    Examples
    --------
    >>> f = NodeTransformer(n_max=6, d=1, d_model=8, heads=2, layers=1, ff=16)
    >>> x = torch.zeros(2, 6, 8); x[:, :4, 6] = 1
    >>> y = f(x); y.shape, bool((y[:, 4:] == 0).all())
    (torch.Size([2, 6, 2]), True)
    """

    def __init__(self, n_max: int, d: int = 0, d_model: int = 64, heads: int = 4, layers: int = 2,
                 ff: int = 128, dropout: float = 0.0, out_dim: int = 2):
        super().__init__()
        self.n_max, self.d = int(n_max), int(d)
        self.row = nn.Linear(self.n_max, d_model, bias=False)
        self.feat = nn.Linear(1 + self.d, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, m, f = _node_input(x, self.d, "NodeTransformer")
        n = a.shape[1]
        if n > self.n_max:
            raise ValueError(f"x: NodeTransformer built for n_max={self.n_max} nodes, got N={n} "
                             f"(shape {tuple(x.shape)})")
        h = a @ self.row.weight[:, :n].T.to(a.dtype) + self.feat(torch.cat([m[..., None], f], -1))
        real = m > 0.5
        h = self.encoder(h, src_key_padding_mask=~real)
        return self.head(self.norm(h)) * m[..., None].to(h.dtype)


class NodeMessagePassing(nn.Module):
    """Residual mean-aggregation message passing with per-node outputs (equivariant, 1-WL bounded).

    ``h⁰ = W_0 [m | X | log(1 + deg)]``; ``L`` layers
    ``h ← h + MLP(LayerNorm([h_i | (1/deg_i) Σ_{j ∈ N(i)} h_j])) · m_i``; ``f(x)_i = W_o h_i · m_i``.
    The mean keeps the activations bounded on dense graphs (PATTERN: ~50 neighbours); the degree
    enters as an input feature. Every operation is a function of the node's state and of the
    multiset of its neighbours' states, so relabelling the nodes permutes the outputs (up to
    float rounding of the neighbour sums).

    Examples
    --------
    >>> f = NodeMessagePassing(d=1, hidden=8, layers=2)
    >>> x = torch.zeros(2, 5, 7); x[:, :3, 5] = 1; x[:, 0, 1] = x[:, 1, 0] = 1
    >>> f(x).shape
    torch.Size([2, 5, 2])
    """

    def __init__(self, d: int = 0, hidden: int = 64, layers: int = 4, out_dim: int = 2):
        super().__init__()
        self.d = int(d)
        self.inp = nn.Linear(2 + self.d, hidden)
        self.norms = nn.ModuleList(nn.LayerNorm(2 * hidden) for _ in range(layers))
        self.layers = nn.ModuleList(mlp([2 * hidden, hidden, hidden]) for _ in range(layers))
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, m, f = _node_input(x, self.d, "NodeMessagePassing")
        a = a * m[:, :, None] * m[:, None, :]
        deg = a.sum(-1, keepdim=True)
        mk = m[..., None]
        h = self.inp(torch.cat([mk, f, torch.log1p(deg)], -1)) * mk
        for norm, layer in zip(self.norms, self.layers):
            nbr = (a @ h) / deg.clamp(min=1)
            h = h + layer(norm(torch.cat([h, nbr], -1))) * mk
        return self.head(h) * mk
