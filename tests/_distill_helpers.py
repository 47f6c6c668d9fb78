"""Shared pieces of the cloning tests: a fast DistillConfig."""
from __future__ import annotations

from symclone.distill import DistillConfig


def fast(**kw):
    base = dict(n_train=256, n_eval=32, progress=False, eval_kernels=4)
    base.update(kw)
    return DistillConfig(**base)
