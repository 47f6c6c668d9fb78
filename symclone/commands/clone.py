"""``symclone clone``: clone a registered teacher into a student and write ``runs/NAME/``.

    symclone clone --teacher cnn --student mlp --mode function --out runs/cnn-mlp
    symclone clone --teacher cnn --student blocks --mode family --blocks 7 --paper-layer --out runs/b7
    symclone clone ... --distill.steps=2000 --teacher.channels=4 --student.dim=128 --resume
    symclone clone --teacher cnn --student mlp --data mnist --data-root ~/data/mnist --download --out runs/m
    torchrun --nproc_per_node 2 -m symclone clone --teacher cnn --student blocks --mode family \
        --paper-layer --out runs/ddp --distill.solver=adam      # DDP: gloo on CPU, nccl on GPUs
"""
from __future__ import annotations

import argparse
import json

__all__ = ["register", "run", "split_overrides"]


def register(subparsers) -> None:
    p = subparsers.add_parser("clone", help="clone an equivariant teacher into a student (function or family mode)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="registered teacher: cnn | gcnn_c4 | e3nn")
    p.add_argument("--student", required=True, help="registered student: mlp | transformer | blocks")
    p.add_argument("--mode", choices=("function", "family"), default="function")
    p.add_argument("--blocks", type=int, default=0, help="B for the blocks student (default: P, exact)")
    p.add_argument("--data", default="gaussian", help="gaussian | fashion-mnist | mnist")
    p.add_argument("--data-root", default=None,
                   help="folder with the dataset's IDX files (default: /usr/share/datasets/fashion-mnist for "
                        "fashion-mnist, ~/.cache/symclone/mnist for mnist)")
    p.add_argument("--download", action="store_true",
                   help="--data mnist: fetch missing files with torchvision (off by default; needs network)")
    p.add_argument("--paper-layer", action="store_true", help="cnn teacher: the paper's 3x3 valid 28->26 layer")
    p.add_argument("--out", required=True, help="run directory, e.g. runs/NAME")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--precision", default=None, choices=("fp32", "bf16", "tf32"),
                   help="SGD/Adam training numerics (checks stay fp32/fp64); default fp32")
    p.add_argument("--no-progress", action="store_true", help="disable progress bars")
    p.set_defaults(func=run)


def split_overrides(overrides: list[str]) -> tuple[dict, dict, list[str]]:
    """``teacher.x=v`` / ``student.x=v`` -> kwargs (JSON-parsed values); ``distill.x=v`` -> config overrides."""
    teacher_kw, student_kw, cfg = {}, {}, []
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override: expected key=value, got {item!r}")
        key, val = item.split("=", 1)
        head, _, rest = key.partition(".")
        try:
            parsed = json.loads(val)
        except json.JSONDecodeError:
            parsed = val
        if head == "teacher" and rest:
            teacher_kw[rest] = parsed
        elif head == "student" and rest:
            student_kw[rest] = parsed
        elif head == "distill" and rest:
            cfg.append(f"{rest}={val}")
        else:
            raise ValueError(f"override: {key!r} must start with 'distill.', 'teacher.' or 'student.'")
    return teacher_kw, student_kw, cfg


def run(args) -> int:
    from symclone.config import apply_overrides
    from symclone.distill import DistillConfig, build_pair, clone_run
    from symclone.validation import check_out_dir

    check_out_dir(args.out)
    teacher_kw, student_kw, cfg_over = split_overrides(list(getattr(args, "overrides", []) or []))
    if args.paper_layer:
        teacher_kw["paper_layer"] = True
    from symclone.distributed import DistributedContext, configure_rank_logging, env_world_size
    from symclone.runtime import resolve_device, tune_cpu_allocator

    cfg = DistillConfig(mode=args.mode, device=args.device, blocks=args.blocks,
                        progress=not args.no_progress,
                        data_root=getattr(args, "data_root", None), download=getattr(args, "download", False))
    if args.precision:
        cfg_over = [f"precision={args.precision}"] + cfg_over
    cfg = apply_overrides(cfg, cfg_over)
    ctx = DistributedContext.from_env(device=cfg.device) if env_world_size() > 1 else None
    if (ctx.device if ctx is not None else resolve_device(cfg.device)).type == "cpu":
        tune_cpu_allocator()  # reuse freed activations instead of page-faulting them every step (2-3x, family)
    try:
        if ctx is not None:
            configure_rank_logging(ctx)
        teacher, student = build_pair(args.teacher, args.student, teacher_kw, student_kw, blocks=cfg.blocks)
        metrics = clone_run(args.out, teacher, student, data=args.data, cfg=cfg, resume=args.resume, ctx=ctx)
    finally:
        if ctx is not None:
            ctx.close()
    if ctx is not None and not ctx.is_main:
        return 0
    print(f"{'layer':>5} {'solver':>11} {'rel error':>10} {'eq teacher':>11} {'eq student':>11} "
          f"{'eq untrained':>13} {'seconds':>8}")
    fmt = lambda v: f"{v:.2e}" if isinstance(v, float) else "n/a"
    for r in metrics["layers"]:
        e = r["equivariance_error"]
        print(f"{r['layer']:>5} {r['solver']:>11} {fmt(r['feature_rel_error']):>10} {fmt(e['teacher']):>11} "
              f"{fmt(e['student']):>11} {fmt(e['untrained']):>13} {r['seconds']:>8.2f}")
    print(f"wrote {args.out}/ (config.json, metrics.json, teacher.*, student.*, checkpoints/)")
    return 0
