"""A DDP training loop shared by cloning, symmetrization training and fine-tuning, and DDP layer cloning.

:func:`ddp_optimize` runs ``steps`` optimiser steps of ``loss_fn(step)`` through
``DistributedDataParallel`` (gloo on CPU, nccl on CUDA; a plain loop in one process). The trainable
tensors are registered in a small adapter module whose ``forward(step)`` calls ``loss_fn``, so *any*
closure (e.g. ``student.layer_forward`` with functional teacher parameters) gets DDP's bucketed,
overlapped gradient all-reduce without changing the model classes. Rank 0 writes the checkpoint
(parameters + optimiser + step + loss curve, atomically); ``resume=True`` loads it on every rank.

:func:`relative_mse` is the cloning loss ``‖pred − y‖² / ‖y‖²`` over the *global* batch: the
denominator is all-reduced and the numerator scaled by the world size, so DDP's gradient average equals
the single-process gradient of the same global batch.

:func:`clone_layer_ddp` clones one teacher layer (family or function mode, Adam/SGD) with the
same batches, kernels and schedule as :func:`symclone.distill.distill`'s SGD path, sharding each
global batch across ranks. Run it under ``torchrun --nproc_per_node N -m symclone.ddp ...``.

>>> import torch
>>> w = torch.nn.Parameter(torch.zeros(3)); y = torch.tensor([1.0, 2.0, 3.0])
>>> r = ddp_optimize([w], lambda step: relative_mse(w, y), steps=200, lr=0.1, progress=False)
>>> r["final_rel_error"] < 1e-2
True
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from .distributed import DistributedContext, configure_rank_logging, save_checkpoint_main, wrap_ddp
from .runtime import precision_context

__all__ = ["relative_mse", "ddp_optimize", "ddp_step_module", "clone_layer_ddp", "main"]

log = logging.getLogger(__name__)
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


def _state_tensors(params, opt) -> tuple[dict, dict]:
    from symclone.io import flatten_optimizer

    tensors, ometa = flatten_optimizer(opt)
    tensors.update({f"param/{i}": p.detach() for i, p in enumerate(params)})
    return tensors, ometa


def ddp_optimize(params: Sequence[nn.Parameter], loss_fn: Callable[[int], torch.Tensor], steps: int, lr: float,
                 ctx: Optional[DistributedContext] = None, kind: str = "adam", weight_decay: float = 0.0,
                 grad_clip: float = 1.0, precision: str = "fp32", checkpoint: Optional[str | Path] = None,
                 checkpoint_every: int = 0, resume: bool = False, log_every: int = 10, progress: bool = True,
                 desc: str = "train", stop_at: Optional[int] = None) -> dict:
    """Optimise ``params`` for ``steps`` steps of ``loss_fn(step)`` (cosine lr to ``0.01·lr``, grad clip).

    ``loss_fn(step)`` must draw its global batch deterministically from ``step`` and use this rank's
    shard (``ctx.shard``), returning a loss whose mean over ranks is the global loss (e.g.
    :func:`relative_mse`, or any per-sample mean with equal shards). Returns ``loss_curve`` (pairs
    ``[step, sqrt(global loss)]``), ``final_rel_error``, ``steps``, ``seconds``, ``resumed_from``.
    ``stop_at``: stop after that many steps (checkpoint written, schedule still that of ``steps``), as a
    job that hits its time limit would; rerun with ``resume=True`` to finish.
    """
    from symclone.progress import progress_bar

    ctx = ctx or _SINGLE
    params = list(params)
    if not params:
        raise ValueError("params: nothing to optimise")
    model = ddp_step_module(params, loss_fn, ctx)
    from symclone.distill._train import cosine_lr, make_optimizer  # fused AdamW where supported

    if kind not in ("sgd", "adam", "adamw"):
        raise ValueError(f"kind: expected 'adam' or 'sgd', got {kind!r}")
    opt = make_optimizer(params, "adam" if kind == "adamw" else kind, lr, weight_decay)
    start, curve = 0, []
    stem = Path(checkpoint) if checkpoint is not None else None
    if resume and stem is not None:
        start, curve = _load(stem, params, opt)
    t0 = time.perf_counter()
    rel = float("nan")
    end = steps if stop_at is None else min(steps, max(int(stop_at), start))
    bar = progress_bar(end - start, desc, enabled=progress and ctx.is_main)
    for step in range(start, end):
        bar.update(1)
        for g in opt.param_groups:
            g["lr"] = cosine_lr(lr, step, steps)
        opt.zero_grad(set_to_none=True)
        with precision_context(precision, ctx.device):
            loss = model(step)
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        if step % log_every == 0 or step == end - 1:  # host sync + collective only on logging steps
            value = float(ctx.all_reduce_mean(loss.detach().float()))
            if not math.isfinite(value):
                raise FloatingPointError(f"{desc}: loss became {value} at step {step}; lower the lr")
            rel = max(value, 0.0) ** 0.5
            curve.append([step, rel])
            bar.update(0, rel_err=rel)
        if stem is not None and checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < end:
            tensors, ometa = _state_tensors(params, opt)
            save_checkpoint_main(ctx, stem, tensors, {"step": step + 1, "loss_curve": curve, "optimizer": ometa,
                                                      "world_size": ctx.world_size})
    bar.close()
    if stem is not None:
        tensors, ometa = _state_tensors(params, opt)
        save_checkpoint_main(ctx, stem, tensors, {"step": end, "loss_curve": curve, "optimizer": ometa,
                                                  "world_size": ctx.world_size})
    return {"loss_curve": curve, "final_rel_error": rel, "steps": end, "seconds": time.perf_counter() - t0,
            "resumed_from": start}


def _load(stem: Path, params, opt) -> tuple[int, list]:
    from symclone.io import restore_optimizer
    from symclone.io import CheckpointError, checkpoint_exists, load_checkpoint

    if not checkpoint_exists(stem):
        return 0, []
    tensors, meta = load_checkpoint(stem)
    for i, p in enumerate(params):
        t = tensors.get(f"param/{i}")
        if t is None or t.shape != p.shape:
            raise CheckpointError(f"checkpoint: {stem} does not match the trained tensors (param/{i})")
        with torch.no_grad():
            p.copy_(t.to(p))
    restore_optimizer(opt, {k: v.to(params[0].device) for k, v in tensors.items()}, meta["optimizer"])
    log.info("resumed %s at step %d", stem, meta["step"])
    return int(meta["step"]), list(meta.get("loss_curve", []))


def clone_layer_ddp(student: Any, teacher: Any, l: int, cfg: Any, ctx: Optional[DistributedContext] = None,
                    data: Any = "gaussian", precision: str = "fp32", checkpoint: Optional[str | Path] = None,
                    resume: bool = False, stop_at: Optional[int] = None) -> dict:
    """Clone teacher layer ``l`` into ``student`` with SGD/Adam under DDP (``cfg``: a ``DistillConfig``).

    Batches and teacher kernels per step are those of ``distill``'s SGD path (seeded by
    ``(cfg.seed, l, step)``); each rank computes its contiguous shard of the global ``cfg.batch_size``.
    """
    from symclone.distill._family import family_parameters
    from symclone.distill._feeds import base_inputs, batched, orbit_inputs, teacher_input
    from symclone.distill._function import use_pre_activation

    ctx = ctx or _SINGLE
    if cfg.solver == "closed_form":
        raise ValueError("solver: the closed-form solve is a single-process computation (use "
                         "symclone.distill.distill); clone_layer_ddp runs solver='adam' or 'sgd'")
    if cfg.mode == "function" and cfg.equivariance_weight > 0:
        raise ValueError("equivariance_weight: not supported by the DDP cloning loop; use 0")
    dev = ctx.device
    student.to(dev)
    teacher.to(dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    x = base_inputs(teacher, data, cfg.n_train, cfg.seed, train=True,
                    root=getattr(cfg, "data_root", None), download=getattr(cfg, "download", False))
    if cfg.mode == "function" and cfg.augment:
        x = orbit_inputs(teacher, x, cfg.seed)
    h_train = teacher_input(teacher, l, x.to(dev))
    use_pre = use_pre_activation(student, l, cfg.target)
    ctx.shard_range(min(cfg.batch_size, h_train.shape[0]))  # early, clear error on an indivisible batch
    if cfg.mode == "family":
        params = family_parameters(student, l)

        def loss_fn(step: int) -> torch.Tensor:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + l * 100_003 + step)
            idx = batched(h_train.shape[0], cfg.batch_size, gen)
            k = teacher.sample_params(l, cfg.kernels_per_step, generator=gen).to(dev)
            h = ctx.shard(h_train[idx.to(dev)])
            with torch.no_grad():
                y = teacher.layer_forward(l, h, params=k, pre_activation=use_pre)
            return relative_mse(student.layer_forward(l, h, params=k, pre_activation=use_pre), y, ctx)
    else:
        params = student.layer_parameters(l)
        with torch.no_grad():
            target = torch.cat([teacher.layer_forward(l, h_train[i:i + 512], pre_activation=use_pre)
                                for i in range(0, h_train.shape[0], 512)])

        def loss_fn(step: int) -> torch.Tensor:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + l * 100_003 + step)
            idx = ctx.shard(batched(h_train.shape[0], cfg.batch_size, gen)).to(dev)
            return relative_mse(student.layer_forward(l, h_train[idx], pre_activation=use_pre), target[idx], ctx)

    kind = "sgd" if cfg.solver == "sgd" else "adam"
    r = ddp_optimize(params, loss_fn, cfg.steps, cfg.lr, ctx, kind=kind, weight_decay=cfg.weight_decay,
                     grad_clip=cfg.grad_clip, precision=precision, checkpoint=checkpoint,
                     checkpoint_every=cfg.checkpoint_every, resume=resume, log_every=cfg.log_every,
                     progress=cfg.progress, desc=f"{cfg.mode} layer {l} (rank {ctx.rank}/{ctx.world_size})",
                     stop_at=stop_at)
    r.update(layer=l, mode=cfg.mode, solver=kind, world_size=ctx.world_size)
    return r


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``torchrun --nproc_per_node N -m symclone.ddp --teacher cnn --student blocks --mode family --out DIR``.

    Clones one layer with :func:`clone_layer_ddp`; rank 0 writes ``DIR/student`` (safetensors + JSON),
    ``DIR/ddp_metrics.json`` and the checkpoint ``DIR/checkpoints/ddp_layer<l>``; ``--resume`` continues it.
    """
    from symclone.config import apply_overrides
    from symclone.distill import DistillConfig, build_pair
    from symclone.io import write_json

    p = argparse.ArgumentParser(prog="symclone.ddp", description=main.__doc__.splitlines()[0])
    p.add_argument("--teacher", default="cnn")
    p.add_argument("--student", default="blocks")
    p.add_argument("--teacher-kwargs", default="{}", help="JSON dict of teacher constructor arguments")
    p.add_argument("--mode", default="family", choices=("family", "function"))
    p.add_argument("--layer", type=int, default=1)
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (one GPU per process: cuda:LOCAL_RANK)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "tf32"))
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--stop-at", type=int, default=None, help="stop after this many steps (checkpointed)")
    p.add_argument("--seed", type=int, default=0, help="seed of teacher and student construction")
    args, extra = p.parse_known_args(argv)
    import json

    ctx = DistributedContext.from_env(device=args.device)
    configure_rank_logging(ctx)
    try:
        torch.manual_seed(args.seed)
        teacher, student = build_pair(args.teacher, args.student, json.loads(args.teacher_kwargs))
        bad = [e for e in extra if not (e.startswith("--distill.") and "=" in e)]
        if bad:
            raise ValueError(f"unrecognized arguments: {' '.join(bad)} (config overrides look like --distill.lr=1e-3)")
        cfg = apply_overrides(DistillConfig(mode=args.mode, solver="adam", progress=False),
                              [e[len("--distill."):] for e in extra])
        out = Path(args.out)
        r = clone_layer_ddp(student, teacher, args.layer, cfg, ctx, precision=args.precision,
                            checkpoint=out / "checkpoints" / f"ddp_layer{args.layer}", resume=args.resume,
                            stop_at=args.stop_at)
        if ctx.is_main:
            from symclone.students import save_student

            save_student(student.cpu(), out / "student")
            write_json(out / "ddp_metrics.json", r)
        ctx.barrier()
    finally:
        ctx.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
