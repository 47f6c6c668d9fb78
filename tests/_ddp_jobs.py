"""Cloning jobs shared by tests/test_distributed.py and tests/ddp_worker.py (same seeds on both sides)."""
from __future__ import annotations

import contextlib

import torch

from symclone.distill import DistillConfig, build_pair

JOBS = ("family", "function")

#: Both sides train in float64: a 2-process run sums its gradients in another order than one process, and
#: in float32 Adam turns that rounding (~1e-8 on gradients whose true value is ~0, as large as Adam's eps)
#: into 1e-5 relative weight differences whose size depends on the CPU. In float64 the same rounding is
#: ~1e-17, far below eps, so the runs agree to ~1e-12 on any CPU while a real difference (the control:
#: one shard alone) stays at ~1e-1.
DDP_EQUAL_TOL = 1e-9


@contextlib.contextmanager
def float64_default():
    """Build and train in float64 inside the block (escnn modules must be built outside it)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


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


#: ``symclone symmetrize`` on a tiny cloned run (make_sym_run): the uniform sampler over C4 (the exact,
#: deterministic Reynolds average, so 1 and 2 processes see identical group elements), the student trained,
#: 2 epochs of 4 global batches of 8, epochs only (no CPU-time budget, which differs between runs). Not a
#: learned/canonical sampler: their frame networks' gradients carry rounding noise that depends on the batch
#: split (measured 2e-4 relative, and the score bias's true gradient is 0), which Adam amplifies.
SYM_ARGS = ["--sampler", "uniform", "--k", "all", "--train-student", "--epochs", "2", "--minutes", "0",
            "--batch-size", "8", "--n-train", "32", "--n-eval", "16", "--lr", "1e-2", "--no-progress",
            "--device", "cpu"]
SYM_WEIGHTS = "symmetrize/teacher-uniform-kall-weights.safetensors"
SYM_METRICS = "symmetrize/teacher-uniform-kall.json"
SYM_CHECKPOINT = "symmetrize/teacher-uniform-kall-checkpoint.json"


#: ``symclone train-teacher`` (a small T(2) CNN classifier, 2 epochs of 16 images, batch 8) on the tiny
#: Fashion-MNIST-format folder written by :func:`teacher_data`; ``--data-root`` and ``--out`` are appended
TEACHER_KWARGS = {"channels": 2, "depth": 1, "kernel_size": 3}
TEACHER_ARGS = ["train-teacher", "--teacher", "cnn", "--batch-size", "8", "--epochs", "2", "--checkpoint-every", "3",
                "--teacher-kwargs", '{"channels": 2, "depth": 1, "kernel_size": 3}', "--no-progress",
                "--device", "cpu"]


def teacher_data(root) -> None:
    from pathlib import Path

    from _idx import write_idx_dataset
    write_idx_dataset(Path(root), n=16, size=28)


def teacher_params(path=None) -> dict:
    """The trained teacher saved at ``path`` (``<run>/teacher``), or the untrained one of TEACHER_ARGS."""
    from symclone.registry import create_teacher
    from symclone.teachers import load_teacher
    from symclone.teachers.training import TASK_DEFAULTS

    t = load_teacher(path) if path is not None else \
        create_teacher("cnn", **{**TASK_DEFAULTS[("cnn", "fashion-mnist")], **TEACHER_KWARGS})
    return {k: v.detach().clone() for k, v in t.state_dict().items()}


def make_sym_run(path) -> None:
    """A run directory as ``symclone clone`` writes it: a one-layer C4 GCNN teacher on 8x8 images and an MLP
    student."""
    from pathlib import Path

    from symclone.io import write_json
    from symclone.students import save_student
    from symclone.teachers import save_teacher

    torch.manual_seed(0)
    t, s = build_pair("gcnn_c4", "mlp", {"fields": 1, "depth": 1, "size": 8})
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_teacher(t, path / "teacher")
    save_student(s, path / "student")
    write_json(path / "config.json", {"teacher": t.config, "student": s.config, "mode": "function"})
