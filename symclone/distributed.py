"""Multi-process training on PyTorch's own engine (``torch.distributed`` + ``DistributedDataParallel``).

Launch any symclone training with ``torchrun --nproc_per_node N ...``: torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :meth:`DistributedContext.from_env`
reads them and initialises the process group with **gloo** on CPU and **nccl** on CUDA (one GPU per
process, ``cuda:LOCAL_RANK``). Without those variables (or with ``WORLD_SIZE=1``) the context is a
single process and every collective is the identity, so the same code runs everywhere.

Conventions:

- the *global* batch of a step is drawn identically on every rank (same generator seed) and each rank
  takes its contiguous shard (:meth:`DistributedContext.shard`); the global batch must be divisible by the
  world size, which makes an N-process run equal to a 1-process run up to float rounding;
- DDP averages gradients over ranks, so a per-rank loss must be scaled such that its average is the
  global loss (:func:`relative_mse` does this for the relative MSE used by cloning);
- only rank 0 logs (INFO), writes checkpoints (atomically) and metrics; :meth:`DistributedContext.barrier`
  after a write, then every rank can load it (resume).

Examples
--------
>>> ctx = DistributedContext.from_env(device="cpu", env={})
>>> ctx.world_size, ctx.rank, ctx.is_main
(1, 0, True)
>>> import torch
>>> ctx.all_reduce_mean(torch.tensor([2.0, 4.0])).tolist()
[2.0, 4.0]
>>> ctx.shard(torch.arange(6)).tolist()
[0, 1, 2, 3, 4, 5]
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from .runtime import resolve_device

__all__ = ["DistributedContext", "wrap_ddp", "configure_rank_logging",
           "env_world_size", "relative_mse", "ddp_step_module"]

log = logging.getLogger(__name__)


def env_world_size(env: Optional[Mapping[str, str]] = None) -> int:
    """``WORLD_SIZE`` from the environment (1 when unset)."""
    env = os.environ if env is None else env
    try:
        return int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE: expected an integer, got {env.get('WORLD_SIZE')!r}") from None


@dataclass
class DistributedContext:
    """Rank/world information and the collectives a training loop needs.

    Attributes
    ----------
    rank, world_size, local_rank : from torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``.
    device : this process's device (``cuda:LOCAL_RANK`` on GPUs).
    backend : ``"gloo"`` (CPU), ``"nccl"`` (CUDA) or ``None`` (single process).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: Optional[str] = None
    owns_group: bool = False

    @classmethod
    def from_env(cls, device: str | torch.device = "auto", env: Optional[Mapping[str, str]] = None,
                 backend: Optional[str] = None, timeout_s: float = 300.0) -> "DistributedContext":
        """Build the context from torchrun's variables; initialises the process group when ``WORLD_SIZE > 1``."""
        env = os.environ if env is None else env
        world = env_world_size(env)
        dev = resolve_device(device)
        if world <= 1:
            return cls(device=dev)
        try:
            rank, local = int(env["RANK"]), int(env.get("LOCAL_RANK", env["RANK"]))
        except (KeyError, ValueError):
            raise ValueError("RANK/LOCAL_RANK: WORLD_SIZE > 1 but RANK is missing or not an integer; launch with "
                             "torchrun --nproc_per_node N") from None
        if not 0 <= rank < world:
            raise ValueError(f"RANK: expected 0..{world - 1}, got {rank}")
        if dev.type == "cuda":
            if local >= torch.cuda.device_count():
                raise ValueError(f"LOCAL_RANK: {local} but only {torch.cuda.device_count()} CUDA devices; use "
                                 "--nproc_per_node <= the number of GPUs")
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        owns = False
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                    timeout=datetime.timedelta(seconds=timeout_s))
            owns = True
        return cls(rank=rank, world_size=world, local_rank=local, device=dev, backend=backend, owns_group=owns)

    # ------------------------------------------------------------------ basics
    @property
    def distributed(self) -> bool:
        """Whether more than one process takes part (``world_size > 1``)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes files and shows progress."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank reaches this point (nothing to wait for in a single process)."""
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group if this context created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    def __enter__(self) -> "DistributedContext":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ collectives
    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (a new tensor; the input is untouched)."""
        if not self.distributed:
            return t.clone()
        out = t.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        """Mean over ranks."""
        return self.all_reduce_sum(t) / self.world_size

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers into ``module`` on every rank (in place)."""
        if not self.distributed:
            return
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                t = t.detach()  # shares the version counter, so caches keyed on it see the update
                if self.backend == "nccl" or t.device.type == "cpu":
                    dist.broadcast(t, src=0)
                else:  # pragma: no cover - gloo with CUDA tensors
                    cpu = t.cpu()
                    dist.broadcast(cpu, src=0)
                    t.copy_(cpu)
        for m in module.modules():
            if callable(getattr(m, "invalidate_cache", None)):
                m.invalidate_cache()

    # ---------------------------------------------------------------- batches
    def shard_range(self, n: int) -> slice:
        """This rank's contiguous slice of a global batch of ``n`` items (``n`` divisible by the world size)."""
        if n % self.world_size:
            raise ValueError(f"batch_size: the global batch ({n}) must be divisible by the number of processes "
                             f"({self.world_size}) so that every rank gets the same shard size")
        per = n // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def shard(self, t: torch.Tensor) -> torch.Tensor:
        """``t[shard_range(len(t))]``: this rank's part of a batch drawn identically on every rank."""
        return t[self.shard_range(t.shape[0])]


def wrap_ddp(model: torch.nn.Module, ctx: DistributedContext, **kwargs) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` when distributed (``device_ids=[local_rank]`` on CUDA), else ``model``.

    DDP broadcasts rank 0's parameters and buffers at construction, so all ranks start identical.
    """
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    model.to(ctx.device)
    if ctx.device.type == "cuda":
        kwargs.setdefault("device_ids", [ctx.device.index])
        kwargs.setdefault("output_device", ctx.device.index)
    return DistributedDataParallel(model, **kwargs)


def configure_rank_logging(ctx: DistributedContext) -> None:
    """Non-main ranks log warnings only (so a torchrun job prints each message once)."""
    if not ctx.is_main:
        logging.getLogger("symclone").setLevel(logging.WARNING)


#: the single-process context used when none is given (not rebuilt on every call of a per-step loss)
_SINGLE = DistributedContext()


def relative_mse(pred: torch.Tensor, target: torch.Tensor, ctx: Optional[DistributedContext] = None) -> torch.Tensor:
    """This rank's share of ``Σ_global (pred − y)² / Σ_global y²``, scaled by the world size so that the
    mean over ranks (what DDP averages) is the global relative MSE."""
    ctx = ctx or _SINGLE
    if pred.dtype in (torch.float16, torch.bfloat16) or target.dtype in (torch.float16, torch.bfloat16):
        pred, target = pred.float(), target.float()  # reduced-precision forward: reduce in fp32
    den = ctx.all_reduce_sum((target.detach() ** 2).sum()).clamp_min(1e-12)
    return ctx.world_size * ((pred - target) ** 2).sum() / den


class _StepModule(nn.Module):
    """Holds the trained tensors (the *same* Parameter objects) so DDP can hook their gradients."""

    def __init__(self, params: Sequence[nn.Parameter], loss_fn: Callable[[int], torch.Tensor]):
        super().__init__()
        self.params = nn.ParameterList(list(params))
        self._loss_fn = loss_fn

    def forward(self, step: int) -> torch.Tensor:
        return self._loss_fn(step)


def ddp_step_module(params: Sequence[nn.Parameter], loss_fn: Callable[[int], torch.Tensor],
                    ctx: DistributedContext) -> nn.Module:
    """``model(step) == loss_fn(step)`` with DDP's gradient all-reduce hooked on ``params``."""
    return wrap_ddp(_StepModule(params, loss_fn), ctx)
