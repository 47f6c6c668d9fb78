"""``finetune``: train a classifier on a downstream task, keeping, anchoring or freeing its cloned
structure (docs/design.md §6).

Modes (``W`` ranges over the cloned tensors declared by the model, see :mod:`._anchor`):

* ``"frozen"``: cloned tensors get ``requires_grad=False`` and are left out of the optimiser, so
  they stay bit-identical; kernels, biases (:class:`~.models.ClonedNet`'s per-field
  ``field_bias``, constant over each group orbit) and the head train. Symmetry kept by construction.
* ``"anchored"``: everything trains on ``CE + beta * sum_W d(W, W0)``, ``d`` = squared Frobenius
  distance (``anchor="l2"``, applied as a decoupled proximal step after each optimiser step, see
  :mod:`._anchor`) or the paper's KL between row-softmaxed weights (``anchor="kl"``, in the loss).
* ``"free"``: everything trains on the cross-entropy alone.
* ``"head-only"``: only the classifier head (the parameters under the model's ``head`` module, e.g.
  :class:`~.models.FeatureClassifier.head`) trains; everything else, cloned or not, stays
  bit-identical. The strictest reading of "frozen": the features are exactly the cloned ones.

Training: AdamW (``lr``, ``weight_decay``; weight decay is not applied to cloned tensors in
``anchored`` mode, the anchor replaces it), ExponentialLR(``gamma``) per epoch, gradient clipping.
With ``checkpoint`` the state is saved (safetensors + JSON, atomic) after every epoch and a rerun
resumes from the last finished epoch. ``FinetuneConfig.device`` / ``precision`` place the model and
each batch and set the training forward's numerics (:func:`symclone.runtime.precision_context`; the
cross-entropy, accuracy and the invariance check stay fp32).

Examples
--------
>>> import torch
>>> from symclone.finetune.tasks import task_from_tensors
>>> x = torch.rand(32, 1, 28, 28); y = torch.arange(32) % 10
>>> task = task_from_tensors("c4-generalisation", x, y, x[:8], y[:8])
>>> m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
>>> r = finetune(m, task, mode="frozen", cloned=["1.*"], config=FinetuneConfig(epochs=1, batch_size=16))
>>> r.metrics["cloned_distance"], r.metrics["n_trainable"]
(0.0, 170)
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..io import CheckpointError
from ..runtime import RuntimeOptions
from ..trainer import TrainingCheckpoint
from ._anchor import ANCHORS, AnchorPenalty, ClonedSpec, select_cloned
from ._metrics import evaluate, structure_residuals
from .models import count_parameters
from .tasks import Task

__all__ = ["MODES", "FinetuneConfig", "FinetuneResult", "finetune"]

log = logging.getLogger(__name__)
MODES = ("frozen", "anchored", "free", "head-only")


@dataclass(frozen=True)
class FinetuneConfig(RuntimeOptions):
    """Training hyper-parameters (defaults follow the authors' task-1 recipe, fewer epochs).

    ``seed``, ``device``, ``precision`` and ``progress`` come from :class:`~symclone.runtime.RuntimeOptions`.

    ``cloned_lr_scale`` multiplies the learning rate of the cloned tensors (anchored / free modes;
    a differential learning rate: Adam moves every weight by about ``lr`` per step whatever its
    gradient, so dense cloned matrices drift fast unless their rate is lowered or ``beta`` is large).
    ``structure_probes``: probe kernels for the structure residual; ``n_invariance``: test inputs
    for the invariance error; ``eval_limit``: test samples per split (``None``: all).
    A ``ctx`` passed to :func:`finetune` overrides ``device`` with the rank's device.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    gamma: float = 0.95
    grad_clip: float = 1.0
    eval_limit: Optional[int] = None
    n_invariance: int = 128
    structure_probes: int = 4
    cloned_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        from ..validation import check_float, check_int
        super().__post_init__()
        check_int(self.epochs, "epochs", minimum=1)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_float(self.lr, "lr", positive=True)
        check_float(self.weight_decay, "weight_decay", minimum=0.0)
        check_float(self.gamma, "gamma", positive=True)
        check_float(self.grad_clip, "grad_clip", minimum=0.0)
        check_float(self.cloned_lr_scale, "cloned_lr_scale", minimum=0.0)
        check_int(self.eval_limit, "eval_limit", minimum=1, allow_none=True)
        check_int(self.n_invariance, "n_invariance", minimum=1)
        check_int(self.structure_probes, "structure_probes", minimum=1)


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes
    ----------
    model : the trained model (the same object that was passed in, trained in place), in eval mode.
    metrics : accuracy per test split, invariance error, structure residuals, drift, parameter counts,
        seconds (see :func:`finetune`).
    history : one dict per epoch: ``epoch``, mean cross-entropy ``ce``, mean ``anchor`` penalty.
    """

    model: nn.Module
    metrics: dict
    history: list = field(default_factory=list)


def _split_on(split, dev: torch.device):
    """The training split with its base images, labels and transform parameters on ``dev`` (one copy per
    run, so an accelerator never waits for a host-to-device batch copy); the split itself on CPU."""
    if dev.type == "cpu":
        return split
    from dataclasses import replace
    return replace(split, x=split.x.to(dev), y=split.y.to(dev), params={k: v.to(dev) for k, v in split.params.items()})


def _optimizer(model, names_cloned, mode, cfg):
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    cloned = set(names_cloned)
    wd_cloned = 0.0 if mode == "anchored" else cfg.weight_decay  # the anchor replaces weight decay
    groups = [{"params": [p for n, p in named if n not in cloned], "weight_decay": cfg.weight_decay,
               "lr": cfg.lr},
              {"params": [p for n, p in named if n in cloned], "weight_decay": wd_cloned,
               "lr": cfg.lr * cfg.cloned_lr_scale}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("mode: nothing left to train (every parameter is frozen cloned structure)")
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _anchor_tensors(penalty) -> dict[str, torch.Tensor]:
    return {f"w0.{k}": v for k, v in penalty.w0.items()}


def finetune(model: nn.Module, task: Task, mode: str = "anchored", beta: float = 1e-3, anchor: str = "l2",
             config: Optional[FinetuneConfig] = None, cloned: ClonedSpec = None,
             checkpoint: Optional[str] = None, ctx=None, **overrides) -> FinetuneResult:
    """Fine-tune ``model`` on ``task`` in ``mode``; returns the trained model and its metrics.

    Parameters
    ----------
    model : classifier ``(B, *task.input_shape) -> (B, task.num_classes)``; declares its cloned
        tensors via ``cloned_parameters()`` or the ``cloned`` argument (names/patterns/callable).
    task : a :class:`~symclone.finetune.tasks.Task`.
    mode : ``"frozen" | "anchored" | "free" | "head-only"`` (see the module docstring).
    beta, anchor : anchor strength and kind (``"l2"`` or ``"kl"``), used in ``anchored`` mode.
    config : :class:`FinetuneConfig`; keyword ``overrides`` replace its fields (``epochs=3``).
    checkpoint : file stem without a dot (``.safetensors``/``.json`` are appended); saves every
        epoch and resumes from it.
    ctx : a multi-process :class:`symclone.distributed.DistributedContext` (``torchrun``): the model runs
        under ``DistributedDataParallel``, each rank takes its contiguous shard of every global batch
        (the last batch is trimmed to a multiple of the world size), only rank 0 writes the checkpoint.

    Returns
    -------
    :class:`FinetuneResult` with ``metrics``: ``accuracy`` per test split, ``invariance_error``
    (logits, test set), ``structure_residual_before/after`` (cloned layers, when available),
    ``cloned_distance`` (relative ``||W - W0|| / ||W0||``), ``n_params``, ``n_trainable``, ``seconds``.
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if anchor not in ANCHORS:
        raise ValueError(f"anchor: expected one of {ANCHORS}, got {anchor!r}")
    cfg = config or FinetuneConfig()
    if overrides:
        cfg = FinetuneConfig(**{**asdict(cfg), **overrides})
    from ..runtime import precision_context, resolve_device
    dev = ctx.device if ctx is not None else resolve_device(cfg.device)
    model.to(dev)
    names = select_cloned(model, cloned)
    if mode in ("frozen", "anchored") and not names:
        raise ValueError(f"mode: {mode!r} needs cloned structure; the model declares none (define "
                         "cloned_parameters() or pass cloned=[name patterns])")
    x0, _ = task.train.batch(torch.arange(min(2, len(task.train))))
    with torch.no_grad():
        out = model(x0.to(dev))
    if out.ndim != 2 or out.shape[1] != task.num_classes:
        raise ValueError(f"model: expected logits (B, {task.num_classes}) for task {task.name!r}, "
                         f"got shape {tuple(out.shape)}")
    params = dict(model.named_parameters())
    if mode == "head-only":
        head = [n for n in params if n.startswith("head.")]
        if not head:
            raise ValueError("mode: 'head-only' needs a classifier head (a submodule named 'head', as in "
                             f"FeatureClassifier / ClonedNet); {type(model).__name__} has none")
        for n, p in params.items():
            p.requires_grad_(n.startswith("head."))
    if mode == "frozen" and not any(p.requires_grad for n, p in params.items() if n not in set(names)):
        raise ValueError("mode: nothing left to train (every parameter is frozen cloned structure)")
    for n in names:
        params[n].requires_grad_(mode in ("anchored", "free"))
    penalty = AnchorPenalty(model, names, beta if mode == "anchored" else 0.0, anchor)
    residual_before = structure_residuals(model, cfg.structure_probes)
    opt = _optimizer(model, names, mode, cfg)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, cfg.gamma)
    rng = torch.Generator().manual_seed(cfg.seed)
    start, history = (0, [])
    state = TrainingCheckpoint(checkpoint, ctx) if checkpoint is not None else None
    restored = state.load({"model": model}, opt, sched, {"data": rng}) if state is not None else None
    if restored is not None:
        meta, extra = restored
        for k in penalty.w0:
            if f"w0.{k}" not in extra:
                raise CheckpointError(f"checkpoint: {state.path} holds no anchor for {k}")
            penalty.w0[k] = extra[f"w0.{k}"].to(dev)
        start, history = int(meta["epoch"]), list(meta["history"])
    n = len(task.train)
    train_split = _split_on(task.train, dev)
    steps = math.ceil(n / cfg.batch_size)
    dist_on = ctx is not None and ctx.distributed
    if dist_on:
        from ..distributed import wrap_ddp
        fwd = wrap_ddp(model, ctx, find_unused_parameters=True)  # e.g. a student's unused stored kernels
    else:
        fwd = model
    from ..progress import progress_bar

    bar = progress_bar((cfg.epochs - start) * steps, f"finetune {mode}",
                       enabled=cfg.progress is not False and (ctx is None or ctx.is_main))
    t0 = time.perf_counter()
    model.train()
    for epoch in range(start, cfg.epochs):
        perm = torch.randperm(n, generator=rng)
        # summed on the device: no host sync per step
        tot_ce, tot_pen = (torch.zeros((), dtype=torch.float64, device=dev) for _ in range(2))
        for s in range(steps):
            bar.update(1, epoch=epoch + 1)
            idx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            if dist_on:  # equal shards: DDP's gradient average is then the global batch mean
                idx = ctx.shard(idx[:len(idx) - len(idx) % ctx.world_size])
                if len(idx) == 0:
                    continue
            x, y = train_split.batch(idx.to(dev))
            with precision_context(cfg.precision, dev):
                logits = fwd(x)
            ce = F.cross_entropy(logits.float(), y)
            anchored = mode == "anchored"
            # the decoupled l2 anchor acts through prox(); its value is logged once per epoch
            pen = penalty(model) if anchored and not penalty.decoupled else torch.zeros((), device=dev)
            loss = ce if (not anchored or penalty.decoupled) else ce + pen
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
            opt.step()
            if anchored and penalty.decoupled:
                penalty.prox(model, opt.param_groups[-1]["lr"])
            tot_ce += ce.detach().double()
            tot_pen += pen.detach().double()
        sched.step()
        if dist_on:
            tot_ce = ctx.all_reduce_mean(tot_ce)
        tot_ce, tot_pen = float(tot_ce), float(tot_pen)
        if mode == "anchored" and penalty.decoupled:
            with torch.no_grad():
                tot_pen = float(penalty(model)) * steps
        history.append({"epoch": epoch + 1, "ce": tot_ce / steps, "anchor": tot_pen / steps})
        log.info("epoch %d: ce %.4f anchor %.4g", epoch + 1, tot_ce / steps, tot_pen / steps)
        if state is not None:  # rank 0 writes, every rank waits
            state.save({"epoch": epoch + 1, "history": history}, {"model": model}, opt, sched, {"data": rng},
                       _anchor_tensors(penalty))
    bar.close()
    seconds = time.perf_counter() - t0
    model.eval()
    metrics = evaluate(model, task, limit=cfg.eval_limit, n_invariance=cfg.n_invariance)
    metrics.update({
        "task": task.name, "mode": mode, "beta": beta if mode == "anchored" else None,
        "anchor": anchor if mode == "anchored" else None,
        "cloned_tensors": len(names), "cloned_distance": penalty.distance(model),
        "structure_residual_before": residual_before, "structure_residual_after": structure_residuals(model, cfg.structure_probes),
        "n_params": count_parameters(model), "n_trainable": count_parameters(model, trainable_only=True),
        "seconds": seconds, "epochs": cfg.epochs, "n_train": n, "device": str(dev), "precision": cfg.precision,
    })
    return FinetuneResult(model, metrics, history)
