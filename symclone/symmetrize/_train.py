"""Training and measurement helpers for symmetrized regressors (used by the benchmark and CLI).

* :func:`train_regressor` — AdamW (decoupled weight decay) + MSE (+ the sampler's auxiliary loss), a wall-clock or epoch
  budget, best-on-validation weights, optional exponential moving average of the weights, optional
  checkpoint/resume (safetensors via ``symclone.io``).
* :func:`evaluate_mse` — mean squared error over a dataset in eval mode (``k_eval`` samples).
* :func:`equivariance_vs_k` — relative error under random group actions and the Monte-Carlo spread.
* :func:`time_forward` — seconds per forward pass of a batch.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from ..runtime import RuntimeOptions, device_of
from ..schedules import cosine_lr
from ._base import element_to

__all__ = ["TrainConfig", "train_regressor", "evaluate_mse", "equivariance_vs_k", "time_forward", "device_of",
           "training_precision"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig(RuntimeOptions):
    """Settings of :func:`train_regressor`.

    ``seed``, ``device`` (under DDP the process's own device is used), ``precision`` (numerics of the
    training forward; validation, evaluation and equivariance checks stay fp32/fp64) and ``progress``
    (off by default here) come from :class:`~symclone.runtime.RuntimeOptions`.

    Budgets are in epochs: the cosine schedule (``cosine``) runs over ``epochs`` and the data order is
    seeded per (seed, epoch), so a seed gives the same model on any machine. ``minutes`` is an optional
    CPU-time *cap*: it can stop a run early (reported as ``stopped_by="budget"``) but never shapes the
    schedule; a capped run depends on the machine's speed, so published numbers leave it ``None``.
    """

    lr: float = 5e-4
    weight_decay: float = 1e-12
    batch_size: int = 100
    epochs: int = 1000
    minutes: Optional[float] = None     # optional CPU-time cap of this process (stops; never shapes the schedule)
    eval_every: int = 5
    progress: bool = False
    cosine: bool = True
    ema: float = 0.0                    # > 0: validate, select and return an EMA of the weights (decay per step)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema: expected a decay in [0, 1), got {self.ema}")
        if self.batch_size < 1 or self.epochs < 0 or self.eval_every < 1:
            raise ValueError(f"batch_size, epochs, eval_every: expected >= 1, >= 0, >= 1, got "
                             f"{self.batch_size}, {self.epochs}, {self.eval_every}")


def _forward(model, x):
    if hasattr(model, "forward_with_aux"):
        return model.forward_with_aux(x)
    return model(x), x.new_zeros(())


class _WithAux(nn.Module):
    """``forward(x) = (model(x), aux_loss)`` as a plain ``forward``, so ``DistributedDataParallel`` (which
    only synchronises gradients of calls through its own ``forward``) can wrap a symmetrized model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return _forward(self.model, x)


@contextlib.contextmanager
def training_precision(model: nn.Module, precision: str, device: torch.device) -> Iterator[None]:
    """Numerics of a training forward of ``model`` (:func:`symclone.runtime.precision_context`).

    For a symmetrized model (``model.model`` inside ``model.sampler``'s group averaging) only the backbone
    ``model.model`` runs in ``precision`` and returns fp32: the sampler's frames (Gram-Schmidt, principal
    axes, determinants; float64 for canonical samplers), the group actions and the average stay at least
    fp32 (bf16's 2⁻⁸ rounding would break the orthogonality the equivariance rests on; CPU has no bf16
    LU). Any other model runs wholly under it.

    Examples
    --------
    >>> m = nn.Linear(4, 4)
    >>> with training_precision(m, "bf16", torch.device("cpu")):
    ...     m(torch.randn(2, 4)).dtype
    torch.bfloat16
    """
    from ..runtime import precision_context
    inner = getattr(model, "model", None)
    if precision == "fp32" or not (hasattr(model, "sampler") and isinstance(inner, nn.Module)):
        with precision_context(precision, device):
            yield
        return
    plain = inner.forward

    def forward(*args, **kwargs):
        with precision_context(precision, device):
            out = plain(*args, **kwargs)
        return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out
    inner.forward = forward  # an instance attribute: shadows the class's forward, state_dict unchanged
    try:
        yield
    finally:
        del inner.forward


class _WeightAverage:
    """Exponential moving average of a model's floating-point state tensors (see :func:`train_regressor`)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``θ̄ ← d θ̄ + (1 − d) θ`` for every tracked tensor."""
        current = model.state_dict()
        for k, avg in self.state.items():
            avg.lerp_(current[k].detach(), 1.0 - self.decay)

    def load(self, tensors: dict) -> None:
        """Restore the average from a checkpoint (missing entries keep their current value)."""
        for k, v in tensors.items():
            if k in self.state:
                self.state[k].copy_(v)

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[None]:
        """Run the body with the averaged weights loaded into ``model``; the trained weights come back after."""
        live = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.state}
        model.load_state_dict(self.state, strict=False)
        try:
            yield
        finally:
            model.load_state_dict(live, strict=False)


@torch.no_grad()
def evaluate_mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Mean squared error of ``model`` on ``(x, y)`` in eval mode (batches moved to the model's device)."""
    was = model.training
    model.eval()
    dev = device_of(model)
    tot = 0.0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(dev, non_blocking=True), y[i:i + batch_size].to(dev, non_blocking=True)
        tot += float((model(xb).float() - yb).pow(2).sum())
    model.train(was)
    return tot / y.numel()


def train_regressor(model: nn.Module, train: tuple, valid: tuple, cfg: TrainConfig = TrainConfig(),
                    checkpoint: Optional[str] = None, on_eval: Optional[Callable] = None, ctx=None,
                    stop_after: Optional[int] = None) -> dict:
    """Train ``model`` on ``train = (x, y)`` with MSE; keep the best weights on ``valid``.

    Returns a dict with ``best_valid``, ``epoch``, ``seconds`` (wall), ``cpu_seconds`` (this
    process) and the ``curve`` (``[epoch, cpu_seconds, train_loss, valid_mse]``). With ``checkpoint``
    (a path stem) the model, best weights, optimiser state and progress are saved at every evaluation
    and training resumes from them.

    With ``cfg.ema = d > 0`` an exponential moving average ``θ̄ ← d θ̄ + (1 − d) θ`` of every floating-point
    tensor of the state (parameters and buffers) is updated after each optimiser step; validation, the
    best-weights choice and the returned model use ``θ̄`` (Polyak averaging), training continues from ``θ``.

    The model and both datasets move to ``cfg.device`` once (whole tensors: no loader between the
    steps); the training forward runs under :func:`training_precision` (a symmetrized model: its backbone
    only), the loss in fp32.

    ``ctx``: a multi-process :class:`symclone.distributed.DistributedContext` (``torchrun``). The model
    runs under ``DistributedDataParallel``; every rank draws the same permutation, takes its contiguous
    shard of each global batch of ``cfg.batch_size`` (divisible by the world size), and DDP's gradient
    average is the gradient of the global mean, so N processes follow a one-process run with the same
    batches. Validation MSE, training loss and the CPU-time budget are averaged over ranks (every rank
    keeps the same best weights and stops at the same epoch); ranks > 0 reseed torch's global generator
    (``seed``, ``rank``) so stochastic samplers draw independent group elements; only rank 0 writes the
    checkpoint, calls ``on_eval`` and shows progress; a resume loads it on every rank.
    ``stop_after``: stop (checkpointed) after that many epochs in total, as a job hitting its time
    limit; a rerun with the same ``cfg`` resumes the same schedule.
    """
    from ..progress import progress_bar
    from ..runtime import resolve_device
    from ..trainer import TrainingCheckpoint
    dist_on = ctx is not None and ctx.distributed
    is_main = ctx is None or ctx.is_main
    dev = ctx.device if ctx is not None else resolve_device(cfg.device)
    if ctx is not None:
        ctx.shard_range(cfg.batch_size)  # early, clear error on an indivisible global batch
    model.to(dev)
    xtr, ytr = (t.to(dev, non_blocking=True) for t in train)
    valid = tuple(t.to(dev, non_blocking=True) for t in valid)
    gen = torch.Generator()  # reseeded per epoch (seed, epoch): a resumed run sees the same batches
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = {"epoch": 0, "seconds": 0.0, "best_valid": float("inf"), "curve": []}
    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    averaged = _WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
    saved = TrainingCheckpoint(checkpoint, ctx) if checkpoint else None
    # model, Adam moments and step counts, the best weights so far: the resumed run continues the same trajectory
    restored = saved.load({"model": model}, opt) if saved is not None else None
    if restored is not None:
        meta, extra = restored
        best = {k[5:]: v.to(dev) for k, v in extra.items() if k.startswith("best.")}
        if averaged is not None:
            averaged.load({k[4:]: v for k, v in extra.items() if k.startswith("ema.")})
        state = meta["state"]
        log.info("resumed %s at epoch %d", checkpoint, state["epoch"])
    if dist_on:
        from ..distributed import wrap_ddp
        if ctx.rank > 0:
            torch.manual_seed(cfg.seed * 1_000_003 + 7919 * ctx.rank + int(state["epoch"]))
        fwd = wrap_ddp(_WithAux(model), ctx, find_unused_parameters=True)
    else:
        fwd = lambda x: _forward(model, x)  # noqa: E731
    steps_per_epoch = max(1, len(xtr) // cfg.batch_size)
    budget = None if cfg.minutes is None else 60.0 * cfg.minutes
    end = cfg.epochs if stop_after is None else min(cfg.epochs, int(stop_after))
    t0 = time.time() - state["seconds"]
    c0 = time.process_time() - state.get("cpu_seconds", 0.0)

    def cpu_seconds() -> float:  # this process's CPU time; under DDP the mean over ranks (one all-reduce)
        c = time.process_time() - c0
        if dist_on:
            c = float(ctx.all_reduce_mean(torch.tensor(c, dtype=torch.float64, device=dev)))
        return c

    def schedule_fraction(step: int) -> float:
        """Fraction of the *epoch* budget done: the schedule never depends on CPU time (a ``minutes`` cap
        only stops the run), so a seed gives the same trajectory on any machine."""
        return min(1.0, (state["epoch"] + step / steps_per_epoch) / max(cfg.epochs, 1))
    model.train()
    bar = progress_bar(cfg.epochs, "train", enabled=cfg.progress and is_main, initial=state["epoch"])
    state["stopped_by"] = None
    while state["epoch"] < end:
        cpu_start = cpu_seconds() if budget is not None else 0.0
        if budget is not None and state["epoch"] > 0 and cpu_start > budget:   # a resumed run, budget spent
            state["stopped_by"] = "budget"
            break
        perm = torch.randperm(len(xtr), generator=gen.manual_seed(cfg.seed * 1_000_003 + state["epoch"])).to(dev)
        run = torch.zeros((), dtype=torch.float64, device=dev)  # summed on the device: no sync per step
        for s in range(steps_per_epoch):
            idx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            if ctx is not None:  # equal contiguous shards of the global batch
                idx = ctx.shard(idx)
            if cfg.cosine:  # cosine decay over the epochs
                for grp in opt.param_groups:
                    grp["lr"] = cosine_lr(cfg.lr, schedule_fraction(s), 1.0, floor=0.0)
            with training_precision(model, cfg.precision, dev):
                pred, aux = fwd(xtr[idx])
            loss = (pred.float() - ytr[idx]).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            (loss + aux.float()).backward()
            opt.step()
            if averaged is not None:
                averaged.update(model)
            run += loss.detach().double()
        if dist_on:
            run = ctx.all_reduce_mean(run)
        run = float(run)
        state["epoch"] += 1
        bar.update(1, loss=run / steps_per_epoch)
        elapsed = time.time() - t0
        state["cpu_seconds"] = cpu_seconds()
        out_of_time = budget is not None and state["cpu_seconds"] > budget
        if state["epoch"] % cfg.eval_every == 0 or state["epoch"] in (cfg.epochs, end) or out_of_time:
            with (averaged.swapped_in(model) if averaged is not None else contextlib.nullcontext()):
                v = evaluate_mse(model, *valid)   # the averaged weights when cfg.ema > 0
                if dist_on:  # the mean of the ranks' estimates: identical on every rank, so is the best-weights choice
                    v = float(ctx.all_reduce_mean(torch.tensor(v, dtype=torch.float64, device=dev)))
                if v < state["best_valid"]:
                    state["best_valid"] = v
                    best = {k: t.detach().clone() for k, t in model.state_dict().items()}
            state["curve"].append([state["epoch"], round(state["cpu_seconds"], 1), run / steps_per_epoch, v])
            state["seconds"] = elapsed
            if on_eval and is_main:
                on_eval(state)
            if saved is not None:  # rank 0 writes, every rank waits
                saved.save({"state": state, "world_size": 1 if ctx is None else ctx.world_size}, {"model": model},
                           opt, tensors={f"best.{k}": t for k, t in best.items()}
                           | ({f"ema.{k}": t for k, t in averaged.state.items()} if averaged is not None else {}))
        if out_of_time:
            state["stopped_by"] = "budget"
            break
    if state["stopped_by"] is None:
        state["stopped_by"] = "epochs" if state["epoch"] >= cfg.epochs else "stop_after"
    bar.close()
    model.load_state_dict(best)
    state["seconds"] = time.time() - t0
    state["world_size"] = 1 if ctx is None else ctx.world_size
    return state


@torch.no_grad()
def equivariance_vs_k(f: nn.Module, x: torch.Tensor, ks=(1, 4, 16), n_elements: int = 4,
                      seed: int = 0, dtype: Optional[torch.dtype] = torch.float64) -> list[dict]:
    """For each ``k``: mean relative error ``‖f(g·x) − g·f(x)‖ / ‖f(x)‖`` over random ``g`` and the
    Monte-Carlo spread ``‖f(x) − f'(x)‖ / ‖f(x)‖`` (two independent evaluations), measured in
    ``dtype`` (model and input cast temporarily; float64 by default; ``x`` and the group elements move
    to the model's device). Never run under a reduced precision: this is the exactness check."""
    from ..equivariance import cast_module
    x = x.to(device_of(f))
    if dtype is not None:
        with cast_module(f, dtype):
            return equivariance_vs_k(f, x.to(dtype), ks, n_elements, seed, dtype=None)
    G, rin, rout = f.group, f.rep_in, f.rep_out
    was = f.training
    f.eval()
    gen = torch.Generator().manual_seed(seed)
    els = element_to(G.sample(n_elements, gen), x.device)
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
    """Median seconds of one forward pass of ``f`` on ``x`` (after one warm-up; CUDA is synchronised
    around each pass so the time is the kernels', not the launch's)."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    f(x)
    ts = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        f(x)
        sync()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]
