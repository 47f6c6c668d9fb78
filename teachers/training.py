"""Train a teacher on a task: Fashion-MNIST classification or the n-body regression.

* ``fashion-mnist``: the teacher gets a linear head on p4- (gcnn) or T(2)- (cnn) invariant pooled
  features (mean and max over space and orientations) and is trained with cross-entropy (AdamW).
  Reported: test accuracy on the upright test set and on the test set rotated by ``k·90°``
  (``k = i mod 4`` for test image ``i``), plus per-``k`` accuracies. A C4-invariant teacher scores
  the same on both (up to float rounding); a plain CNN does not.
* ``nbody``: the e3nn teacher (``input="nbody"``) predicts the positions at frame 40 as
  ``p + f(x)`` from frame 30 (positions, velocities, charges), MSE loss; reported test MSE and the
  MSE on randomly rotated test systems.

Training state (teacher + AdamW moments + step) is checkpointed to ``<out>/train_state`` every
``checkpoint_every`` steps and at the end (safetensors + JSON, atomic); ``resume=True`` continues
from it with the same data order (the permutation of epoch ``e`` is drawn from ``seed + e``). Only
``epochs`` (more of them), ``test_limit``, ``checkpoint_every``, ``device``, ``progress`` and
``data_root`` may change on resume; a corrupt, incomplete or mismatched state raises
:class:`~symclone.io.CheckpointError` naming the file and leaves every file in ``out`` as it was.

Examples
--------
>>> cfg = TeacherTrainConfig(teacher="cnn", task="fashion-mnist", epochs=1)
>>> cfg.batch_size, cfg.optimizer_lr
(64, 0.003)
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from symclone.io import CheckpointError, checkpoint_exists, write_json
from symclone.runtime import RuntimeOptions
from symclone.trainer import TrainingCheckpoint

from .checkpoint import load_teacher_state, save_teacher

__all__ = ["TeacherTrainConfig", "train_teacher", "build_task_teacher", "evaluate_classifier",
           "evaluate_regression", "TASKS", "TASK_DEFAULTS", "RESUME_FIXED"]

log = logging.getLogger(__name__)

TASKS = ("fashion-mnist", "nbody")
#: teacher kwargs used for a task unless overridden by ``teacher_kwargs``
TASK_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("gcnn_c4", "fashion-mnist"): dict(fields=[8, 8, 16], kernel_size=5, bias=True, init_std=None, num_classes=10),
    ("cnn", "fashion-mnist"): dict(channels=[32, 32, 64], kernel_size=5, bias=True, init_std=None, num_classes=10),
    ("e3nn", "nbody"): dict(input="nbody", n_points=5, mul=8, depth=3),
}


@dataclass(frozen=True)
class TeacherTrainConfig(RuntimeOptions):
    """Options of ``symclone train-teacher`` (dotted overrides: ``--train.optimizer_lr=3e-4``).

    ``data_root`` (``--data-root``) is the folder holding the Fashion-MNIST IDX files (``None``: the
    Debian package's ``/usr/share/datasets/fashion-mnist``) or, for ``nbody``, the simulation cache
    (``None``: ``.cache/nbody``). ``seed``, ``device``, ``precision`` (training forward) and ``progress``
    come from :class:`~symclone.runtime.RuntimeOptions`.
    """

    teacher: str = "gcnn_c4"
    task: str = "fashion-mnist"
    teacher_kwargs: dict = field(default_factory=dict)
    epochs: int = 1
    batch_size: int = 64
    optimizer_lr: float = 3e-3
    weight_decay: float = 1e-4
    train_limit: Optional[int] = None
    test_limit: Optional[int] = None
    nbody_size: str = "small"
    checkpoint_every: int = 100
    data_root: Optional[str] = None

    def __post_init__(self) -> None:
        from symclone.validation import check_choice, check_float, check_int

        super().__post_init__()
        check_choice(self.task, "task", TASKS)
        check_int(self.epochs, "epochs", minimum=1)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_float(self.optimizer_lr, "optimizer_lr (--lr)", positive=True)
        check_float(self.weight_decay, "weight_decay", minimum=0.0)
        check_int(self.train_limit, "train_limit", minimum=1, allow_none=True)
        check_int(self.test_limit, "test_limit", minimum=1, allow_none=True)
        check_int(self.checkpoint_every, "checkpoint_every", minimum=1)
        if not isinstance(self.teacher_kwargs, dict):
            raise ValueError(f"teacher_kwargs: expected a dict of teacher options, got {self.teacher_kwargs!r}")


#: config fields that must equal the saved state's on resume (they fix the optimisation trajectory)
RESUME_FIXED = ("teacher", "task", "teacher_kwargs", "batch_size", "optimizer_lr", "weight_decay", "train_limit",
                "nbody_size", "seed")


def build_task_teacher(cfg: TeacherTrainConfig) -> nn.Module:
    """The untrained teacher ``cfg.teacher`` for ``cfg.task``: the task's :data:`TASK_DEFAULTS` updated
    with ``cfg.teacher_kwargs``; ``ValueError`` naming the supported pairs for any other pair.

    Examples
    --------
    >>> build_task_teacher(TeacherTrainConfig(teacher="cnn", task="fashion-mnist",
    ...                                       teacher_kwargs={"channels": 2, "depth": 1})).head
    Linear(in_features=4, out_features=10, bias=True)
    """
    from symclone.registry import create_teacher

    if cfg.task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {cfg.task!r}")
    key = (cfg.teacher, cfg.task)
    if key not in TASK_DEFAULTS:
        ok = [f"{t} on {k}" for t, k in TASK_DEFAULTS]
        raise ValueError(f"teacher/task: cannot train teacher {cfg.teacher!r} on {cfg.task!r}; supported: {ok}")
    return create_teacher(cfg.teacher, **{**TASK_DEFAULTS[key], **dict(cfg.teacher_kwargs)})


@functools.lru_cache(maxsize=4)
def _fashion_mnist(train: bool, root: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split, decoded once per process (gunzip of the IDX files is the slow part)."""
    from symclone.data import load_fashion_mnist

    return load_fashion_mnist(train=train, root=root).tensors


def _data(cfg: TeacherTrainConfig
          ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``((x_train, y_train), (x_test, y_test))`` of ``cfg.task``, cut to ``train_limit``/``test_limit``."""
    if cfg.task == "fashion-mnist":
        tr, te = _fashion_mnist(True, cfg.data_root), _fashion_mnist(False, cfg.data_root)
        return (tuple(t[: cfg.train_limit] for t in tr) if cfg.train_limit else tr,
                tuple(t[: cfg.test_limit] for t in te) if cfg.test_limit else te)
    from symclone.data.nbody import nbody_tensors

    root = cfg.data_root if cfg.data_root is not None else ".cache/nbody"
    tr = nbody_tensors("train", size=cfg.nbody_size, root=root)
    te = nbody_tensors("test", size=cfg.nbody_size, root=root)
    if cfg.train_limit:
        tr = tuple(t[: cfg.train_limit] for t in tr)
    if cfg.test_limit:
        te = tuple(t[: cfg.test_limit] for t in te)
    return tr, te


def _loss(teacher: nn.Module, task: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if task == "fashion-mnist":
        return F.cross_entropy(teacher(x), y)
    return F.mse_loss(x[..., :3] + teacher(x), y)


@torch.no_grad()
def evaluate_classifier(teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> dict:
    """Accuracy on the upright set, on the set rotated by ``k_i·90°`` (``k_i = i mod 4``), per ``k``."""
    teacher.eval()
    dev = next(teacher.parameters()).device
    ks = torch.arange(len(x)) % 4
    per_k, correct_up, correct_rot = [0, 0, 0, 0], 0, 0
    for i in range(0, len(x), batch_size):
        xb, yb, kb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev), ks[i:i + batch_size]
        preds = [teacher(torch.rot90(xb, k, dims=(-2, -1))).argmax(-1) for k in range(4)]
        for k in range(4):
            per_k[k] += int((preds[k] == yb).sum())
        correct_up += int((preds[0] == yb).sum())
        rot = torch.stack(preds)[kb.to(dev), torch.arange(len(xb), device=dev)]
        correct_rot += int((rot == yb).sum())
    n = len(x)
    return {"test_accuracy_upright": correct_up / n, "test_accuracy_rotated": correct_rot / n,
            "test_accuracy_by_rotation": [c / n for c in per_k], "n_test": n}


@torch.no_grad()
def evaluate_regression(teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> dict:
    """Test MSE of ``p + f(x)`` on the positions, and on randomly rotated/reflected systems."""
    from e3nn import o3

    teacher.eval()
    dev = next(teacher.parameters()).device
    x, y = x.to(dev), y.to(dev)
    mse = float(F.mse_loss(x[..., :3] + teacher(x), y))
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(len(x), 3, 3, generator=g))[0].to(dev, x.dtype)
    D = o3.Irreps("1x1o+1x1o+1x0e").D_from_matrix(Q.cpu()).to(dev, x.dtype)
    xr, yr = x @ D.transpose(-1, -2), y @ Q.transpose(-1, -2)
    mse_rot = float(F.mse_loss(xr[..., :3] + teacher(xr), yr))
    return {"test_mse": mse, "test_mse_rotated": mse_rot, "n_test": len(x)}


def _save_state(path: Path, teacher: nn.Module, opt: torch.optim.Optimizer, step: int, epoch: int,
                curve: list, cfg: TeacherTrainConfig, ctx: Any = None) -> None:
    """The training state in one crash-safe file (the training core's :class:`TrainingCheckpoint`): the
    teacher's parameters (``x/teacher.<name>``), AdamW's state and the progress record."""
    TrainingCheckpoint(path, ctx).save({"step": step, "epoch": epoch, "loss_curve": curve,
                                   "config": dataclasses.asdict(cfg), "teacher": teacher.config}, optimizer=opt,
                                  tensors={f"teacher.{k}": v for k, v in teacher.named_parameters()})


def _read_state(path: Path, teacher: nn.Module, cfg: TeacherTrainConfig) -> tuple[dict, dict]:
    """Load and validate ``<path>.safetensors`` against ``teacher`` and ``cfg`` (nothing is modified)."""
    meta, tensors = TrainingCheckpoint(path).read()   # CheckpointError naming the file if corrupt
    meta_file = f"{path}.safetensors"   # the checkpoint's metadata lives in its header
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int) or "optimizer" not in meta:
        raise CheckpointError(f"resume: {meta_file} is not a training state written by train-teacher (no step or "
                              "optimiser state); use a new --out directory")
    if meta.get("teacher") != teacher.config:
        raise CheckpointError(f"resume: {meta_file} was written for teacher {meta.get('teacher')}, "
                              f"not {teacher.config}; use a new --out directory")
    saved = meta.get("config") or {}
    now = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))   # as it reads back from JSON
    diff = [k for k in RESUME_FIXED if k in saved and saved[k] != now[k]]
    if diff:
        raise CheckpointError(f"resume: {meta_file} was written with a different training config ("
                              + ", ".join(f"{k}: saved {saved[k]!r}, now {now[k]!r}" for k in diff)
                              + "); use the same settings or a new --out directory")
    return tensors, meta


def _load_state(path: Path, teacher: nn.Module, opt: torch.optim.Optimizer,
                cfg: TeacherTrainConfig) -> tuple[int, list]:
    tensors, meta = _read_state(path, teacher, cfg)
    source = f"{path}.safetensors"
    try:
        load_teacher_state(teacher, {k[10:]: v for k, v in tensors.items() if k.startswith("x/teacher.")}, source)
        TrainingCheckpoint(path).restore_optimizer(opt, meta, tensors)
    except CheckpointError as err:
        raise CheckpointError(f"resume: {source}: {err}; use a new --out directory") from None
    return int(meta["step"]), list(meta.get("loss_curve", []))


def train_teacher(cfg: TeacherTrainConfig, out: str | Path, resume: bool = False, ctx: Any = None) -> dict:
    """Train ``cfg.teacher`` on ``cfg.task``; write ``teacher.*``, ``train_state.*``, ``metrics.json``
    under ``out`` and return the metrics.

    ``ctx``: a multi-process :class:`symclone.distributed.DistributedContext` (``torchrun``): the teacher
    runs under ``DistributedDataParallel``, every rank draws the same permutation and takes its contiguous
    shard of each global batch of ``batch_size`` (trimmed to a multiple of the world size), so N processes
    follow one process; rank 0 writes. Inputs take the teacher's dtype (a float64 teacher trains in
    float64)."""
    from symclone.runtime import precision_context, resolve_device

    out = Path(out)
    state_path = out / "train_state"
    state_files = [state_path.with_suffix(s) for s in (".safetensors", ".json")]
    if not resume and any(f.exists() for f in state_files):
        raise ValueError(f"out: {out} already holds a training run; pass --resume or choose a new --out")
    if resume and any(f.exists() for f in state_files) and not checkpoint_exists(state_path):
        missing = next(f for f in state_files if not f.exists())
        raise CheckpointError(f"resume: the training state in {out} is incomplete ({missing} is missing); "
                              "use a new --out directory")
    dist_on = ctx is not None and ctx.distributed
    is_main = ctx is None or ctx.is_main
    device = ctx.device if ctx is not None else resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    teacher = build_task_teacher(cfg).to(device)
    dtype = next(teacher.parameters()).dtype
    opt = torch.optim.AdamW(teacher.parameters(), lr=cfg.optimizer_lr, weight_decay=cfg.weight_decay)
    step, curve = 0, []
    if resume and checkpoint_exists(state_path):   # validated before the (slower) data loading
        step, curve = _load_state(state_path, teacher, opt, cfg)
    (xtr, ytr), (xte, yte) = _data(cfg)
    steps_per_epoch = math.ceil(len(xtr) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    if step:
        if step > total:
            raise CheckpointError(f"resume: {state_path}.json is at step {step}, past the {total} steps of "
                                  f"epochs={cfg.epochs}; pass at least as many epochs as were trained")
        log.info("resumed from step %d", step)
    t0 = time.time()
    from symclone.progress import progress_bar

    bar = progress_bar(total, f"train {cfg.teacher}", enabled=cfg.progress and is_main, initial=step)
    teacher.train()
    fwd = teacher
    if dist_on:
        from symclone.distributed import wrap_ddp
        ctx.shard_range(cfg.batch_size)  # early, clear error on an indivisible global batch
        fwd = wrap_ddp(teacher, ctx)
    while step < total:
        epoch, i = divmod(step, steps_per_epoch)
        perm = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(cfg.seed + epoch))
        idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
        if dist_on:  # equal contiguous shards: DDP's gradient average is the global batch mean
            idx = ctx.shard(idx[:len(idx) - len(idx) % ctx.world_size])
        xb = xtr[idx].to(device, dtype if xtr.is_floating_point() else None)
        yb = ytr[idx].to(device, dtype if ytr.is_floating_point() else None)
        with precision_context(cfg.precision, device):
            loss = _loss(fwd, cfg.task, xb, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        curve.append(float(ctx.all_reduce_mean(loss.detach())) if dist_on else loss.item())
        bar.update(1, loss=curve[-1])
        if step % cfg.checkpoint_every == 0 or step == total:  # rank 0 writes, every rank waits
            _save_state(state_path, teacher, opt, step, epoch, curve, cfg, ctx)
    bar.close()
    seconds = time.time() - t0
    evaluate = evaluate_classifier if cfg.task == "fashion-mnist" else evaluate_regression
    metrics = {"teacher": teacher.config, "task": cfg.task, "config": dataclasses.asdict(cfg), "steps": step,
               "epochs": cfg.epochs, "n_train": len(xtr), "train_seconds_this_session": seconds,
               "num_params": sum(p.numel() for p in teacher.parameters()),
               "final_train_loss": curve[-1] if curve else None, "loss_curve": curve,
               "world_size": 1 if ctx is None else ctx.world_size,
               **evaluate(teacher, xte.to(dtype) if xte.is_floating_point() else xte,
                          yte.to(dtype) if yte.is_floating_point() else yte)}
    if is_main:
        save_teacher(teacher, out / "teacher", meta={"task": cfg.task, "steps": step})
        write_json(out / "metrics.json", metrics)
    if ctx is not None:
        ctx.barrier()
    return metrics
