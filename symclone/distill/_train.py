"""The optimiser loop shared by function and family cloning (AdamW or SGD, cosine lr, grad clip,
periodic checkpoints, tqdm, loss curve, early stop at a target relative error).

``loss_fn(step)`` returns the relative MSE ``‖pred − target‖² / ‖target‖²`` of a fresh batch;
its square root is the running relative error that is logged.

>>> import torch
>>> w = torch.nn.Parameter(torch.zeros(3)); target = torch.tensor([1.0, 2.0, 3.0])
>>> loss = lambda step: ((w - target) ** 2).sum() / (target ** 2).sum()
>>> r = optimize([w], loss, steps=300, lr=0.1, progress=False)
>>> r["final_rel_error"] < 1e-2
True
"""
from __future__ import annotations

import math
import time
from typing import Callable, Optional

import torch

__all__ = ["optimize", "make_optimizer", "cosine_lr"]


def make_optimizer(params: list[torch.nn.Parameter], kind: str, lr: float, weight_decay: float
                   ) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def cosine_lr(base: float, step: int, total: int) -> float:
    """Cosine decay from ``base`` to ``0.01 · base`` over ``total`` steps."""
    if total <= 1:
        return base
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))


def optimize(params: list[torch.nn.Parameter], loss_fn: Callable[[int], torch.Tensor], steps: int, lr: float,
             kind: str = "adam", weight_decay: float = 0.0, grad_clip: float = 1.0, start_step: int = 0,
             optimizer: Optional[torch.optim.Optimizer] = None, loss_curve: Optional[list] = None,
             log_every: int = 10, checkpoint_every: int = 0,
             on_checkpoint: Optional[Callable[[int, torch.optim.Optimizer, list], None]] = None,
             stop_rel_error: float = 0.0, progress: bool = True, desc: str = "clone") -> dict:
    """Run ``steps`` optimiser steps (resuming at ``start_step``); returns the loss curve, the final
    running relative error, the number of steps done and the seconds spent."""
    from tqdm.auto import tqdm

    opt = optimizer or make_optimizer(params, kind, lr, weight_decay)
    curve = loss_curve if loss_curve is not None else []
    t0 = time.perf_counter()
    rel = float("nan")
    step = start_step
    bar = tqdm(range(start_step, steps), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    stopped = False
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(lr, step, steps)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss became {float(loss)} at step {step}; lower the lr "
                                     "(e.g. --distill.lr=1e-3)")
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        rel = float(loss.detach()) ** 0.5
        if step % log_every == 0 or step == steps - 1:
            curve.append([step, rel])
            bar.set_postfix(rel_err=f"{rel:.2e}")
        if stop_rel_error > 0 and rel < stop_rel_error:
            curve.append([step, rel])
            stopped = True
            break
        if on_checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            on_checkpoint(step + 1, opt, curve)
    bar.close()
    done = (step + 1) if steps > start_step else start_step
    return {"loss_curve": curve, "final_rel_error": rel, "steps": done, "stopped_early": stopped,
            "seconds": time.perf_counter() - t0, "optimizer": opt}
