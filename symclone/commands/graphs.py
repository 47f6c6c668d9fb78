"""``symclone graphs exp-iso|graph8c|exp-classify|pattern``: the LPS graph benchmarks and PATTERN.

Examples::

    symclone graphs exp-iso --models mlp,canonical,mp --seeds 100
    symclone graphs graph8c --models learned --seeds 20 --out results/graphs --resume
    symclone graphs exp-classify --models canonical,learned --classify.epochs=60
    symclone graphs exp-iso --model.k=20 --model.hidden=256,256     # dotted config overrides
    symclone graphs exp-iso --models learned --seeds 30 --correction=holm --alpha=0.05
    symclone graphs exp-classify --models learned --classify.epochs=20 --classify.seed=1
    symclone graphs exp-classify --models learned --classify.model.layout=global   # the old layout
    symclone graphs pattern --models transformer,canonical,mp --seeds 3 --pattern.epochs=40
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["register", "run"]

PROTOCOLS = ("exp-iso", "graph8c", "exp-classify", "pattern")
DEFAULT_MODELS = {"pattern": "transformer,uniform,canonical,learned,mp"}
DEFAULT_SEEDS = {"pattern": 1}


def register(subparsers) -> None:
    p = subparsers.add_parser("graphs", help="graph separation / classification benchmarks (EXP, GRAPH8c, PATTERN)",
                              description=__doc__.split("Examples")[0])
    p.add_argument("protocol", choices=PROTOCOLS)
    p.add_argument("--models", default=None,
                   help="comma-separated subset of mlp,uniform,canonical,learned,mp (all of them by default); "
                        "pattern: of transformer,uniform,canonical,learned,mp")
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds of the separation protocols (100); pattern: training seeds 0..SEEDS-1 (1)")
    p.add_argument("--limit", type=int, default=None, help="only the first LIMIT pairs/graphs (smoke runs)")
    p.add_argument("--data-root", default=None,
                   help="folder with exp.npz / graph8c.g6 (default: $SYMCLONE_GRAPH_DATA, else the copy "
                        "bundled with the package)")
    p.add_argument("--out", default="results/graphs",
                   help="folder for <protocol>.json and resume state (pattern: also the per-run checkpoints)")
    p.add_argument("--resume", action="store_true", help="continue from the state saved in --out")
    p.add_argument("--no-progress", action="store_true", help="disable progress bars")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 on shared machines)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..config import apply_overrides, to_dict
    from ..graphs._classify import ClassifyConfig, exp_classify
    from ..graphs._embed import MODEL_NAMES
    from ..graphs._protocols import ProtocolConfig, exp_iso, graph8c
    from ..graphs._report import results_table
    from ..distributed import env_world_size
    from ..io import write_json

    if env_world_size() > 1:  # every rank would write the same files: refuse instead of racing
        raise ValueError("graphs: runs in one process (its models train in seconds to minutes on a CPU); "
                         "start it without torchrun")
    torch.set_num_threads(max(1, args.threads))
    if args.protocol == "pattern":
        return _pattern(args)
    if args.seeds is None:
        args.seeds = 100
    models = [m.strip() for m in (args.models or ",".join(MODEL_NAMES)).split(",") if m.strip()]
    bad = [m for m in models if m not in MODEL_NAMES]
    if bad or not models:
        raise ValueError(f"--models: expected a comma-separated subset of {MODEL_NAMES}, got {args.models!r}")
    if args.seeds < 1:
        raise ValueError(f"--seeds: expected >= 1, got {args.seeds}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress  # a bar on a terminal, log lines otherwise (symclone.progress)
    overrides = list(getattr(args, "overrides", []) or [])
    rows: list[dict] = []
    if args.protocol == "exp-classify":
        cfg = apply_overrides(ClassifyConfig(), [o.removeprefix("classify.") for o in overrides])
        for m in models:
            rows.append(exp_classify(m, cfg, args.data_root, out, args.resume, progress))
            print(rows[-1], flush=True)
        table = results_table(cls=rows)
    else:
        cfg = apply_overrides(ProtocolConfig(seeds=args.seeds), overrides)
        fn = exp_iso if args.protocol == "exp-iso" else graph8c
        rows = fn(models, cfg, args.data_root, out, args.resume, progress, args.limit,
                  callback=lambda r: print(r, flush=True))
        table = results_table(**{"exp" if args.protocol == "exp-iso" else "g8c": rows})
    path = out / f"{args.protocol}.json"
    write_json(path, {"protocol": args.protocol, "config": to_dict(cfg), "results": rows})
    print(table)
    print(f"wrote {path}")
    return 0


def _pattern(args) -> int:
    """``symclone graphs pattern``: train the PATTERN models over training seeds, write ``pattern.json``."""
    from ..config import apply_overrides
    from ..graphs import PATTERN_MODELS, PatternConfig, pattern_table, run_pattern
    from ..validation import check_out_dir

    text = args.models or DEFAULT_MODELS["pattern"]
    models = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in models if m not in PATTERN_MODELS]
    if bad or not models:
        raise ValueError(f"--models: expected a comma-separated subset of {PATTERN_MODELS}, got {text!r}")
    seeds = DEFAULT_SEEDS["pattern"] if args.seeds is None else args.seeds
    if seeds < 1:
        raise ValueError(f"--seeds: expected >= 1 training seeds, got {seeds}")
    if args.limit is not None:
        raise ValueError("--limit: not used by pattern; set the split sizes with --pattern.n_train=N "
                         "--pattern.n_val=N --pattern.n_test=N")
    overrides = list(getattr(args, "overrides", []) or [])
    foreign = [o for o in overrides if not o.startswith("pattern.")]
    if foreign:
        raise ValueError(f"override: {foreign[0]!r}: pattern takes --pattern.<field>=VALUE overrides")
    cfg = apply_overrides(PatternConfig(progress=not args.no_progress),
                          [o.removeprefix("pattern.") for o in overrides])
    out = check_out_dir(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = run_pattern(models, seeds, cfg, out, args.resume,
                         callback=lambda r: print({k: r[k] for k in ("model", "seed", "test_accuracy", "val_accuracy",
                                                                     "best_epoch", "cpu_seconds")}, flush=True))
    print(pattern_table(record))
    print(f"wrote {out / 'pattern.json'}")
    return 0
