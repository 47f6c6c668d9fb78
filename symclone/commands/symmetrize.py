"""``symclone symmetrize runs/NAME --sampler learned --k 20``: make a cloned student equivariant.

Wraps the run's student in ``Symmetrized`` (group = the teacher's group), trains the sampler
(``--train-student``: the student too) on the run's task — n-body position prediction for runs
cloned from the n-body e3nn teacher, matching the teacher's output otherwise — and writes
``runs/NAME/symmetrize/<task>-<sampler>-k<k>.json``: the task metric (bare student, symmetrized
before/after training), equivariance error and Monte-Carlo spread vs k, and seconds per forward
against the bare student.

    symclone symmetrize runs/NAME --sampler learned --k 20 --device cuda --precision bf16
    symclone symmetrize runs/NAME --sampler uniform --k all   # exact average over every group element
    symclone symmetrize runs/NAME --sampler uniform --k 4     # 4 uniform samples per input (p4: of 4·H·W)
    torchrun --nproc_per_node 2 -m symclone symmetrize runs/NAME --train-student --batch-size 128
        # DDP (gloo on CPU, nccl on GPUs): --batch-size is the global batch; rank 0 writes
    symclone symmetrize runs/NAME ... --resume    # continue from the per-epoch checkpoint
"""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "run"]


def register(subparsers) -> None:
    from ..runtime import add_runtime_arguments

    p = subparsers.add_parser("symmetrize", help="symmetrize a cloned student (LPS / canonicalization)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="run directory written by 'symclone clone' (runs/NAME)")
    p.add_argument("--sampler", default="learned", choices=("uniform", "canonical", "learned"))
    p.add_argument("--k", type=_k_arg, default=20,
                   help="samples per input (training), or 'all': the exact average over every element of a "
                        "finite group (uniform sampler); an integer k >= |G| averages over the group too")
    p.add_argument("--k-eval", type=_k_arg, default=None,
                   help="samples per input (evaluation; default k), or 'all'")
    p.add_argument("--task", default=None, choices=("nbody", "teacher"), help="default: from the run")
    p.add_argument("--train-student", action="store_true", help="also fine-tune the student")
    p.add_argument("--noise", type=float, default=None,
                   help="learned sampler: input-noise scale (n-body: 1.0 measured best of 0.1/0.3/1/3)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--minutes", type=float, default=0.0,
                   help="optional CPU-minute cap (0, the default: none; the budget is --epochs, so a seed gives "
                        "the same model on any machine; a cap makes it depend on the machine's speed)")
    p.add_argument("--batch-size", type=int, default=100, help="global batch (divisible by the number of processes)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--n-eval", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the per-epoch checkpoint")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop after this many epochs (checkpointed; rerun with --resume), e.g. before a time limit")
    p.add_argument("--no-progress", action="store_true")
    add_runtime_arguments(p)
    p.set_defaults(func=run)


def _k_arg(text: str) -> int | str:
    """``--k`` / ``--k-eval``: a positive integer or ``all``."""
    if text == "all":
        return "all"
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None
    if k < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return k


def run(args) -> int:
    from ..distributed import DistributedContext, configure_rank_logging, env_world_size
    from ..symmetrize import SymmetrizeRunConfig, symmetrize_run

    if args.overrides:
        raise ValueError(f"overrides: symmetrize takes no dotted overrides, got {args.overrides}")
    if args.stop_after is not None and args.stop_after < 1:
        raise ValueError(f"--stop-after: expected a positive number of epochs, got {args.stop_after}")
    if args.minutes < 0:
        raise ValueError(f"--minutes: expected a CPU-minute budget >= 0 (0: none), got {args.minutes}")
    cfg = SymmetrizeRunConfig(sampler=args.sampler, k=args.k, k_eval=args.k_eval, task=args.task,
                              train_student=args.train_student, noise=args.noise, epochs=args.epochs,
                              minutes=args.minutes or None, lr=args.lr, batch_size=args.batch_size,
                              n_train=args.n_train, n_eval=args.n_eval, seed=args.seed,
                              progress=not args.no_progress, device=args.device, precision=args.precision)
    if not Path(args.run_dir).is_dir():
        raise FileNotFoundError(f"run_dir: {args.run_dir} is not a directory (expected runs/NAME from 'symclone clone')")
    ctx = DistributedContext.from_env(device=args.device) if env_world_size() > 1 else None  # torchrun: DDP
    try:
        if ctx is not None:
            configure_rank_logging(ctx)
        m = symmetrize_run(args.run_dir, cfg, ctx=ctx, resume=args.resume, stop_after=args.stop_after)
    finally:
        if ctx is not None:
            ctx.close()
    if ctx is not None and not ctx.is_main:
        return 0
    if "stopped_after" in m:
        print(f"stopped after epoch {m['stopped_after']} of {cfg.epochs}; checkpoint {m['checkpoint']} "
              "(rerun with --resume to continue)")
        return 0
    print(f"task {m['task']} ({m['metric']}), group {m['group']}, sampler {args.sampler}, k {args.k}, "
          f"device {m['device']} x {m['world_size']} process(es)")
    avg = m["averaging"]
    if avg["train"] == avg["eval"]:
        print(f"  averaging: {avg['train']}")
    else:
        print(f"  averaging: training {avg['train']}; evaluation {avg['eval']}")
    print(f"  bare student            {m['bare_student']:.5f}")
    print(f"  symmetrized (untrained) {m['symmetrized_before_training']:.5f}")
    print(f"  symmetrized (trained)   {m['symmetrized_after_training']:.5f}")
    for r in m["equivariance_vs_k"]:
        print(f"  k={str(r['k']):>4s}  equivariance error {r['equivariance_error']:.3e}  "
              f"MC spread {r['mc_spread']:.3e}")
    t = m["seconds_per_forward"]
    print(f"  forward: bare {t['bare'] * 1e3:.2f} ms, symmetrized {t['symmetrized'] * 1e3:.2f} ms "
          f"(x{t['ratio']:.1f}, batch {t['batch']})")
    print(f"  wrote {m['path']}")
    return 0
