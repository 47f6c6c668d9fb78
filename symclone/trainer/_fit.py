"""The epoch loop of the training core: ``fit(model, dataset, loss_fn, ...)`` for any ``nn.Module``.

``fit(model, dataset, loss_fn, ...)`` wraps ``model`` in ``DistributedDataParallel`` (see
:mod:`symclone.distributed`), shards the data with a ``DistributedSampler`` (one process: the same
sampler with one replica, so a 1-process run sees exactly the global batches of an N-process run),
trains with AdamW + ``ExponentialLR(gamma)`` per epoch + gradient clipping, runs the forward under
:func:`symclone.runtime.precision_context`, and checkpoints after every epoch on rank 0 (model,
optimiser, scheduler, epoch, history; atomic). ``resume=True`` continues from the last finished epoch
on every rank.

``loss_fn(model, batch) -> Tensor`` must return the *mean* loss over its batch (DDP averages the
gradients of equal-sized shards, which is then the gradient of the global mean): call ``model(...)``,
the DDP wrapper, not the bare module, so gradients are synchronised. ``batch_size`` is the global batch.

Examples
--------
>>> import torch
>>> from torch.utils.data import TensorDataset
>>> x = torch.randn(64, 3); y = x @ torch.tensor([1.0, -2.0, 0.5])
>>> model = torch.nn.Linear(3, 1)
>>> loss = lambda m, b: ((m(b[0]).squeeze(1) - b[1]) ** 2).mean()
>>> h = fit(model, TensorDataset(x, y), loss, epochs=30, batch_size=16, lr=0.05, progress=False)
>>> h["history"][-1]["loss"] < 1e-2 * h["history"][0]["loss"]
True
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.utils.data import Dataset

from ..distributed import DistributedContext, wrap_ddp
from ..runtime import make_loader, precision_context
from ._checkpoint import TrainingCheckpoint

__all__ = ["fit"]

log = logging.getLogger(__name__)


def _to(batch: Any, dev: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(dev, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(b, dev) for b in batch)
    return batch


def fit(model: nn.Module, dataset: Dataset, loss_fn: Callable[[nn.Module, Any], torch.Tensor], epochs: int,
            batch_size: int, lr: float = 1e-3, ctx: Optional[DistributedContext] = None, weight_decay: float = 0.0,
            gamma: float = 1.0, grad_clip: float = 1.0, precision: str = "fp32", seed: int = 0,
            checkpoint: Optional[str | Path] = None, resume: bool = False, progress: bool = True,
            num_workers: Optional[int] = None, stop_after: Optional[int] = None,
            ddp_kwargs: Optional[dict] = None) -> dict:
    """Train ``model`` in place; returns ``{"history": [{"epoch", "loss", "seconds"}], "world_size"}``.

    ``stop_after``: stop after that many epochs in total (checkpointed), as a job hitting its time limit.
    ``ddp_kwargs``: extra ``DistributedDataParallel`` arguments (e.g. ``find_unused_parameters=True``).
    """
    from ..progress import progress_bar

    ctx = ctx or DistributedContext()
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs, batch_size: expected positive integers, got {epochs}, {batch_size}")
    per_rank = batch_size // ctx.world_size
    ctx.shard_range(batch_size)  # divisible, or a clear error
    dev = ctx.device
    model.to(dev)
    loader = make_loader(dataset, per_rank, dev, distributed=True, shuffle=True, seed=seed, rank=ctx.rank,
                         world_size=ctx.world_size, num_workers=num_workers)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
    state = TrainingCheckpoint(checkpoint, ctx) if checkpoint is not None else None
    restored = state.load({"model": model}, opt, sched) if (resume and state is not None) else None
    start, history = (int(restored[0]["epoch"]), list(restored[0]["history"])) if restored else (0, [])
    ddp_model = wrap_ddp(model, ctx, **(ddp_kwargs or {}))
    end = epochs if stop_after is None else min(epochs, max(start, int(stop_after)))
    bar = progress_bar((end - start) * len(loader), "fit", enabled=progress and ctx.is_main)
    for epoch in range(start, end):
        t0 = time.perf_counter()
        loader.sampler.set_epoch(epoch)
        model.train()
        total, count = torch.zeros((), device=dev), 0
        for batch in loader:
            bar.update(1, epoch=epoch + 1)
            batch = _to(batch, dev)
            opt.zero_grad(set_to_none=True)
            with precision_context(precision, dev):
                loss = loss_fn(ddp_model, batch)
            loss.backward()
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            total += loss.detach().float()
            count += 1
        sched.step()
        mean = float(ctx.all_reduce_mean(total / max(count, 1)))
        if not math.isfinite(mean):
            raise FloatingPointError(f"loss became {mean} in epoch {epoch + 1}; lower the lr")
        history.append({"epoch": epoch + 1, "loss": mean, "seconds": time.perf_counter() - t0})
        log.info("epoch %d: loss %.4g", epoch + 1, mean)
        if state is not None:
            state.save({"epoch": epoch + 1, "history": history, "world_size": ctx.world_size}, {"model": model},
                       opt, sched)
    bar.close()
    return {"history": history, "world_size": ctx.world_size, "epochs_done": end, "resumed_from": start}
