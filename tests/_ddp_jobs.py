"""Cloning jobs shared by tests/test_distributed.py and tests/ddp_worker.py (same seeds on both sides)."""
from __future__ import annotations

import torch

from symclone.distill import DistillConfig, build_pair

JOBS = ("family", "function")


def build(name: str, batch_size: int = 8):
    torch.manual_seed(0)
    if name == "family":
        teacher, student = build_pair("cnn", "blocks", {"paper_layer": True, "size": 12})
        cfg = DistillConfig(mode="family", solver="adam", steps=6, batch_size=batch_size, kernels_per_step=4,
                            n_train=64, lr=1e-2, progress=False, checkpoint_every=100)
    elif name == "function":
        teacher, student = build_pair("cnn", "mlp", {"channels": 2, "depth": 1, "size": 6})
        cfg = DistillConfig(mode="function", solver="sgd", steps=6, batch_size=batch_size, n_train=64, lr=0.05,
                            progress=False)
    else:
        raise ValueError(name)
    return teacher, student, cfg
