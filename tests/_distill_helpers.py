"""Shared pieces of the cloning tests: one torch thread and a fast DistillConfig."""
from __future__ import annotations

import pytest
import torch

from symclone.distill import DistillConfig


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread is much faster than two on a shared machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def fast(**kw):
    base = dict(n_train=256, n_eval=32, progress=False, eval_kernels=4)
    base.update(kw)
    return DistillConfig(**base)
