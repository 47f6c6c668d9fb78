"""The step loop of the training core: ``train_steps(params, loss_fn, steps, ...)``.

AdamW or SGD, cosine learning rate, gradient clipping, periodic checkpoints through a callback, progress
(:mod:`symclone.progress`), a loss curve, early stop at a target relative error, an optional monitor
(e.g. the equivariance error every N steps), and DDP when a multi-process context is given (the trained
tensors are registered in :func:`symclone.distributed.ddp_step_module`). Used by function and family
cloning and by the end-to-end polish.

``loss_fn(step)`` returns the relative MSE ``‖pred − target‖² / ‖target‖²`` of a fresh batch;
its square root is the running relative error that is logged.

Examples
--------
>>> import torch
>>> w = torch.nn.Parameter(torch.zeros(3)); target = torch.tensor([1.0, 2.0, 3.0])
>>> loss = lambda step: ((w - target) ** 2).sum() / (target ** 2).sum()
>>> r = train_steps([w], loss, steps=300, lr=0.1, progress=False)
>>> r["final_rel_error"] < 1e-2
True
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Optional

import torch

from ..schedules import cosine_lr
from ._optim import make_optimizer

__all__ = ["train_steps"]


def train_steps(params: list[torch.nn.Parameter], loss_fn: Callable[[int], torch.Tensor], steps: int, lr: float,
             kind: str = "adam", weight_decay: float = 0.0, grad_clip: float = 1.0, start_step: int = 0,
             optimizer: Optional[torch.optim.Optimizer] = None, loss_curve: Optional[list] = None,
             log_every: int = 10, checkpoint_every: int = 0,
             on_checkpoint: Optional[Callable[[int, torch.optim.Optimizer, list], None]] = None,
             stop_rel_error: float = 0.0, progress: bool = True, desc: str = "clone", ctx: Any = None,
             precision: str = "fp32", monitor: Optional[Callable[[int], Optional[float]]] = None,
             monitor_every: int = 0, monitor_curve: Optional[list] = None) -> dict:
    """Run ``steps`` optimiser steps (resuming at ``start_step``); returns the loss curve, the final
    running relative error, the number of steps done and the seconds spent.

    ``ctx``: a :class:`symclone.distributed.DistributedContext`; with several processes the steps run
    through ``DistributedDataParallel`` (``loss_fn`` must use this rank's shard and a loss whose mean over
    ranks is the global loss, see :func:`symclone.distributed.relative_mse`), the logged error is the global one
    and ``on_checkpoint`` runs on rank 0 only. ``precision``: the forward's numerics
    (:func:`symclone.runtime.precision_context`). ``monitor(step)`` (e.g. the layer's equivariance
    error), when given, is recorded every ``monitor_every`` steps and after the last one as
    ``[step, value]`` in ``monitor_curve`` (returned; pass the list back in to continue it on resume).
    """
    from symclone.progress import progress_bar
    from symclone.runtime import precision_context

    opt = optimizer or make_optimizer(params, kind, lr, weight_decay)
    model, device, dist_on = loss_fn, torch.device("cpu"), ctx is not None and ctx.distributed
    if params:
        device = params[0].device
    if dist_on:
        from symclone.distributed import ddp_step_module

        model = ddp_step_module(params, loss_fn, ctx)
        progress = progress and ctx.is_main
    curve = loss_curve if loss_curve is not None else []
    mcurve = monitor_curve if monitor_curve is not None else []

    def record(step_: int) -> None:
        if monitor is not None and monitor_every > 0:
            value_ = monitor(step_)
            if value_ is not None:
                mcurve.append([step_, float(value_)])

    t0 = time.perf_counter()
    rel = float("nan")
    step = start_step
    bar = progress_bar(steps - start_step, desc, enabled=progress)
    stopped = False
    for step in range(start_step, steps):
        bar.update(1)
        for g in opt.param_groups:
            g["lr"] = cosine_lr(lr, step, steps)
        opt.zero_grad(set_to_none=True)
        with precision_context(precision, device):
            loss = model(step)
        value = float(ctx.all_reduce_mean(loss.detach().float())) if dist_on else float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"{desc}: loss became {value} at step {step}; lower the lr "
                                     "(e.g. --distill.lr=1e-3)")
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        rel = max(value, 0.0) ** 0.5
        if step % log_every == 0 or step == steps - 1:
            curve.append([step, rel])
            bar.update(0, rel_err=rel)
        if stop_rel_error > 0 and rel < stop_rel_error:
            curve.append([step, rel])
            stopped = True
            break
        if monitor_every > 0 and step % monitor_every == 0 and step < steps - 1:
            record(step)
        if on_checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            if ctx is None or ctx.is_main:
                on_checkpoint(step + 1, opt, curve)
            if dist_on:
                ctx.barrier()
    bar.close()
    done = (step + 1) if steps > start_step else start_step
    if steps > start_step:
        record(step)
    return {"loss_curve": curve, "final_rel_error": rel, "steps": done, "stopped_early": stopped,
            "seconds": time.perf_counter() - t0, "optimizer": opt, "monitor_curve": mcurve}
