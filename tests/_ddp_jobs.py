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


#: ``symclone clone`` command lines run under torchrun (2 ranks) and in one process; OUT is appended
CLI_JOBS = {
    "cli_family": ["clone", "--teacher", "cnn", "--student", "blocks", "--mode", "family", "--paper-layer",
                   "--no-progress", "--device", "cpu", "--teacher.size=12", "--distill.solver=adam",
                   "--distill.steps=6", "--distill.batch_size=8", "--distill.kernels_per_step=4",
                   "--distill.n_train=64", "--distill.n_eval=8", "--distill.lr=1e-2"],
    "cli_function": ["clone", "--teacher", "cnn", "--student", "mlp", "--mode", "function", "--no-progress",
                     "--device", "cpu", "--teacher.channels=2", "--teacher.depth=1", "--teacher.size=6",
                     "--distill.solver=sgd", "--distill.steps=6", "--distill.batch_size=8", "--distill.lr=0.05",
                     "--distill.n_train=32", "--distill.n_eval=8", "--distill.equivariance_weight=0.5"],
}

#: the untrained students of CLI_JOBS (deterministic constructors, seeds fixed by the registries)
CLI_INITIAL = {
    "cli_family": lambda: build_pair("cnn", "blocks", {"paper_layer": True, "size": 12})[1],
    "cli_function": lambda: build_pair("cnn", "mlp", {"channels": 2, "depth": 1, "size": 6})[1],
}


def build_finetune():
    """An MLP whose first layer is 'cloned', anchored fine-tuning on a small C4 task (2 epochs, batch 16)."""
    from torch import nn

    from symclone.finetune import FinetuneConfig
    from symclone.finetune.tasks import task_from_tensors

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2)
    x, y = torch.rand(32, 1, 28, 28, generator=gen), torch.arange(32) % 10
    task = task_from_tensors("c4-generalisation", x, y, x[:8], y[:8])
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))
    kw = dict(mode="anchored", beta=1e-2, cloned=["1.*"], config=FinetuneConfig(epochs=2, batch_size=16, lr=1e-2,
                                                                                 progress=False, eval_limit=8))
    return model, task, kw
