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


def build_symmetrized():
    """A C4-symmetrized (Reynolds, exact) MLP classifier on 8x8 images, its data and its mean CE loss."""
    from torch import nn
    from torch.utils.data import TensorDataset

    from symclone.symmetrize import Symmetrized

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 4))
    model = Symmetrized(mlp, "c4", "image", "trivial", sampler="uniform")
    gen = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(32, 1, 8, 8, generator=gen), torch.randint(0, 4, (32,), generator=gen))

    def loss_fn(m, batch):
        return torch.nn.functional.cross_entropy(m(batch[0]), batch[1])

    return model, data, loss_fn
