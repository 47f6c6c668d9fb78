"""Models of the separation protocols, built per seed, and batched embedding of a dataset.

Model names (:data:`MODEL_NAMES`):

* ``mlp`` — bare :class:`GraphMLP` on the padded ``[A | m | X]`` (not invariant);
* ``uniform`` / ``canonical`` / ``learned`` — the same MLP symmetrized with that graph sampler;
* ``mp`` — the 1-WL-bounded :class:`MessagePassing` baseline (run in float64 so that summation
  order cannot fake a separation).

The canonical sampler is deterministic, so :func:`prepare_inputs` canonicalizes a dataset once
(``g⁻¹·x`` with the sampler's ``g``) and every seed then evaluates the backbone on it: the same
numbers as calling the symmetrized model, without repeating the search per seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ._models import GraphMLP, MessagePassing
from ._samplers import CanonicalGraphSampler
from ._symmetrize import symmetrize_graph_model

__all__ = ["MODEL_NAMES", "ModelConfig", "build_model", "prepare_inputs", "embed"]

MODEL_NAMES = ("mlp", "uniform", "canonical", "learned", "mp")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the protocol models (frozen; CLI overrides ``--model.k=20``)."""

    hidden: tuple[int, ...] = (128, 128)
    out_dim: int = 32
    k: int = 10
    noise: float = 1.0
    noise_kind: str = "refined"
    residual: bool = True
    layout: str = "global"  # learned sampler: "components" = one block per connected component
    tau: float = 0.01
    score_hidden: int = 32
    score_layers: int = 3
    mp_hidden: int = 64
    mp_layers: int = 4


def build_model(name: str, n_max: int, d: int, cfg: ModelConfig, seed: int,
                out_dim: Optional[int] = None) -> nn.Module:
    """The model ``name`` with weights drawn under ``torch.manual_seed(seed)``.

    Examples
    --------
    >>> m = build_model("learned", 6, 1, ModelConfig(hidden=(8,), out_dim=4), seed=0)
    >>> m(torch.zeros(3, 6, 8)).shape
    torch.Size([3, 4])
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"model: expected one of {MODEL_NAMES}, got {name!r}")
    out = cfg.out_dim if out_dim is None else out_dim
    torch.manual_seed(seed)
    if name == "mp":
        return MessagePassing(d, cfg.mp_hidden, cfg.mp_layers, out).double()
    mlp = GraphMLP(n_max, d, cfg.hidden, out)
    if name == "mlp":
        return mlp
    kw = dict(noise=cfg.noise, noise_kind=cfg.noise_kind, residual=cfg.residual, tau=cfg.tau,
              hidden=cfg.score_hidden, layers=cfg.score_layers, layout=cfg.layout) if name == "learned" else {}
    return symmetrize_graph_model(mlp, name, n_max, d, k=cfg.k, **kw)


def prepare_inputs(name: str, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Inputs the per-seed loop feeds to :func:`embed`: canonical forms for ``canonical``
    (computed once), float64 for ``mp``, ``x`` itself otherwise."""
    if name == "mp":
        return x.double()
    if name != "canonical":
        return x
    smp = CanonicalGraphSampler(x.shape[1])
    parts = []
    for s in range(0, len(x), batch):
        xb = x[s:s + batch]
        g = smp.sample(xb, 1).g
        parts.append(smp.group.act(smp.group.inverse(g), xb, "graph"))
    return torch.cat(parts)


@torch.no_grad()
def embed(name: str, model: nn.Module, x: torch.Tensor, generator: Optional[torch.Generator] = None,
          batch: int = 256) -> torch.Tensor:
    """Embeddings ``(n, D)`` of the prepared inputs ``x`` (see :func:`prepare_inputs`)."""
    model.eval()
    f = model.model if name == "canonical" else model
    out = []
    for s in range(0, len(x), batch):
        xb = x[s:s + batch]
        out.append(f(xb, generator=generator) if name in ("uniform", "learned") else f(xb))
    return torch.cat(out).double()
