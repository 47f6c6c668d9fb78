"""``symclone symmetrize runs/NAME --sampler learned --k 20``: make a cloned student equivariant.

Wraps the run's student in ``Symmetrized`` (group = the teacher's group), trains the sampler
(``--train-student``: the student too) on the run's task — n-body position prediction for runs
cloned from the n-body e3nn teacher, matching the teacher's output otherwise — and writes
``runs/NAME/symmetrize/<task>-<sampler>-k<k>.json``: the task metric (bare student, symmetrized
before/after training), equivariance error and Monte-Carlo spread vs k, and seconds per forward
against the bare student.
"""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "run"]


def register(subparsers) -> None:
    p = subparsers.add_parser("symmetrize", help="symmetrize a cloned student (LPS / canonicalization)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="run directory written by 'symclone clone' (runs/NAME)")
    p.add_argument("--sampler", default="learned", choices=("uniform", "canonical", "learned"))
    p.add_argument("--k", type=int, default=20, help="samples per input (training)")
    p.add_argument("--k-eval", type=int, default=None, help="samples per input (evaluation; default k)")
    p.add_argument("--task", default=None, choices=("nbody", "teacher"), help="default: from the run")
    p.add_argument("--train-student", action="store_true", help="also fine-tune the student")
    p.add_argument("--noise", type=float, default=None,
                   help="learned sampler: input-noise scale (n-body: 1.0 measured best of 0.1/0.3/1/3)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--minutes", type=float, default=5.0, help="CPU-minute training budget")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--n-eval", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..symmetrize._run import SymmetrizeRunConfig, symmetrize_run

    if not Path(args.run_dir).is_dir():
        raise FileNotFoundError(f"run_dir: {args.run_dir} is not a directory (expected runs/NAME from 'symclone clone')")
    if args.overrides:
        raise ValueError(f"overrides: symmetrize takes no dotted overrides, got {args.overrides}")
    cfg = SymmetrizeRunConfig(sampler=args.sampler, k=args.k, k_eval=args.k_eval, task=args.task,
                              train_student=args.train_student, noise=args.noise, epochs=args.epochs, minutes=args.minutes,
                              lr=args.lr, n_train=args.n_train, n_eval=args.n_eval, seed=args.seed,
                              progress=not args.no_progress)
    m = symmetrize_run(args.run_dir, cfg)
    print(f"task {m['task']} ({m['metric']}), group {m['group']}, sampler {args.sampler}, k {args.k}")
    print(f"  bare student            {m['bare_student']:.5f}")
    print(f"  symmetrized (untrained) {m['symmetrized_before_training']:.5f}")
    print(f"  symmetrized (trained)   {m['symmetrized_after_training']:.5f}")
    for r in m["equivariance_vs_k"]:
        print(f"  k={r['k']:4d}  equivariance error {r['equivariance_error']:.3e}  MC spread {r['mc_spread']:.3e}")
    t = m["seconds_per_forward"]
    print(f"  forward: bare {t['bare'] * 1e3:.2f} ms, symmetrized {t['symmetrized'] * 1e3:.2f} ms "
          f"(x{t['ratio']:.1f}, batch {t['batch']})")
    print(f"  wrote {m['path']}")
    return 0
