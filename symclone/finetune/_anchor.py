"""Which tensors are "cloned structure", and the anchor penalties that keep them near W0.

A model declares its cloned structure in one of two ways (checked in this order):

1. a method ``cloned_parameters()`` of the model or of any submodule (e.g. a cloned net inside a
   ``Symmetrized`` wrapper), returning the parameter *names* relative to that module (as in its
   ``named_parameters()``) or ``(name, parameter)`` pairs that hold cloned structure (block
   matrices W_b, kernel maps, dense layers);
2. the ``cloned=`` argument of :func:`select_cloned`: a callable ``name -> bool`` or a list of
   ``fnmatch`` patterns over ``named_parameters()`` names (e.g. ``["student.*"]``).

Anchors (``W0`` = the values at the start of fine-tuning):

* ``"l2"``: ``beta * sum_W ||W - W0||_F^2``. The training loop applies it *decoupled*, as the
  exact proximal step after every optimiser step, ``W <- W0 + (W - W0) / (1 + 2 lr beta)``
  (:meth:`AnchorPenalty.prox`; the AdamW analogue of weight decay towards ``W0``): Adam
  normalises gradient magnitudes, so an in-loss penalty cannot hold ``W`` closer to ``W0`` than
  about one step size however large ``beta`` is, while the proximal step tends to ``W = W0`` as
  ``beta -> inf`` and is stable for any ``beta``;
* ``"kl"`` (the symmetry-cloning paper's variant): ``beta * sum_W sum_rows KL(softmax(W0_row) ||
  softmax(W_row))``, the softmax taken over the last axis of each tensor (each row of a block
  matrix ``W_b``; a 1-D tensor is one row). It anchors every row up to an additive constant.

Examples
--------
>>> import torch
>>> m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
>>> names = select_cloned(m, ["0.*"]); names
['0.bias', '0.weight']
>>> pen = AnchorPenalty(m, names, beta=2.0, kind="l2")
>>> float(pen(m))
0.0
>>> with torch.no_grad(): _ = m[0].weight.add_(1.0)
>>> float(pen(m))  # 2 * (4 entries * 1^2)
8.0
"""
from __future__ import annotations

import fnmatch
from typing import Callable, Iterable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["select_cloned", "AnchorPenalty", "ANCHORS", "ClonedSpec"]

ANCHORS = ("l2", "kl")
ClonedSpec = Union[None, Callable[[str], bool], Sequence[str]]


def _declared(model: nn.Module) -> list[str]:
    return [p for p, m in model.named_modules() if hasattr(m, "cloned_parameters")]


def select_cloned(model: nn.Module, cloned: ClonedSpec = None) -> list[str]:
    """Sorted names of the parameters of ``model`` that are cloned structure (may be empty)."""
    params = dict(model.named_parameters())
    if cloned is None:
        out = []
        for prefix, mod in model.named_modules():
            if not hasattr(mod, "cloned_parameters"):
                continue
            if any(p != prefix and (p == "" or prefix.startswith(p + ".")) for p in _declared(model)):
                continue  # an outer module already declared its structure
            for item in mod.cloned_parameters():
                name = item[0] if isinstance(item, tuple) else item
                if not isinstance(name, str):
                    raise ValueError("cloned_parameters(): expected parameter names or (name, parameter) "
                                     f"pairs, got {type(name).__name__}")
                full = f"{prefix}.{name}" if prefix else name
                if full not in params:
                    raise ValueError(f"cloned_parameters(): {name!r} is not a parameter of {type(mod).__name__}")
                out.append(full)
        if out:
            return sorted(set(out))
    if cloned is None:
        return []
    if callable(cloned):
        return sorted(n for n in params if cloned(n))
    if isinstance(cloned, str):
        cloned = [cloned]
    return sorted(n for n in params if any(fnmatch.fnmatchcase(n, p) for p in cloned))


def _rows(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(1, -1) if w.ndim <= 1 else w.reshape(-1, w.shape[-1])


class AnchorPenalty:
    """``beta * sum_W d(W, W0)`` over the named parameters; ``W0`` is snapshot at construction.

    ``distance(model)`` returns the relative drift ``||W - W0|| / ||W0||`` over all anchored tensors
    together (the quantity the tests bound for huge ``beta``).
    """

    def __init__(self, model: nn.Module, names: Iterable[str], beta: float, kind: str = "l2",
                 reference: Optional[dict] = None):
        if kind not in ANCHORS:
            raise ValueError(f"anchor: expected one of {ANCHORS}, got {kind!r}")
        if not beta >= 0:
            raise ValueError(f"beta: expected a non-negative number, got {beta}")
        self.names = list(names)
        self.beta = float(beta)
        self.kind = kind
        params = dict(model.named_parameters())
        src = reference if reference is not None else params
        self.w0 = {n: src[n].detach().clone() for n in self.names}
        if kind == "kl":
            self.logp0 = {n: F.log_softmax(_rows(w).double(), -1) for n, w in self.w0.items()}

    def __call__(self, model: nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        total = None
        for n in self.names:
            w = params[n]
            if self.kind == "l2":
                term = (w - self.w0[n].to(w.dtype)).pow(2).sum()
            else:
                lp0 = self.logp0[n]  # float64: KL of nearly equal distributions cancels badly in float32
                term = (lp0.exp() * (lp0 - F.log_softmax(_rows(w).double(), -1))).sum().to(w.dtype)
            total = term if total is None else total + term
        if total is None:
            return torch.zeros(())
        return self.beta * total

    @property
    def decoupled(self) -> bool:
        """True for ``"l2"``: applied by :meth:`prox` after each step, not through the loss."""
        return self.kind == "l2"

    @torch.no_grad()
    def prox(self, model: nn.Module, lr: float) -> None:
        """Proximal step of ``lr * beta * ||W - W0||^2``: ``W <- W0 + (W - W0) / (1 + 2 lr beta)``."""
        if self.beta == 0 or not self.names:
            return
        shrink = 1.0 / (1.0 + 2.0 * lr * self.beta)
        params = dict(model.named_parameters())
        for n in self.names:
            w = params[n]
            w0 = self.w0[n].to(w.dtype)
            w.copy_(w0 + (w - w0) * shrink)

    @torch.no_grad()
    def distance(self, model: nn.Module) -> float:
        """Relative drift ``sqrt(Σ_W ‖W − W0‖²) / sqrt(Σ_W ‖W0‖²)`` of the anchored tensors (float64)."""
        params = dict(model.named_parameters())
        num = sum(float((params[n].double() - self.w0[n].double()).pow(2).sum()) for n in self.names)
        den = sum(float(self.w0[n].double().pow(2).sum()) for n in self.names)
        return (num / den) ** 0.5 if den > 0 else num ** 0.5
