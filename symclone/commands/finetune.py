"""``symclone finetune runs/NAME --task TASK --mode anchored --beta 1e-3``: fine-tune a cloned run.

Loads the run's student (``symclone.runs.load_run``), puts the invariant head on it (a one-layer
blocks student is applied with ``--kernels`` learnable kernels drawn from the teacher's init), and
trains on the task. Writes ``runs/NAME/finetune/<task>-<mode>[-<anchor>-beta<beta>].json`` (metrics
and history) and the trained model next to it (``...-model.safetensors`` + ``.json``); ``--resume`` continues
an interrupted run from its per-epoch checkpoint. Training options: ``--finetune.epochs=3``, ``--finetune.lr=5e-4``.
``--device cpu|cuda|auto`` and ``--precision fp32|bf16|tf32`` (training forward; checks stay fp32);
under ``torchrun --nproc_per_node N`` the run trains with DistributedDataParallel (gloo on CPU, nccl on
GPUs) and rank 0 writes.
"""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "run"]


def register(subparsers) -> None:
    from ..finetune import ANCHORS, MODES, TASKS
    from ..runtime import add_runtime_arguments

    p = subparsers.add_parser("finetune", help="fine-tune a cloned student on a downstream task",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="run directory written by 'symclone clone' (runs/NAME)")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--mode", default="anchored", choices=MODES)
    p.add_argument("--beta", type=float, default=1e-3, help="anchor strength (anchored mode)")
    p.add_argument("--anchor", default="l2", choices=ANCHORS)
    p.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "mnist", "synthetic"))
    p.add_argument("--data-root", default=None)
    p.add_argument("--n-train", type=int, default=None, help="training subset (default: all)")
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--kernels", type=int, default=8,
                   help="learnable kernels for a one-layer blocks student (0: use its stored kernel)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the per-epoch checkpoint")
    p.add_argument("--no-progress", action="store_true")
    add_runtime_arguments(p)
    p.set_defaults(func=run)


def _tag(args) -> str:
    tag = f"{args.task}-{args.mode}"
    beta = f"{args.beta:g}".replace(".", "p")  # no dots: checkpoint stems get their suffix replaced
    return tag + (f"-{args.anchor}-beta{beta}" if args.mode == "anchored" else "")


def run(args) -> int:
    import torch

    from ..config import apply_overrides, to_dict
    from ..finetune import ClonedNet, FinetuneConfig, finetune, make_task
    from ..finetune.zoo import teacher_spec
    from ..io import remove_checkpoint, save_checkpoint, write_json
    from ..trainer import TrainingCheckpoint
    from ..runs import load_run

    from ..validation import check_float, check_int

    check_int(args.n_train, "--n-train", minimum=1, allow_none=True)
    check_int(args.n_test, "--n-test", minimum=1, allow_none=True)
    check_int(args.kernels, "--kernels", minimum=0)
    check_float(args.beta, "--beta", minimum=0.0)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run_dir: {run_dir} is not a directory (expected runs/NAME from 'symclone clone')")
    overrides = [o[len("finetune."):] for o in args.overrides if o.startswith("finetune.")]
    if len(overrides) != len(args.overrides):
        raise ValueError(f"overrides: only --finetune.<field>=value is understood here, got {args.overrides}")
    cfg = apply_overrides(FinetuneConfig(seed=args.seed, progress=not args.no_progress, device=args.device,
                                         precision=args.precision), overrides)
    arts = load_run(run_dir)
    task = make_task(args.task, args.dataset, args.n_train, args.n_test, args.data_root, args.seed)
    student, teacher = arts.student, arts.teacher
    if tuple(student.feature_shapes[0]) != tuple(task.input_shape):
        raise ValueError(f"run_dir: the run's student takes inputs {tuple(student.feature_shapes[0])}, task "
                         f"{args.task!r} needs {tuple(task.input_shape)} (clone a teacher of that size)")
    pool = teacher_spec(task, 1)[2]
    kernels = None
    if args.kernels > 0 and getattr(student, "supports_params", False) and student.num_layers == 1:
        kernels = teacher.sample_params(1, args.kernels, generator=torch.Generator().manual_seed(args.seed))
    torch.manual_seed(cfg.seed)  # the head's initialisation: the same command gives the same model
    model = ClonedNet(student, task.num_classes, kernels=kernels, pool=pool, structure_group=teacher.group)
    out = run_dir / "finetune"
    out.mkdir(parents=True, exist_ok=True)
    stem = out / _tag(args)
    ckpt = str(stem) + "-checkpoint"  # stems carry no dots: checkpoint files add their own suffixes
    from ..distributed import DistributedContext, configure_rank_logging, env_world_size

    ctx = DistributedContext.from_env(device=cfg.device) if env_world_size() > 1 else None  # torchrun: DDP
    if ctx is not None:
        configure_rank_logging(ctx)
    if not args.resume:  # a fresh run: drop an old per-epoch checkpoint (rank 0; every rank waits)
        TrainingCheckpoint(ckpt, ctx).remove()
    try:
        res = finetune(model, task, mode=args.mode, beta=args.beta, anchor=args.anchor, config=cfg,
                       checkpoint=ckpt, ctx=ctx)
    finally:
        if ctx is not None:
            ctx.close()
    if ctx is not None and not ctx.is_main:
        return 0
    m = res.metrics
    write_json(str(stem) + ".json", {"run": str(run_dir), "task": task.describe(), "config": to_dict(cfg),
                                     "metrics": m, "history": res.history})
    save_checkpoint(str(stem) + "-model", res.model.state_dict(), {"task": args.task, "mode": args.mode})
    remove_checkpoint(ckpt)  # finished: the per-epoch checkpoint is no longer needed
    accs = ", ".join(f"{k} {v:.4f}" for k, v in m["accuracy"].items())
    print(f"{args.task} {args.mode}: accuracy {accs}; invariance error {m['invariance_error']:.3g}; "
          f"cloned drift {m['cloned_distance']:.3g}; {m['seconds']:.1f} s -> {stem}.json")
    return 0
