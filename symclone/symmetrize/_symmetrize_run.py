"""Symmetrize the student of a cloning run (``symclone symmetrize runs/NAME``).

Tasks:

* ``nbody`` (runs whose teacher is the e3nn teacher with ``input="nbody"``): predict positions at
  frame 40, ``y = p + f_sym(x)`` with ``f = student``; metric: test MSE.
* ``teacher`` (any run): make ``f_sym(x) = (1/k) Σ g·student(g⁻¹·x)`` match the teacher's output
  on the teacher's input distribution; metric: relative error ``‖f_sym(x) − teacher(x)‖ / ‖teacher(x)‖``.

Only the sampler is trained unless ``train_student=True``. ``k`` is the number of samples per input, or
``"all"`` for the exact average over every element of a finite group (uniform sampler); an integer
``k >= |G|`` averages over the whole group too, a smaller one samples (see
:class:`~symclone.symmetrize.Symmetrized`); the metrics record what was done (``averaging``,
``evaluations_per_input``). Writes ``<run>/symmetrize/<task>-<sampler>-k<k>.json`` (``k<k>`` is
``kall`` for ``k="all"``) and the wrapper's weights as
``<task>-<sampler>-k<k>-weights.safetensors`` (+ ``.json``). Training checkpoints to
``<task>-<sampler>-k<k>-checkpoint`` after every epoch; ``resume=True`` continues from it (removed
when the run finishes).

Devices and scale: ``device`` / ``precision`` of :class:`SymmetrizeRunConfig` (training forward only;
the equivariance measurement stays in float64). Under ``torchrun --nproc_per_node N`` pass a
:class:`symclone.distributed.DistributedContext` (the CLI does): training runs under
``DistributedDataParallel`` with ``batch_size`` as the global batch, and only rank 0 measures and
writes (non-main ranks return ``{"rank": r, "train": ...}``).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..runtime import RuntimeOptions
from ._train import TrainConfig, equivariance_vs_k, evaluate_mse, time_forward, train_regressor
from ._wrapper import Symmetrized

__all__ = ["SymmetrizeRunConfig", "symmetrize_run", "Displacement", "task_of_run"]

log = logging.getLogger(__name__)


class Displacement(nn.Module):
    """``y = p + net(x)``: a per-particle vector network as a position predictor (n-body)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x[..., :3] + net(x)``: the positions (first 3 features of each particle) plus the
        predicted displacement, ``(B, N, 3)``."""
        return x[..., :3] + self.net(x)


@dataclass(frozen=True)
class SymmetrizeRunConfig(RuntimeOptions):
    """Settings of :func:`symmetrize_run` (the ``symclone symmetrize`` command), validated on creation.

    ``sampler``: ``"uniform" | "canonical" | "learned"``; ``k`` / ``k_eval``: samples per input in
    training / evaluation, or ``"all"`` (every element of a finite group); ``task``: ``"nbody" |
    "teacher"`` (default: from the run, :func:`task_of_run`); ``train_student``: train the student
    too (otherwise only the sampler); ``noise``: the learned sampler's input noise; ``epochs``: the training
    budget (the schedule follows it); ``minutes``: an optional CPU-time cap (stops early, machine-dependent) (``epochs=0`` evaluates the untrained wrapper);
    ``n_train`` / ``n_eval``: dataset sizes; ``ks``: the ``k`` at which equivariance is measured;
    ``seed`` / ``device`` / ``precision`` (of the training forward; the equivariance check stays float64)
    / ``progress``: :class:`~symclone.runtime.RuntimeOptions` (under torchrun the rank's device is used).

    Examples
    --------
    >>> SymmetrizeRunConfig(sampler="uniform", k="all").k
    'all'
    """

    sampler: str = "learned"
    k: int | str = 20                   # samples per input, or "all" (every element of a finite group)
    k_eval: Optional[int | str] = None
    task: Optional[str] = None          # "nbody" | "teacher"; default from the run
    train_student: bool = False
    noise: Optional[float] = None       # learned sampler's input-noise scale (None: the sampler's default)
    minutes: Optional[float] = None     # optional CPU-minute cap (stops a run; the schedule follows epochs)
    epochs: int = 50
    lr: float = 1e-3
    batch_size: int = 100
    n_train: int = 3000
    n_eval: int = 500
    ks: tuple = (1, 4, 20)

    def __post_init__(self) -> None:
        from ._wrapper import _check_k
        super().__post_init__()
        _check_k(self.k, "k")
        if self.k_eval is not None:
            _check_k(self.k_eval, "k_eval")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"minutes: expected a positive CPU-minute budget or None, got {self.minutes}")
        from ..validation import check_choice, check_float, check_int
        check_choice(self.sampler, "sampler", ("uniform", "canonical", "learned"))
        check_int(self.epochs, "epochs", minimum=0)  # 0: evaluate the untrained wrapper only
        check_float(self.lr, "lr", positive=True)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_int(self.n_train, "n_train", minimum=1)
        check_int(self.n_eval, "n_eval", minimum=1)
        check_float(self.noise, "noise", minimum=0.0, allow_none=True)


def task_of_run(arts) -> str:
    """The default task of a loaded run: ``"nbody"`` for the e3nn teacher with ``input="nbody"``,
    else ``"teacher"`` (see the module doc)."""
    kw = arts.config.get("teacher", {}).get("kwargs", {})
    return "nbody" if arts.config.get("teacher", {}).get("name") == "e3nn" and kw.get("input") == "nbody" else "teacher"


def _teacher_inputs(teacher, n: int, seed: int) -> torch.Tensor:
    shape = tuple(teacher.feature_shapes[0])
    if getattr(teacher, "input", None) == "nbody":
        from ..data.nbody import nbody_tensors
        split = "train" if seed == 0 else "test"
        return nbody_tensors(split, size=n)[0]
    if teacher.reps[0].is_image:
        if shape[0] == 1 and shape[-1] == 28:
            try:
                from ..data import load_fashion_mnist
                ds = load_fashion_mnist(train=seed == 0, limit=n)
                return torch.stack([ds[i][0] for i in range(len(ds))])
            except Exception as err:  # noqa: BLE001 - fall back to synthetic images
                log.info("Fashion-MNIST unavailable (%s); using Gaussian images", err)
        g = torch.Generator().manual_seed(1000 + seed)
        return torch.randn(n, *shape, generator=g)
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.randn(n, *shape, generator=g)


def _group_of(teacher):
    return teacher.group


def symmetrize_run(run_dir: str | Path, cfg: SymmetrizeRunConfig = SymmetrizeRunConfig(), arts=None,
                   ctx=None, resume: bool = False, stop_after: Optional[int] = None) -> dict:
    """Wrap the run's student in :class:`Symmetrized`, train, measure, and write the metrics.

    ``ctx``: a :class:`~symclone.distributed.DistributedContext` for DDP training (``torchrun``);
    ``resume``: continue from the per-epoch checkpoint (otherwise a stale one is removed first);
    ``stop_after``: stop after that many epochs (checkpointed, nothing measured or written), as a job
    hitting its time limit.
    """
    from ..io import remove_checkpoint, save_checkpoint, write_json
    from ..runs import load_run
    from ..runtime import resolve_device
    is_main = ctx is None or ctx.is_main
    dev = ctx.device if ctx is not None else resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    run_dir = Path(run_dir)
    arts = arts or load_run(run_dir)
    teacher, student = arts.teacher.eval(), arts.student
    for p in teacher.parameters():
        p.requires_grad_(False)
    task = cfg.task or task_of_run(arts)
    if task not in ("nbody", "teacher"):
        raise ValueError(f"task: expected 'nbody' or 'teacher', got {task!r}")
    rep_in, rep_out = teacher.reps[0], teacher.reps[-1]
    if task == "nbody":
        if getattr(teacher, "input", None) != "nbody":
            raise ValueError("task: 'nbody' needs a run cloned from the e3nn teacher with input='nbody'")
        from ..data.nbody import NBODY_REP_IN, nbody_tensors
        base = Displacement(student)
        rep_in, rep_out = NBODY_REP_IN, "points"
        tr = nbody_tensors("train", size=cfg.n_train)
        va = nbody_tensors("valid", size=cfg.n_eval)
        te = nbody_tensors("test", size=cfg.n_eval)
    else:
        base = student
        xtr, xte = _teacher_inputs(teacher, cfg.n_train, 0).to(dev), _teacher_inputs(teacher, cfg.n_eval, 1).to(dev)
        teacher.to(dev)
        with torch.no_grad():  # targets in fp32 on the training device
            ytr = torch.cat([teacher(xtr[i:i + 256]) for i in range(0, len(xtr), 256)])
            yte = torch.cat([teacher(xte[i:i + 256]) for i in range(0, len(xte), 256)])
        n_val = max(1, len(xte) // 2)
        tr, va, te = (xtr, ytr), (xte[:n_val], yte[:n_val]), (xte[n_val:], yte[n_val:])
    group = _group_of(teacher)
    kw = {}
    if cfg.noise is not None:
        if cfg.sampler != "learned":
            raise ValueError(f"noise: only the learned sampler takes input noise, got sampler={cfg.sampler!r}")
        kw["noise"] = float(cfg.noise)
    if cfg.sampler in ("learned", "canonical") and group.name in ("c4", "p4"):
        kw["in_channels"] = int(teacher.feature_shapes[0][0])
    # translations by centring only where the output is a position (n-body); the teacher task keeps
    # the teacher's own (non-translation-equivariant) semantics
    f = Symmetrized(base, group, rep_in, rep_out, sampler=cfg.sampler, k=cfg.k,
                    k_eval=cfg.k_eval or cfg.k, center=None if task == "nbody" else False, **kw)
    averaging = {"train": f.sampler.describe(f.k), "eval": f.sampler.describe(f.k_eval)}
    log.info("symmetrize: training %s; evaluation %s", averaging["train"], averaging["eval"])
    for p in student.parameters():
        p.requires_grad_(cfg.train_student)
    f.to(dev)
    te = tuple(t.to(dev) for t in te)
    ref = float(te[1].pow(2).mean())
    bare_before = evaluate_mse(base, *te)
    sym_before = evaluate_mse(f, *te)
    trainable = [p for p in f.parameters() if p.requires_grad]
    hist = {}
    out = run_dir / "symmetrize"
    stem = out / f"{task}-{cfg.sampler}-k{cfg.k}"
    ckpt = str(stem) + "-checkpoint"  # no dots in the stem: checkpoint files add their own suffixes
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            remove_checkpoint(ckpt)
    if ctx is not None:
        ctx.barrier()
    if trainable and (cfg.epochs > 0):
        tcfg = TrainConfig(lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs, minutes=cfg.minutes,
                           eval_every=1, seed=cfg.seed, progress=cfg.progress, device=str(dev),
                           precision=cfg.precision)
        hist = train_regressor(f, tr, va, tcfg, checkpoint=ckpt, ctx=ctx, stop_after=stop_after)
        if hist.get("stopped_by") == "stop_after":
            return {"stopped_after": hist["epoch"], "checkpoint": ckpt, "train": hist}
    if not is_main:  # rank 0 measures and writes
        return {"rank": ctx.rank, "train": hist}
    sym_after = evaluate_mse(f, *te)
    xb = te[0][:min(100, len(te[0]))]
    t_bare, t_sym = time_forward(base, xb, 3), time_forward(f, xb, 3)
    # the configured evaluation k is measured too (e.g. k="all": the exact average)
    ks = tuple(cfg.ks) + (() if f.k_eval in tuple(cfg.ks) else (f.k_eval,))
    eq = equivariance_vs_k(f, te[0][:min(50, len(te[0]))], ks=ks)
    metric = "mse" if task == "nbody" else "relative_mse_to_teacher"
    norm = 1.0 if task == "nbody" else ref
    metrics = {
        "run": str(run_dir), "task": task, "metric": metric, "group": group.name, "config": asdict(cfg),
        "exact": f.sampler.exact_for(f.k_eval), "averaging": averaging,
        "evaluations_per_input": {"train": f.sampler.evaluations(f.k), "eval": f.sampler.evaluations(f.k_eval)},
        "trainable_parameters": sum(p.numel() for p in trainable),
        "bare_student": bare_before / norm, "symmetrized_before_training": sym_before / norm,
        "symmetrized_after_training": sym_after / norm,
        "equivariance_vs_k": eq, "seconds_per_forward": {"bare": t_bare, "symmetrized": t_sym,
                                                        "ratio": t_sym / max(t_bare, 1e-12), "batch": len(xb)},
        "train": {k: hist.get(k) for k in ("epoch", "cpu_seconds", "best_valid", "curve", "world_size")},
        "device": str(dev), "world_size": 1 if ctx is None else ctx.world_size,
    }
    write_json(stem.with_suffix(".json"), metrics)
    save_checkpoint(str(stem) + "-weights", {k: v.contiguous() for k, v in f.state_dict().items()}, {"config": asdict(cfg)})
    remove_checkpoint(ckpt)  # finished: the per-epoch checkpoint is no longer needed
    metrics["path"] = str(stem.with_suffix(".json"))
    return metrics
