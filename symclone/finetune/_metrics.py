"""Evaluation of a classifier on a task: accuracy per test split and invariance error of the logits.

The invariance error is the shared checker's relative error
``EE = max_g ||f(g.x) - f(x)|| / ||f(x)||`` on a test batch (logits are ``trivial``), over all four
rotations for ``c4`` tasks and ``n`` sampled cyclic shifts for ``t2`` tasks.

Examples
--------
>>> import torch
>>> from symclone.finetune.tasks import task_from_tensors
>>> x = torch.rand(6, 1, 28, 28); y = torch.arange(6)
>>> t = task_from_tensors("c4-breaking", x, y, x, y)
>>> f = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(1, 20))
>>> invariance_error(f, t, n_samples=6) < 1e-6   # global pooling is rotation invariant
True
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..runtime import device_of
from ..equivariance import equivariance_error
from .tasks import Task, TaskSplit

__all__ = ["accuracy", "invariance_error", "evaluate", "structure_residuals"]


@torch.no_grad()
def accuracy(model: nn.Module, split: TaskSplit, batch_size: int = 512, limit: Optional[int] = None,
             fold: Optional[int] = None) -> float:
    """Top-1 accuracy of ``model`` on ``split`` (first ``limit`` samples; batches go to the model's device).

    With ``fold = m`` a prediction counts as right when ``argmax(logits) mod m == label mod m``: on a
    20-class breaking task (labels ``y`` / ``y + 10``) ``fold=10`` ignores the symmetry-breaking bit.

    Examples
    --------
    >>> from symclone.finetune.tasks import task_from_tensors
    >>> x = torch.rand(4, 1, 28, 28); y = torch.arange(4)
    >>> split = task_from_tensors("c4-breaking", x, y, x, y).test["test"]
    >>> _, labels = split.batch(torch.arange(4))
    >>> class Fixed(nn.Module):   # answers label + 10: wrong on 20 classes, right modulo 10
    ...     def forward(self, xb): return nn.functional.one_hot((labels + 10) % 20, 20).float()
    >>> accuracy(Fixed(), split), accuracy(Fixed(), split, fold=10)
    (0.0, 1.0)
    """
    if fold is not None and (isinstance(fold, bool) or not isinstance(fold, int) or fold < 1):
        raise ValueError(f"fold: expected None or a positive integer modulus, got {fold!r}")
    was = model.training
    model.eval()
    try:
        dev = device_of(model)
        n = len(split) if limit is None else min(limit, len(split))
        correct = 0
        for s in range(0, n, batch_size):
            x, y = split.batch(torch.arange(s, min(s + batch_size, n)))
            pred, y = model(x.to(dev)).argmax(-1), y.to(dev)
            if fold is not None:
                pred, y = pred % fold, y % fold
            correct += int((pred == y).sum())
    finally:
        model.train(was)
    return correct / max(n, 1)


def invariance_error(model: nn.Module, task: Task, n_samples: int = 128, n_elements: int = 8,
                     dtype: Optional[torch.dtype] = None) -> float:
    """Max over group elements of the relative change of the logits on ``n_samples`` test inputs
    (fp32 unless ``dtype``; on the model's device)."""
    split = task.test[task.primary]
    x, _ = split.batch(torch.arange(min(n_samples, len(split))))
    x = x.to(device_of(model))
    was = model.training
    model.eval()
    try:
        res = equivariance_error(model, task.group, "image", "trivial", x=x, n=n_elements, dtype=dtype)
    finally:
        model.train(was)
    return float(res["max"])


def evaluate(model: nn.Module, task: Task, limit: Optional[int] = None, n_invariance: int = 128) -> dict:
    """``{"accuracy": {split: acc}, "invariance_error": EE}``."""
    return {"accuracy": {k: accuracy(model, s, limit=limit) for k, s in task.test.items()},
            "invariance_error": invariance_error(model, task, n_samples=n_invariance)}


def structure_residuals(model: nn.Module, max_kernels: int = 4) -> Optional[list]:
    """Structure residual ``δ_G = ||W - R(W)|| / ||W||`` (``symclone.analysis.structure_residual``)
    of each cloned layer of a model (or its first submodule) that declares ``structure_group`` (the teacher's group, e.g.
    ``p4`` or ``t2``) and holds its student as ``net`` with ``dense_matrix``. For a kernel-conditioned
    student applied with learnable kernels, the mean of ``δ_G(Σ_b h_b(k) W_b)`` over
    ``max_kernels`` fixed probe kernels ``k ~ N(0, I)`` (seeded): a property of the cloned
    structure alone, independent of the kernels being trained (δ_G is scale-invariant, and an
    exact clone gives ~0 for every k). ``None`` when not applicable or analysis is unavailable."""
    model = next((m for m in model.modules() if getattr(m, "structure_group", None) is not None), model)
    group = getattr(model, "structure_group", None)
    net = getattr(model, "net", None)
    if group is None or net is None or not hasattr(net, "dense_matrix"):
        return None
    try:
        from ..analysis import structure_residual  # type: ignore[attr-defined]
    except ImportError:
        return None
    kernels = getattr(model, "kernels", None)
    out = []
    with torch.no_grad():
        for l in range(1, int(net.num_layers) + 1):
            args = (group, tuple(net.feature_shapes[l - 1]), tuple(net.feature_shapes[l]),
                    net.reps[l - 1], net.reps[l])
            if kernels is None:
                out.append(float(structure_residual(net.dense_matrix(l).detach().cpu(), *args)))
            else:
                gen = torch.Generator().manual_seed(l)
                probes = torch.randn(max_kernels, kernels.shape[-1], generator=gen).to(kernels)
                vals = [float(structure_residual(net.dense_matrix(l, k).cpu(), *args)) for k in probes]
                out.append(sum(vals) / len(vals))
    return out
