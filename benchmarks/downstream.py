"""Downstream grid: retain or break the symmetry of cloned students (issue 7, docs/design.md §6).

For every (task, model, mode, beta) row: test accuracy (per split), invariance error of the trained
logits on the test set, structure residual of the cloned layers before/after, drift of the cloned
tensors from W0, parameters, wall-clock. Plus a sample-complexity sweep on c4-generalisation.

    python -m benchmarks.downstream --quick          # 2k images, seeds 0,1,2 (about 7 min per seed, 1 thread)
    python -m benchmarks.downstream --size medium    # 15k images, main rows only, seeds 0,1,2
    python -m benchmarks.downstream                  # full size (60k training images, 10 epochs; not run here)
    python -m benchmarks.downstream --plots-only     # redraw the figures from results/downstream.json

Every row runs once per seed (``--seeds``, default ``0,1,2``); ``rows`` of the JSON hold the per-seed
results and ``summary`` one entry per row with the mean, the sample standard deviation (``*_sd``) and
the per-seed values (``*_values``) of each metric; the tables and the plots (error bars: ± one sd)
come from ``summary``. A seed fixes everything (data subset, transforms, teacher, clone, head
initialisation, batch order): rerunning a seed reproduces its numbers exactly at the same thread count.

Modes of the cloned models: ``frozen`` (the cloned basis is frozen; kernels, per-field biases and the
head train), ``head-only`` (only the classifier head trains), ``anchored`` (β sweep) and ``free``.

For the 20-class breaking tasks each row also records ``accuracy_mod10``: the accuracy of the
predicted class modulo 10 against ``label % 10`` on the same test split, i.e. the 10-class skill
with the symmetry-breaking bit ignored. An invariant model cannot tell ``x`` from its transformed
twin, so its 20-class accuracy is at most about ``accuracy_mod10 / 2`` (the invariant ceiling,
measured in the same run); ``primary_accuracy / accuracy_mod10`` near 1 means the bit was learned.

Writes results/downstream.json (after every row; ``--resume`` skips finished rows; ``seconds`` is
the wall-clock summed over all sessions that produced the file, ``sessions`` their number),
results/downstream.md (tables) and results/downstream_beta.png / downstream_samples.png.
Cloned students are built once (closed-form cloning via ``symclone.distill``) and cached under
``.cache/downstream/``.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from symclone.finetune import FinetuneConfig, accuracy, finetune, make_task
from symclone.finetune.zoo import build_model
from symclone.io import atomic_write_text, read_json, write_json

from ._downstream_report import aggregate, config_key, markdown, plots

log = logging.getLogger("benchmarks.downstream")

#: grid sizes. ``fields``: regular fields (C4) / channels (T2) of the GCNN-shaped nets; ``mlp_fields``:
#: width of the teacher the cloned MLP copies (its dense layer has 4 * fields * 784 x 784 weights);
#: ``betas``: anchored l2 sweep of the cloned-blocks net on c4-breaking (``t2_betas`` on t2-breaking,
#: ``mlp_beta`` elsewhere and for the cloned MLP).
SIZES = {
    "quick": dict(n_train=2000, n_test=1000, epochs=3, fields=8, mlp_fields=2, sample_sizes=(500, 2000),
                  betas=(1.0, 10.0, 100.0, 1000.0), kl_betas=(), t2_n_train=1000, t2_epochs=2,
                  t2_betas=(1.0, 10.0, 100.0, 1000.0), mlp_beta=100.0),
    "medium": dict(n_train=15000, n_test=2000, epochs=3, fields=8, mlp_fields=2, sample_sizes=(),
                   betas=(1.0, 10.0, 100.0, 1000.0), kl_betas=(), t2_n_train=5000, t2_epochs=2,
                   t2_betas=(1.0, 10.0, 100.0, 1000.0), mlp_beta=100.0),
    "full": dict(n_train=None, n_test=None, epochs=10, fields=8, mlp_fields=8, sample_sizes=(500, 2000, 10000, 60000),
                 betas=(0.1, 1.0, 10.0, 100.0, 1000.0), kl_betas=(1e2, 1e3, 1e4), t2_n_train=None, t2_epochs=10,
                 t2_betas=(1.0, 10.0, 100.0, 1000.0), mlp_beta=100.0),
}


def grid(size: dict) -> list[dict]:
    """The rows to run: dicts with task, model, mode, beta, anchor, n_train, epochs, sweep."""
    rows = []

    def add(task, model, mode, beta=None, anchor="l2", n_train=None, epochs=None, sweep="main"):
        fields = size["mlp_fields"] if model.startswith("cloned-mlp") else size["fields"]
        rows.append(dict(task=task, model=model, mode=mode, beta=beta, anchor=anchor if mode == "anchored" else None,
                         n_train=n_train, epochs=epochs, sweep=sweep, fields=fields))

    for task in ("c4-generalisation", "c4-breaking", "t2-breaking"):
        t2 = task == "t2-breaking"
        n, ep = (size["t2_n_train"], size["t2_epochs"]) if t2 else (size["n_train"], size["epochs"])
        kw = dict(n_train=n, epochs=ep)
        for m in ("mlp", "cnn", "equivariant"):
            add(task, m, "free", **kw)
        add(task, "cloned-blocks", "frozen", **kw)
        add(task, "cloned-blocks", "head-only", **kw)
        betas = size["t2_betas"] if t2 else (size["betas"] if task == "c4-breaking" else (size["mlp_beta"],))
        for b in betas:
            add(task, "cloned-blocks", "anchored", b, **kw)
        if task == "c4-breaking":
            for b in size["kl_betas"]:
                add(task, "cloned-blocks", "anchored", b, anchor="kl", **kw)
        add(task, "cloned-blocks", "free", **kw)
        add(task, "cloned-mlp", "frozen", **kw)
        add(task, "cloned-mlp", "head-only", **kw)
        add(task, "cloned-mlp", "anchored", size["mlp_beta"], **kw)
        if not t2:
            add(task, "cloned-mlp-sym", "frozen", **kw)
    for n in size["sample_sizes"]:
        if n == size["n_train"]:
            continue  # the main c4-generalisation rows are that point of the curve
        for m, mode in (("mlp", "free"), ("cnn", "free"), ("equivariant", "free"), ("cloned-blocks", "frozen")):
            add("c4-generalisation", m, mode, n_train=n, epochs=size["epochs"], sweep="samples")
    return rows


def row_key(r: dict) -> str:
    """The row's configuration (what is averaged over seeds) plus its seed."""
    return "|".join(map(str, config_key(r))) + f"|seed{r.get('seed', 0)}"


class StudentCache(dict):
    """Cloned students by key, persisted as safetensors under ``root`` (closed-form clones are
    deterministic, so a cached clone equals a fresh one)."""

    def __init__(self, root: Path, seed: int = 0):
        super().__init__()
        self.root, self.seed = root, seed

    def _stem(self, key) -> Path:
        kind, name, kw = key
        return self.root / ("-".join([kind, name] + [f"{k}{v}" for k, v in kw] + [f"seed{self.seed}"]))

    def __contains__(self, key) -> bool:
        if dict.__contains__(self, key):
            return True
        from symclone.registry import create_teacher
        from symclone.students import load_student
        from symclone.io import CheckpointError
        try:
            student = load_student(self._stem(key))
        except CheckpointError:
            return False
        dict.__setitem__(self, key, (create_teacher(key[1], seed=self.seed, **dict(key[2])), student))
        return True

    def __setitem__(self, key, value) -> None:
        from symclone.students import save_student
        dict.__setitem__(self, key, value)
        save_student(value[1], self._stem(key))


def mod10_accuracy(model: torch.nn.Module, split, limit: Optional[int] = None, batch_size: int = 512) -> float:
    """Accuracy of ``argmax(logits) % 10`` against ``label % 10`` on ``split`` (first ``limit`` samples;
    :func:`symclone.finetune.accuracy` with ``fold=10``).

    On a 20-class breaking task (labels ``y`` / ``y + 10``) this is the 10-class accuracy with the
    symmetry-breaking bit ignored; an invariant model reaches at most about half of it on the
    20-class labels.

    >>> from symclone.finetune.tasks import task_from_tensors
    >>> x = torch.rand(8, 1, 28, 28); y = torch.arange(8) % 10
    >>> t = task_from_tensors("c4-breaking", x, y, x, y)
    >>> class Oracle(torch.nn.Module):   # knows the class, always guesses the "upright" half
    ...     def forward(self, xb): return torch.nn.functional.one_hot(self.y, 20).float()
    >>> m = Oracle(); m.y = y
    >>> mod10_accuracy(m, t.test["test"])
    1.0
    """
    return accuracy(model, split, batch_size=batch_size, limit=limit, fold=10)


def run_row(r: dict, size: dict, tasks: dict, cache: StudentCache, args) -> dict:
    """Train and evaluate one row (its ``seed``, else ``args.seed``); ``tasks`` caches the task splits."""
    seed = r.get("seed", args.seed)
    key = (r["task"], r["n_train"], seed)
    if key not in tasks:
        tasks[key] = make_task(r["task"], args.dataset, r["n_train"], size["n_test"], args.data_root, seed)
    task = tasks[key]
    t0 = time.perf_counter()
    model = build_model(r["model"], task, fields=r["fields"], seed=seed, students=cache)
    build = time.perf_counter() - t0
    cfg = FinetuneConfig(epochs=r["epochs"], seed=seed, progress=args.progress)
    res = finetune(model, task, mode=r["mode"], beta=r["beta"] if r["beta"] is not None else 0.0,
                   anchor=r["anchor"] or "l2", config=cfg)
    m = res.metrics
    out = dict(r)
    out.update(accuracy=m["accuracy"], primary=task.primary, primary_accuracy=m["accuracy"][task.primary],
               invariance_error=m["invariance_error"], structure_residual_before=m["structure_residual_before"],
               structure_residual_after=m["structure_residual_after"], cloned_distance=m["cloned_distance"],
               n_params=m["n_params"], n_trainable=m["n_trainable"], train_seconds=m["seconds"],
               build_seconds=build, n_train_actual=len(task.train), invariant_ceiling=task.invariant_ceiling,
               final_ce=res.history[-1]["ce"])
    if task.num_classes == 20:  # breaking tasks: the 10-class skill, i.e. twice the invariant ceiling
        out["accuracy_mod10"] = mod10_accuracy(res.model, task.test[task.primary])
    return out


def _summary(size_name: str, size: dict, dataset: str, threads: int, rows: list, seconds: float,
             sessions: int) -> dict:
    """The JSON record; ``seconds`` is the wall-clock of all ``sessions`` (``--resume`` adds up)."""
    return {"size": size_name, "config": size, "dataset": dataset, "threads": threads,
            "seeds": sorted({r.get("seed", 0) for r in rows}), "rows": rows, "summary": aggregate(rows),
            "seconds": seconds, "sessions": sessions}


def _merge(paths: list, out: Path, plots_too: bool = True) -> int:
    """Combine per-process result files of one size into ``out`` (rows keyed by config and seed; a later
    file wins a duplicate); ``seconds`` adds up the wall-clock of the parts."""
    parts = [read_json(Path(q)) for q in paths]
    sizes = {d["size"] for d in parts}
    if len(sizes) != 1:
        raise SystemExit(f"--merge: the files hold different sizes {sorted(sizes)}")
    rows = {}
    for d in parts:
        rows.update({row_key(r): r for r in d["rows"]})
    first = parts[0]
    data = _summary(first["size"], first["config"], first["dataset"], first["threads"], list(rows.values()),
                    sum(float(d.get("seconds", 0.0)) for d in parts), sum(int(d.get("sessions", 1)) for d in parts))
    data["merged_from"] = len(parts)
    write_json(out, data)
    md = markdown(data, command=f"python -m benchmarks.downstream --size {first['size']} --seeds "
                                f"{','.join(map(str, data['seeds']))}")
    atomic_write_text(out.with_suffix(".md"), md)
    print(md)
    if plots_too:
        for path in plots(data, out.parent):
            print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the quick size (same as --size quick)")
    p.add_argument("--size", default=None, choices=tuple(SIZES), help="grid size (default: full; --quick: quick)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; every row runs once per seed")
    p.add_argument("--out", default="results/downstream.json")
    p.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "mnist"))
    p.add_argument("--data-root", default=None)
    p.add_argument("--cache", default=".cache/downstream")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tasks", default="c4-generalisation,c4-breaking,t2-breaking")
    p.add_argument("--resume", action="store_true", help="keep finished rows of --out and run the rest")
    p.add_argument("--progress", action="store_true", help="tqdm bars per epoch")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--plots-only", action="store_true",
                   help="run nothing: redraw the figures next to --out from the rows already in it")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="run nothing: combine the rows of these result files (e.g. one process per seed, "
                        "same size) into --out, with its tables and figures")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.merge:
        return _merge(args.merge, Path(args.out), plots_too=not args.no_plots)
    if args.plots_only:
        out = Path(args.out)
        if not out.exists():
            p.error(f"--plots-only: {out} does not exist")
        for path in plots(read_json(out), out.parent):
            print(f"wrote {path}")
        return 0
    torch.set_num_threads(args.threads)
    size_name = args.size or ("quick" if args.quick else "full")
    size = SIZES[size_name]
    wanted = set(args.tasks.split(","))
    try:
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    except ValueError:
        p.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    if not seeds or min(seeds) < 0:
        p.error(f"--seeds: expected integers >= 0, got {args.seeds!r}")
    args.seed = seeds[0]
    rows = [{**r, "seed": sd} for sd in seeds for r in grid(size) if r["task"] in wanted]
    out = Path(args.out)
    done, prev_seconds, sessions = {}, 0.0, 1
    if args.resume and out.exists():
        prev = read_json(out)
        if prev.get("size") == size_name:
            done = {row_key(r): r for r in prev.get("rows", [])}
            prev_seconds, sessions = float(prev.get("seconds", 0.0)), int(prev.get("sessions", 1)) + 1
    caches = {sd: StudentCache(Path(args.cache), sd) for sd in seeds}
    tasks: dict = {}
    results, t_start = [], time.perf_counter()
    for i, r in enumerate(rows, 1):
        k = row_key(r)
        if k in done:
            results.append(done[k])
            continue
        res = run_row(r, size, tasks, caches[r["seed"]], args)
        results.append(res)
        acc = res["primary_accuracy"]
        beta = "" if res["beta"] is None else f" beta={res['beta']:g}"
        print(f"[{i}/{len(rows)}] seed {r['seed']} {r['task']:18s} {r['model']:15s} {r['mode']:8s}{beta:12s} n={res['n_train_actual']:5d} "
              f"acc {acc:.4f}  EE {res['invariance_error']:.2e}  drift {res['cloned_distance']:.3g}  "
              f"{res['train_seconds']:.1f}s", flush=True)
        write_json(out, _summary(size_name, size, args.dataset, args.threads, results, prev_seconds + time.perf_counter() - t_start,
                                 sessions))
    data = _summary(size_name, size, args.dataset, args.threads, results, prev_seconds + time.perf_counter() - t_start, sessions)
    write_json(out, data)
    md = markdown(data, command=f"python -m benchmarks.downstream --size {size_name} --seeds {args.seeds}")
    atomic_write_text(out.with_suffix(".md"), md)
    print(md)
    if not args.no_plots:
        for path in plots(data, out.parent):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
