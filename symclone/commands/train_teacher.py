"""``symclone train-teacher --teacher gcnn_c4 --task fashion-mnist --out runs/NAME``: train a teacher.

Classification (``fashion-mnist``: ``gcnn_c4`` or ``cnn``) puts a linear head on invariant pooled
features; ``nbody`` trains the ``e3nn`` teacher to predict positions 1000 simulator steps ahead.
Writes ``<out>/teacher.safetensors|json`` (load with ``symclone.teachers.load_teacher``),
``<out>/train_state.*`` (every ``--checkpoint-every`` steps; ``--resume`` continues from it) and
``<out>/metrics.json`` (upright and rotated-by-k*90 test accuracy, or test MSE). Teacher options as
JSON (``--teacher-kwargs '{"fields": 8}'``); training options as ``--train.<field>=value``.
``--data-root DIR`` reads Fashion-MNIST's IDX files from ``DIR`` instead of the Debian package's folder.

    torchrun --nproc_per_node 2 -m symclone train-teacher --teacher cnn --out runs/T   # DDP; rank 0 writes
"""
from __future__ import annotations

import argparse
import json

__all__ = ["register", "run"]


def register(subparsers) -> None:
    p = subparsers.add_parser("train-teacher", help="train a teacher (gcnn_c4/cnn on Fashion-MNIST, e3nn on n-body)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="gcnn_c4", help="registered teacher name (gcnn_c4, cnn, e3nn)")
    p.add_argument("--task", default="fashion-mnist", choices=("fashion-mnist", "nbody"))
    p.add_argument("--out", required=True, help="output directory, e.g. runs/gcnn_fmnist")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate")
    p.add_argument("--train-limit", type=int, default=None, help="use the first N training examples")
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--data-root", default=None,
                   help="fashion-mnist: folder with the IDX files (default /usr/share/datasets/fashion-mnist, "
                        "from 'apt-get install dataset-fashion-mnist'); nbody: simulation cache (.cache/nbody)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--teacher-kwargs", default="{}", help="JSON dict of teacher constructor options")
    from ..runtime import add_runtime_arguments

    add_runtime_arguments(p)  # --device cpu|cuda|auto, --precision fp32|bf16|tf32
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from <out>/train_state")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..config import apply_overrides
    from ..teachers.training import TeacherTrainConfig, train_teacher
    from ..validation import check_out_dir

    check_out_dir(args.out)

    try:
        kwargs = json.loads(args.teacher_kwargs)
    except json.JSONDecodeError as err:
        raise ValueError(f"--teacher-kwargs: expected a JSON object, got {args.teacher_kwargs!r} ({err})") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"--teacher-kwargs: expected a JSON object, got {args.teacher_kwargs!r}")
    overrides = [o[len("train."):] for o in args.overrides if o.startswith("train.")]
    if len(overrides) != len(args.overrides):
        raise ValueError(f"overrides: only --train.<field>=value is understood here, got {args.overrides}")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TeacherTrainConfig(teacher=args.teacher, task=args.task, teacher_kwargs=kwargs, epochs=args.epochs,
                             batch_size=args.batch_size, optimizer_lr=args.lr, train_limit=args.train_limit,
                             test_limit=args.test_limit, checkpoint_every=args.checkpoint_every, seed=args.seed,
                             device=args.device, precision=args.precision, progress=not args.no_progress,
                             data_root=args.data_root)
    cfg = apply_overrides(cfg, overrides)
    from ..distributed import DistributedContext, configure_rank_logging, env_world_size

    ctx = DistributedContext.from_env(device=args.device) if env_world_size() > 1 else None  # torchrun: DDP
    try:
        if ctx is not None:
            configure_rank_logging(ctx)
        m = train_teacher(cfg, args.out, resume=args.resume, ctx=ctx)
    finally:
        if ctx is not None:
            ctx.close()
    if ctx is not None and not ctx.is_main:
        return 0
    if "test_accuracy_upright" in m:
        print(f"{args.teacher} on {args.task}: upright test accuracy {m['test_accuracy_upright']:.4f}, "
              f"rotated (k*90) {m['test_accuracy_rotated']:.4f}  ({m['n_test']} test images) -> {args.out}")
    else:
        print(f"{args.teacher} on {args.task}: test MSE {m['test_mse']:.5f}, rotated {m['test_mse_rotated']:.5f} "
              f"-> {args.out}")
    return 0
