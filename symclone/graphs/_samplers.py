"""S_n samplers for dense graphs ``[A | m | X]``: the graph members of the one S_n sampler hierarchy.

Every graph sampler is a :class:`~symclone.symmetrize.SnSampler` (scores -> sort -> straight-through
Sinkhorn + entropy, shared; see :mod:`symclone.symmetrize._sn`). This module adds only what is
specific to graphs::

    SnSampler                      symclone.symmetrize: the shared pipeline
    └── GraphSampler               the node mask is the m channel; real nodes first, padding last
        ├── UniformGraphSampler    s ~ U[0, 1] i.i.d.
        ├── CanonicalGraphSampler  s = position in the canonical form (deterministic, k = 1)
        └── LearnedGraphSampler    s = ε + q_ω(A, [m | X | ε]) with a GIN q_ω (ScoreGIN), ties by ε

Layout (:class:`GraphSampler`): with per-node scores ``s``, ``p = argsort(where(m, s, +inf))``
(stable; :func:`real_first_argsort`), so ``(g⁻¹·x)_j = x_{p(j)}`` puts the real nodes in positions
``0..n-1`` by increasing score and the (all-zero, identical) padding nodes after them. Padding is never
permuted into a real position, whatever the input order (also when the input was permuted by a
``g ∈ S_{n_max}`` that interleaves padding and real nodes). The SoftSort logits follow the same layout
(:meth:`GraphSampler.soft_logits`), the entropy is taken over [position, node] (:meth:`GraphSampler.entropy_loss`),
and without gradients a graph sampler returns ``g`` alone.

* :class:`UniformGraphSampler` — ``s ~ U[0, 1]`` i.i.d.: a uniformly random ordering of the real
  nodes; ``f_sym`` is invariant in distribution.
* :class:`CanonicalGraphSampler` — ``s`` = position in the canonical form of
  :func:`~symclone.graphs.canonical_order` (individualization-refinement; ties are resolved by
  the search, never by the input index): exactly invariant per call, ``k = 1``.
* :class:`LearnedGraphSampler` — ``s = ε + q_ω(A, [m | X | ε])`` (``residual``; ``q_ω`` a GIN,
  permutation equivariant, its linear head zero-initialised so training starts from the
  ordering of ``ε``); hard argsort forward (score ties broken by ``ε``), SoftSort + 20
  log-Sinkhorn iterations (τ = 0.01) straight-through backward, ``aux_loss = 0.1 ×
  entropy(P_soft)`` (LPS). Noise ``ε``: ``noise_kind="refined"`` (default) = ``σ ×`` the leaf
  colouring of one random individualization-refinement branch (:func:`refined_noise`: i.i.d.
  uniforms only choose *which* node of a tied cell is individualized, then 1-WL refinement
  propagates that choice), or ``"iid"`` = ``U[0, σ]`` i.i.d. per node (plain LPS). Both are
  equivariant in distribution; refined noise concentrates ``p(g | x)`` on a few reorderings
  per graph (those related by automorphisms give the same input to the backbone).
  ``layout="components"`` sorts by connected component first (:func:`component_offsets`).

:func:`make_graph_sampler` builds one of the three by its name (the names of
:data:`~symclone.symmetrize.SAMPLER_NAMES`). It cannot be a branch of
:func:`~symclone.symmetrize.make_sampler`: ``symmetrize`` sits below ``graphs`` in the import layers,
and its ``sn``/``"graph"`` default reads ``[A | X]`` without a mask channel (padding kept in place).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from ..symmetrize import SnSampler, permutation_entropy
from ._batch import check_graph_batch, component_labels, split_graph
from ._canon import canonical_order
from ._models import mlp
from ._refine_noise import _dense_rank, refined_noise

__all__ = ["GraphSampler", "UniformGraphSampler", "CanonicalGraphSampler", "LearnedGraphSampler",
           "real_first_argsort", "make_graph_sampler", "component_offsets", "LAYOUTS"]

_NEG = -1e9
LAYOUTS = ("global", "components")


def component_offsets(labels: torch.Tensor, s: torch.Tensor, tie: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-node offsets (B, N) that make every connected component a contiguous block of the order.

    Components are ranked by ``(size, min_{i ∈ C} tie_i)``: smallest first, components of equal
    size in the order of their smallest tie key (the noise ``ε``: random, equivariant in
    distribution; components that are not automorphic get an invariant order from the refined
    noise). With ``r_C`` that rank and ``w = max_i s_i − min_i s_i + 1`` over the real nodes
    (detached), ``s_i + w · r_{C(i)}`` sorts by component first and by ``s`` inside it. The offsets
    are constant on a component, so the SoftSort gradient inside a block is that of ``s``, and
    across blocks the soft logits ``−|Δs|/τ ≤ −1/τ`` are negligible.

    Why: the backbone is an MLP tied to positions. Sorting all nodes at once interleaves the nodes
    of different components by their colours, so the position of a component's nodes moves with
    the size of every other component; in blocks, the smallest component always sits at positions
    ``0..|C|−1``, whatever else the graph holds (size generalisation on disjoint unions such as
    EXP: core pair + planar component). The offsets are functions of the partition, the sizes and
    ``tie``, never of the node indices: S_n-invariance in distribution is kept exactly.

    Examples
    --------
    >>> lab = torch.tensor([[0, 1, 1, 0, 4]]); m = torch.tensor([[1, 1, 1, 1, 0]]).bool()
    >>> s = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.]]); off = component_offsets(lab, s, s, m)
    >>> real_first_argsort(s + off, m)   # component {0, 3} first: smallest tie key among equal sizes
    tensor([[0, 3, 1, 2, 4]])
    """
    B, N = s.shape
    real = mask.bool()
    lab = labels.clamp(max=N - 1)
    ones = real.to(torch.int64)
    size = torch.zeros(B, N, dtype=torch.int64, device=s.device).scatter_add_(1, lab, ones)
    inf = torch.full((), float("inf"), dtype=torch.float64, device=s.device)
    t = torch.where(real, tie.detach().to(torch.float64), inf)
    tmin = torch.full((B, N), float("inf"), dtype=torch.float64, device=s.device).scatter_reduce(1, lab, t, "amin")
    tie_rank = _dense_rank(torch.where(real, torch.gather(tmin, 1, lab), inf))
    key = torch.gather(size, 1, lab) * (N + 1) + tie_rank
    rank = _dense_rank(torch.where(real, key, torch.full_like(key, (N + 1) ** 2)))
    sd = s.detach()
    hi = torch.where(real, sd, torch.full_like(sd, -float("inf"))).amax(1, keepdim=True)
    lo = torch.where(real, sd, torch.full_like(sd, float("inf"))).amin(1, keepdim=True)
    width = (hi - lo).clamp(min=0) + 1
    return torch.where(real, rank.to(s.dtype) * width, torch.zeros_like(sd))


def real_first_argsort(s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``p`` (B, N): real nodes by increasing score, then padding nodes by index.

    Examples
    --------
    >>> real_first_argsort(torch.tensor([[0.5, 9., 0.1, 0.3]]), torch.tensor([[1, 0, 1, 1]]).bool())
    tensor([[2, 3, 0, 1]])
    """
    key = torch.where(mask, s, torch.full_like(s, float("inf")))
    return torch.argsort(key, dim=-1, stable=True)


def _node_mask(x: torch.Tensor) -> torch.Tensor:
    """The real-node mask (B, N) of dense graphs ``[A | m | X]``: the ``m`` channel."""
    return x[:, :, x.shape[1]] > 0.5


class GraphSampler(SnSampler):
    """Base class of the graph samplers: an :class:`~symclone.symmetrize.SnSampler` on ``[A | m | X]``.

    Subclasses implement ``scores(x, generator) -> (B, N)``; the node mask is read from the ``m``
    channel, real nodes are sorted first and padding last (module docstring), and a call without
    gradients returns ``g`` alone (``perm_matrix=None``, ``aux_loss=0``).

    Parameters
    ----------
    n_max : padded number of nodes ``N`` (``None``: any).
    deterministic : ``k`` forced to 1 and ``exact`` (canonicalization).
    """

    matrix_without_grad = False

    def __init__(self, n_max: Optional[int] = None, deterministic: bool = False):
        super().__init__(None, n=n_max, tau=0.01, noise=0.0, mask_fn=_node_mask, deterministic=deterministic)

    def scores(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Per-node scores (B, N) of the graphs ``x``; implemented by subclasses."""
        raise NotImplementedError  # pragma: no cover

    def draw_scores(self, x: torch.Tensor, xk: torch.Tensor, generator: Optional[torch.Generator] = None
                    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``scores(xk, generator)`` (no input noise), ties broken by index."""
        return self.scores(xk, generator), None

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is a dense graph batch with ``N = n_max``."""
        n = check_graph_batch(x)
        if self.group.n is not None and n != self.group.n:
            raise ValueError(f"x: sampler built for n_max={self.group.n}, got a batch with N={n} "
                             f"(shape {tuple(x.shape)})")

    def argsort(self, s: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Real nodes first by increasing score, padding last (:func:`real_first_argsort`)."""
        return real_first_argsort(s, mask)

    def soft_logits(self, s: torch.Tensor, p: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """SoftSort logits ``-|s_{p(j)} - s_n| / τ`` on real (position, node) pairs; padding rows are
        pinned to their hard node, real/padding cross terms are excluded."""
        n_real = mask.sum(1, keepdim=True)
        pos_real = torch.arange(s.shape[1], device=s.device)[None, :] < n_real
        logits = -(torch.gather(s, 1, p).unsqueeze(-1) - s.unsqueeze(-2)).abs() / self.tau
        real = pos_real.unsqueeze(-1) & mask.unsqueeze(-2)
        pinned = torch.nn.functional.one_hot(p, s.shape[1]).bool() & ~pos_real.unsqueeze(-1)
        return torch.where(real, logits, torch.where(pinned, torch.zeros_like(logits),
                                                     torch.full_like(logits, _NEG)))

    def entropy_loss(self, soft: torch.Tensor) -> torch.Tensor:
        """``entropy_weight ×`` the row + column entropy of ``soft`` [position, node], evaluated in that
        orientation (as the graph samplers always have; the rounding differs from ``softᵀ``)."""
        if not self.entropy_weight:
            return soft.new_zeros(())
        return self.entropy_weight * permutation_entropy(soft)


class UniformGraphSampler(GraphSampler):
    """Uniformly random orderings of the real nodes (padding stays last).

    Examples
    --------
    >>> x = torch.zeros(1, 5, 7); x[0, :3, 5] = 1; x[0, 0, 1] = x[0, 1, 0] = 1
    >>> s = UniformGraphSampler(5).sample(x, k=4)
    >>> bool((s.g[:, 3:] == torch.tensor([3, 4])).all())   # padding never moves
    True
    """

    def scores(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``U[0, 1]`` i.i.d. per node, in the dtype and on the device of ``x``."""
        return torch.rand(x.shape[:2], generator=generator, dtype=x.dtype, device=x.device)


class CanonicalGraphSampler(GraphSampler):
    """Exact canonicalization: the canonical form of each graph (``k`` forced to 1).

    Parameters
    ----------
    n_max : padded number of nodes.
    max_leaves : leaf budget of the search (:func:`~symclone.graphs.canonical_order`).

    Examples
    --------
    >>> x = torch.zeros(2, 4, 5); x[:, :3, 4] = 1
    >>> x[0, 0, 1] = x[0, 1, 0] = 1; x[1, 2, 1] = x[1, 1, 2] = 1   # the same graph, relabelled
    >>> smp = CanonicalGraphSampler(4); g = smp.sample(x, k=3).g
    >>> bool(torch.equal(smp.group.act(smp.group.inverse(g[0]), x[:1], "graph"),
    ...                  smp.group.act(smp.group.inverse(g[1]), x[1:], "graph")))
    True
    """

    def __init__(self, n_max: Optional[int] = None, max_leaves: int = 20000):
        super().__init__(n_max, deterministic=True)
        self.max_leaves = int(max_leaves)

    def scores(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Position of each real node in the canonical form of its graph (0 on padding)."""
        a, m, f = split_graph(x)
        out = torch.zeros(x.shape[:2], dtype=torch.float64)
        for b in range(x.shape[0]):
            real = torch.nonzero(m[b] > 0.5).flatten()
            ab = a[b][real][:, real].detach().cpu().numpy()
            if not np.array_equal(ab, ab.T):
                raise ValueError(f"x[{b}]: adjacency must be symmetric for canonicalization")
            order = canonical_order(ab, f[b][real].detach().cpu().double().numpy(), self.max_leaves)
            pos = np.empty(len(order), np.float64)
            pos[order] = np.arange(len(order))
            out[b, real] = torch.from_numpy(pos)
        return out.to(x.device)


class ScoreGIN(nn.Module):
    """Permutation-equivariant node scores: GIN layers on ``h⁰ = [m | X | ε]`` and a linear head.

    Parameters
    ----------
    d : node-feature dimension. hidden, layers : width and depth of the GIN.
    """

    def __init__(self, d: int, hidden: int = 32, layers: int = 3):
        super().__init__()
        sizes = [d + 2] + [hidden] * layers
        self.layers = nn.ModuleList(mlp([a, b, b], last_act=True) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Scores (B, N) of the graphs ``x`` with node noise ``eps`` (B, N); 0-masked hidden states."""
        a, m, f = split_graph(x)
        h = torch.cat([m[..., None], f, eps[..., None]], dim=-1) * m[..., None]
        for layer in self.layers:
            h = layer(h + a @ h) * m[..., None]
        return self.head(h).squeeze(-1)


class LearnedGraphSampler(GraphSampler):
    """LPS-style learned S_n distribution for graphs (see the module docstring).

    Parameters
    ----------
    n_max, d : padded size and node-feature dimension of the inputs.
    noise : scale σ of the node noise ``ε``.
    tau : SoftSort temperature.
    sinkhorn_iters, entropy_weight : LPS defaults 20 and 0.1.
    hidden, layers : score GIN size.
    noise_kind : ``"refined"`` (IR-leaf noise, default) or ``"iid"`` (``ε ~ U[0, σ]``, plain LPS).
    residual : scores ``ε + q_ω`` with a zero-initialised head (default) instead of ``q_ω``.
    layout : ``"global"`` (default: one sort over all nodes) or ``"components"`` (each connected
        component a contiguous block, smallest component first; :func:`component_offsets`).

    Notes
    -----
    The straight-through matrix is only built when gradients are enabled (training).

    Examples
    --------
    >>> smp = LearnedGraphSampler(n_max=5, d=0)
    >>> x = torch.zeros(2, 5, 6); x[:, :4, 5] = 1
    >>> s = smp.sample(x, k=3); s.g.shape, s.perm_matrix.shape
    (torch.Size([6, 5]), torch.Size([6, 5, 5]))
    """

    def __init__(self, n_max: Optional[int] = None, d: int = 0, noise: float = 1.0, tau: float = 0.01,
                 sinkhorn_iters: int = 20, entropy_weight: float = 0.1, hidden: int = 32, layers: int = 3,
                 noise_kind: str = "refined", residual: bool = True, layout: str = "global"):
        super().__init__(n_max)
        if layout not in LAYOUTS:
            raise ValueError(f"layout: expected one of {LAYOUTS}, got {layout!r}")
        self.layout = layout
        if tau <= 0 or noise < 0:
            raise ValueError(f"tau, noise: expected tau > 0 and noise >= 0, got {tau}, {noise}")
        if noise_kind not in ("refined", "iid"):
            raise ValueError(f"noise_kind: expected 'refined' or 'iid', got {noise_kind!r}")
        self.net = ScoreGIN(d, hidden, layers)
        self.residual = bool(residual)
        if self.residual:  # start exactly at the IR-leaf ordering; training learns the corrections
            nn.init.zeros_(self.net.head.weight)
            nn.init.zeros_(self.net.head.bias)
        self.noise, self.tau, self.noise_kind = float(noise), float(tau), noise_kind
        self.iters, self.entropy_weight = int(sinkhorn_iters), float(entropy_weight)

    def draw_noise(self, x: torch.Tensor, generator: Optional[torch.Generator] = None,
                   repeats: int = 1) -> torch.Tensor:
        """``ε`` (repeats·B, N) for ``repeat_batch(x, repeats)``: ``U[0, σ]`` i.i.d. (``iid``) or
        ``σ ×`` :func:`refined_noise` (``refined``)."""
        dtype = self.net.head.weight.dtype
        if self.noise_kind == "iid":
            shape = (repeats * x.shape[0], x.shape[1])
            return torch.rand(shape, generator=generator, dtype=dtype, device=x.device) * self.noise
        a, m, f = split_graph(x)
        return refined_noise(a, m, f, generator, repeats=repeats).to(dtype) * self.noise

    def scores(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Scores (B, N) of ``x`` with freshly drawn noise ``ε`` (and the component offsets)."""
        return self.draw_scores(x, x, generator)[0]

    def draw_scores(self, x: torch.Tensor, xk: torch.Tensor, generator: Optional[torch.Generator] = None
                    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Scores of ``xk = repeat_batch(x, k)`` and the noise ``ε`` as tie-break key: ties of the
        scores (e.g. a saturated score net) are broken by the noise, never by index."""
        k = xk.shape[0] // x.shape[0]
        eps = self.draw_noise(x, generator, repeats=k)
        s = self._scores(xk, eps)
        if self.layout == "components":
            a, m, _ = split_graph(x)
            s = s + component_offsets(component_labels(a, m).repeat(k, 1), s, eps, m.repeat(k, 1) > 0.5)
        return s, eps

    def _scores(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        head = self.net.head
        if self.residual and not torch.is_grad_enabled() and not head.weight.any() and not head.bias.any():
            return eps  # zero head (untrained): q_ω ≡ 0 exactly, skip the GIN
        s = self.net(x.to(head.weight.dtype), eps)
        return s + eps if self.residual else s


def make_graph_sampler(name: str, n_max: int, d: int = 0, **kw) -> GraphSampler:
    """``"uniform"``, ``"canonical"`` or ``"learned"`` graph sampler for inputs ``(B, n_max, n_max+1+d)``.

    The names are those of :data:`~symclone.symmetrize.SAMPLER_NAMES`; ``kw`` go to the canonical
    (``max_leaves``) and learned samplers, ``d`` to the learned one; the uniform sampler ignores both.

    Examples
    --------
    >>> make_graph_sampler("canonical", 8).exact
    True
    """
    if name == "uniform":
        return UniformGraphSampler(n_max)
    if name == "canonical":
        return CanonicalGraphSampler(n_max, **kw)
    if name == "learned":
        return LearnedGraphSampler(n_max, d, **kw)
    raise ValueError(f"sampler: expected 'uniform', 'canonical' or 'learned', got {name!r}")
