"""Training and measurement helpers for symmetrized regressors (used by the benchmark and CLI).

* :func:`train_regressor` — AdamW (decoupled weight decay) + MSE (+ the sampler's auxiliary loss), a wall-clock or epoch
  budget, best-on-validation weights, optional checkpoint/resume (safetensors via ``symclone.io``).
* :func:`evaluate_mse` — mean squared error over a dataset in eval mode (``k_eval`` samples).
* :func:`equivariance_vs_k` — relative error under random group actions and the Monte-Carlo spread.
* :func:`time_forward` — seconds per forward pass of a batch.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

__all__ = ["TrainConfig", "train_regressor", "evaluate_mse", "equivariance_vs_k", "time_forward"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train_regressor`."""

    lr: float = 5e-4
    weight_decay: float = 1e-12
    batch_size: int = 100
    epochs: int = 1000
    minutes: Optional[float] = None     # CPU-time budget of this process (stops at whichever comes first)
    eval_every: int = 5
    seed: int = 0
    progress: bool = False
    cosine: bool = True


def _forward(model, x):
    if hasattr(model, "forward_with_aux"):
        return model.forward_with_aux(x)
    return model(x), x.new_zeros(())


@torch.no_grad()
def evaluate_mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Mean squared error of ``model`` on ``(x, y)`` in eval mode."""
    was = model.training
    model.eval()
    tot = 0.0
    for i in range(0, len(x), batch_size):
        tot += float((model(x[i:i + batch_size]) - y[i:i + batch_size]).pow(2).sum())
    model.train(was)
    return tot / y.numel()


def train_regressor(model: nn.Module, train: tuple, valid: tuple, cfg: TrainConfig = TrainConfig(),
                    checkpoint: Optional[str] = None, on_eval: Optional[Callable] = None) -> dict:
    """Train ``model`` on ``train = (x, y)`` with MSE; keep the best weights on ``valid``.

    Returns a dict with ``best_valid``, ``epoch``, ``seconds`` (wall), ``cpu_seconds`` (this
    process) and the ``curve`` (``[epoch, cpu_seconds, train_loss, valid_mse]``). With ``checkpoint``
    (a path stem) the model, best weights, optimiser state and progress are saved at every evaluation
    and training resumes from them.
    """
    from ..io import checkpoint_exists, flatten_optimizer, load_checkpoint, restore_optimizer, save_checkpoint
    xtr, ytr = train
    gen = torch.Generator()  # reseeded per epoch (seed, epoch): a resumed run sees the same batches
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = {"epoch": 0, "seconds": 0.0, "best_valid": float("inf"), "curve": []}
    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if checkpoint and checkpoint_exists(checkpoint):
        tensors, meta = load_checkpoint(checkpoint)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        if "optimizer" in meta:  # Adam moments and step counts: the resumed run continues the same trajectory
            restore_optimizer(opt, tensors, meta["optimizer"])
        state = meta["state"]
        log.info("resumed %s at epoch %d", checkpoint, state["epoch"])
    steps_per_epoch = max(1, len(xtr) // cfg.batch_size)
    budget = None if cfg.minutes is None else 60.0 * cfg.minutes
    t0 = time.time() - state["seconds"]
    c0 = time.process_time() - state.get("cpu_seconds", 0.0)

    def progress() -> float:  # fraction of the budget used (epochs or CPU time)
        p = state["epoch"] / cfg.epochs
        if budget:
            p = max(p, (time.process_time() - c0) / budget)
        return min(1.0, p)
    model.train()
    try:
        from tqdm import tqdm
        bar = tqdm(total=cfg.epochs, initial=state["epoch"], disable=not cfg.progress, desc="train")
    except ImportError:  # pragma: no cover
        bar = None
    while state["epoch"] < cfg.epochs:
        perm = torch.randperm(len(xtr), generator=gen.manual_seed(cfg.seed * 1_000_003 + state["epoch"]))
        run = 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            if cfg.cosine:  # cosine decay over the budget (epochs or CPU time)
                for grp in opt.param_groups:
                    grp["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress()))
            pred, aux = _forward(model, xtr[idx])
            loss = (pred - ytr[idx]).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            (loss + aux).backward()
            opt.step()
            run += float(loss.detach())
        state["epoch"] += 1
        if bar is not None:
            bar.update(1)
        elapsed = time.time() - t0
        state["cpu_seconds"] = time.process_time() - c0
        out_of_time = budget is not None and state["cpu_seconds"] > budget
        if state["epoch"] % cfg.eval_every == 0 or state["epoch"] == cfg.epochs or out_of_time:
            v = evaluate_mse(model, *valid)
            state["curve"].append([state["epoch"], round(state["cpu_seconds"], 1), run / steps_per_epoch, v])
            if v < state["best_valid"]:
                state["best_valid"] = v
                best = {k: t.detach().clone() for k, t in model.state_dict().items()}
            state["seconds"] = elapsed
            if on_eval:
                on_eval(state)
            if checkpoint:
                tensors = {f"model.{k}": t.contiguous() for k, t in model.state_dict().items()}
                tensors.update({f"best.{k}": t.contiguous() for k, t in best.items()})
                opt_tensors, opt_meta = flatten_optimizer(opt)
                tensors.update(opt_tensors)
                save_checkpoint(checkpoint, tensors, {"state": state, "optimizer": opt_meta})
        if out_of_time:
            break
    if bar is not None:
        bar.close()
    model.load_state_dict(best)
    state["seconds"] = time.time() - t0
    return state


@torch.no_grad()
def equivariance_vs_k(f: nn.Module, x: torch.Tensor, ks=(1, 4, 16), n_elements: int = 4,
                      seed: int = 0, dtype: Optional[torch.dtype] = torch.float64) -> list[dict]:
    """For each ``k``: mean relative error ``‖f(g·x) − g·f(x)‖ / ‖f(x)‖`` over random ``g`` and the
    Monte-Carlo spread ``‖f(x) − f'(x)‖ / ‖f(x)‖`` (two independent evaluations), measured in
    ``dtype`` (model and input cast temporarily; float64 by default)."""
    from ..testing import cast_module
    if dtype is not None:
        with cast_module(f, dtype):
            return equivariance_vs_k(f, x.to(dtype), ks, n_elements, seed, dtype=None)
    G, rin, rout = f.group, f.rep_in, f.rep_out
    was = f.training
    f.eval()
    gen = torch.Generator().manual_seed(seed)
    els = G.sample(n_elements, gen)
    rows = []
    for k in ks:
        errs, spreads = [], []
        for i in range(n_elements):
            g = G.index(els, i)
            y, y2 = f(x, k=k), f(x, k=k)
            yg = f(G.act(g, x, rin), k=k)
            d = float(y.norm())
            errs.append(float((yg - G.act(g, y, rout)).norm()) / d)
            spreads.append(float((y2 - y).norm()) / d)
        rows.append({"k": k, "equivariance_error": sum(errs) / len(errs),
                     "mc_spread": sum(spreads) / len(spreads)})
    f.train(was)
    return rows


@torch.no_grad()
def time_forward(f: Callable, x: torch.Tensor, repeats: int = 5) -> float:
    """Median seconds of one forward pass of ``f`` on ``x`` (after one warm-up)."""
    f(x)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(x)
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]
