"""S_n samplers for dense graphs ``[A | m | X]`` (the :class:`~symclone.symmetrize.Sampler` API).

Every sampler scores the nodes and sorts them, **real nodes first**: with per-node scores ``s``,
``p = argsort(where(m, s, +inf))`` (stable), so ``(g⁻¹·x)_j = x_{p(j)}`` puts the real nodes in
positions ``0..n-1`` by increasing score and the (all-zero, identical) padding nodes after them.
Padding is never permuted into a real position, whatever the input order (also when the input
was permuted by a ``g ∈ S_{n_max}`` that interleaves padding and real nodes).

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
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from ..groups import get_group
from ..symmetrize import GroupSample, Sampler, log_sinkhorn, permutation_entropy, repeat_batch
from ._batch import check_graph_batch, split_graph
from ._canon import canonical_order
from ._models import mlp
from ._refine_noise import refined_noise

__all__ = ["GraphSampler", "UniformGraphSampler", "CanonicalGraphSampler", "LearnedGraphSampler",
           "real_first_argsort", "make_graph_sampler"]

_NEG = -1e9


def real_first_argsort(s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``p`` (B, N): real nodes by increasing score, then padding nodes by index.

    >>> real_first_argsort(torch.tensor([[0.5, 9., 0.1, 0.3]]), torch.tensor([[1, 0, 1, 1]]).bool())
    tensor([[2, 3, 0, 1]])
    """
    key = torch.where(mask, s, torch.full_like(s, float("inf")))
    return torch.argsort(key, dim=-1, stable=True)


class GraphSampler(Sampler):
    """Base class: subclasses implement ``scores(x, generator) -> (B, N)``."""

    def __init__(self, n_max: Optional[int] = None):
        super().__init__(get_group("sn", n=n_max))

    def scores(self, x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        n = check_graph_batch(x)
        if self.group.n is not None and n != self.group.n:
            raise ValueError(f"x: sampler built for n_max={self.group.n}, got a batch with N={n} "
                             f"(shape {tuple(x.shape)})")
        return x[:, :, n] > 0.5

    def sample(self, x: torch.Tensor, k: int, generator: Optional[torch.Generator] = None) -> GroupSample:
        k = int(self.fixed_k or k)
        self._check(x)
        xk = repeat_batch(x, k)
        mask = xk[:, :, xk.shape[1]] > 0.5
        s = self.scores(xk, generator)
        return GroupSample(g=real_first_argsort(s.detach(), mask), k=k)


class UniformGraphSampler(GraphSampler):
    """Uniformly random orderings of the real nodes (padding stays last).

    >>> x = torch.zeros(1, 5, 7); x[0, :3, 5] = 1; x[0, 0, 1] = x[0, 1, 0] = 1
    >>> s = UniformGraphSampler(5).sample(x, k=4)
    >>> bool((s.g[:, 3:] == torch.tensor([3, 4])).all())   # padding never moves
    True
    """

    def scores(self, x, generator=None):
        return torch.rand(x.shape[:2], generator=generator, dtype=x.dtype, device=x.device)


class CanonicalGraphSampler(GraphSampler):
    """Exact canonicalization: the canonical form of each graph (``k`` forced to 1).

    >>> x = torch.zeros(2, 4, 5); x[:, :3, 4] = 1
    >>> x[0, 0, 1] = x[0, 1, 0] = 1; x[1, 2, 1] = x[1, 1, 2] = 1   # the same graph, relabelled
    >>> smp = CanonicalGraphSampler(4); g = smp.sample(x, k=3).g
    >>> bool(torch.equal(smp.group.act(smp.group.inverse(g[0]), x[:1], "graph"),
    ...                  smp.group.act(smp.group.inverse(g[1]), x[1:], "graph")))
    True
    """

    exact = True
    fixed_k = 1

    def __init__(self, n_max: Optional[int] = None, max_leaves: int = 20000):
        super().__init__(n_max)
        self.max_leaves = int(max_leaves)

    def scores(self, x, generator=None):
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
    """Permutation-equivariant node scores: GIN layers on ``h⁰ = [m | X | ε]`` and a linear head."""

    def __init__(self, d: int, hidden: int = 32, layers: int = 3):
        super().__init__()
        sizes = [d + 2] + [hidden] * layers
        self.layers = nn.ModuleList(mlp([a, b, b], last_act=True) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
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
    noise : scale σ of the node noise ``ε``. tau : SoftSort temperature.
    sinkhorn_iters, entropy_weight : LPS defaults 20 and 0.1. hidden, layers : score GIN size.
    noise_kind : ``"refined"`` (IR-leaf noise, default) or ``"iid"`` (``ε ~ U[0, σ]``, plain LPS).
    residual : scores ``ε + q_ω`` with a zero-initialised head (default) instead of ``q_ω``.

    The straight-through matrix is only built when gradients are enabled (training).

    >>> smp = LearnedGraphSampler(n_max=5, d=0)
    >>> x = torch.zeros(2, 5, 6); x[:, :4, 5] = 1
    >>> s = smp.sample(x, k=3); s.g.shape, s.perm_matrix.shape
    (torch.Size([6, 5]), torch.Size([6, 5, 5]))
    """

    def __init__(self, n_max: Optional[int] = None, d: int = 0, noise: float = 1.0, tau: float = 0.01,
                 sinkhorn_iters: int = 20, entropy_weight: float = 0.1, hidden: int = 32, layers: int = 3,
                 noise_kind: str = "refined", residual: bool = True):
        super().__init__(n_max)
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

    def scores(self, x, generator=None):
        return self._scores(x, self.draw_noise(x, generator))

    def _scores(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        head = self.net.head
        if self.residual and not torch.is_grad_enabled() and not head.weight.any() and not head.bias.any():
            return eps  # zero head (untrained): q_ω ≡ 0 exactly, skip the GIN
        s = self.net(x.to(head.weight.dtype), eps)
        return s + eps if self.residual else s

    def sample(self, x: torch.Tensor, k: int, generator: Optional[torch.Generator] = None) -> GroupSample:
        self._check(x)
        xk = repeat_batch(x, int(k))
        mask = xk[:, :, xk.shape[1]] > 0.5
        eps = self.draw_noise(x, generator, repeats=int(k))
        s = self._scores(xk, eps)
        # ties of the scores (e.g. a saturated score net) are broken by the noise, never by index
        first = real_first_argsort(eps, mask)
        p = torch.gather(first, 1, real_first_argsort(torch.gather(s.detach(), 1, first),
                                                      torch.gather(mask, 1, first)))
        if not (torch.is_grad_enabled() and s.requires_grad):
            return GroupSample(g=p, k=int(k))
        soft = log_sinkhorn(self._soft_logits(s, p, mask), self.iters)  # [position j, node n]
        hard = torch.nn.functional.one_hot(p, s.shape[1]).to(s.dtype)
        M = hard + (soft - soft.detach())
        aux = self.entropy_weight * permutation_entropy(soft) if self.entropy_weight else s.new_zeros(())
        return GroupSample(g=p, k=int(k), aux_loss=aux, perm_matrix=M.transpose(-1, -2))

    def _soft_logits(self, s: torch.Tensor, p: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """SoftSort logits ``-|s_{p(j)} - s_n| / τ`` on real (position, node) pairs; padding rows are
        pinned to their hard node, real/padding cross terms are excluded."""
        n_real = mask.sum(1, keepdim=True)
        pos_real = torch.arange(s.shape[1], device=s.device)[None, :] < n_real
        logits = -(torch.gather(s, 1, p).unsqueeze(-1) - s.unsqueeze(-2)).abs() / self.tau
        real = pos_real.unsqueeze(-1) & mask.unsqueeze(-2)
        pinned = torch.nn.functional.one_hot(p, s.shape[1]).bool() & ~pos_real.unsqueeze(-1)
        return torch.where(real, logits, torch.where(pinned, torch.zeros_like(logits),
                                                     torch.full_like(logits, _NEG)))


def make_graph_sampler(name: str, n_max: int, d: int = 0, **kw) -> GraphSampler:
    """``"uniform"``, ``"canonical"`` or ``"learned"`` graph sampler for inputs ``(B, n_max, n_max+1+d)``.

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
