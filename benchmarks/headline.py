"""The headline numbers in one command: n-body test MSE and EXP-classify test accuracy over seeds.

    python -m benchmarks.headline                          # 3 seeds of each, writes results/headline.json
    python -m benchmarks.headline --parts nbody --seeds 1  # one part / seed per process (to use more cores) ...
    python -m benchmarks.headline                          # ... then this assembles: finished seeds are reused

Both recipes are fixed here, before any test number is looked at (model selection on validation only):

* **n-body** (``NBODY_RECIPE``): the pair-feature particle transformer symmetrized over ``S_5 × O(3)`` with the
  uniform (Haar) sampler, with the levers the lever table of docs/results.md measured as helpful, trained
  for a budget in *epochs* (so a seed gives the same model on any machine); CPU minutes are measured and
  reported (``cpu_minutes``: the largest per-seed training time, the issue's budget is 30).
* **EXP-classify** (``EXP_RECIPE``): the learned-sampler S_n-symmetrized MLP of ``symclone.graphs``, model
  chosen by validation accuracy (ties: validation cross entropy).

Each seed is one result file under ``--work`` (``results/headline/``), written atomically when the seed
finishes, with resumable checkpoints while it runs; a later run reuses every finished seed whose recipe is
unchanged (``--fresh`` recomputes). The output also carries the lever tables: every
``results/nbody_levers/*.json`` (one n-body run per file: its flags, seed, epochs, CPU seconds, test and
validation MSE).
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

__all__ = ["NBODY_RECIPE", "EXP_RECIPE", "run_nbody_seed", "run_exp_seed", "lever_rows", "ensemble_test_mse",
           "assemble", "main"]

log = logging.getLogger(__name__)

#: ``python -m benchmarks.nbody`` arguments of the headline n-body model (seed and output added per seed)
NBODY_RECIPE: tuple[str, ...] = ("--models", "uniform", "--epochs", "600", "--center", "--velocity-step",
                                 "--charge-pairs", "--charge-flip", "--encounter", "--ema", "0.999")
#: keyword arguments of ``symclone.graphs.ClassifyConfig`` for the headline EXP-classify model (seed added)
EXP_RECIPE: dict[str, Any] = {"epochs": 20}
EXP_MODEL = "learned"
PUBLISHED = {"nbody": {"EGNN": 0.0071, "LPS": 0.0040, "SEGNN": 0.0043, "CGENN": 0.0039, "MVN": 0.0035},
             "exp_classify": {"LPS": 1.0}}


def _read(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.exists() else None


def run_nbody_seed(seed: int, work: Path, fresh: bool = False, recipe: Sequence[str] = NBODY_RECIPE,
                   extra: Sequence[str] = ()) -> dict:
    """Train and test the n-body recipe with ``seed``; returns the benchmark's row (+ ``seed``, ``recipe``).

    Reuses ``work/nbody/seed<seed>/nbody.json`` when it holds a finished row of the same recipe; otherwise
    runs ``benchmarks.nbody`` there with ``--resume`` (an interrupted seed continues from its checkpoint)."""
    from . import nbody
    folder = work / "nbody" / f"seed{seed}"
    out = folder / "nbody.json"
    full = [*recipe, *extra]
    argv = [*full, "--seed", str(seed), "--out", str(out), "--resume"]
    _claim(folder, {"recipe": full, "seed": seed}, fresh)
    done = _read(out)
    if done is not None and done.get("rows"):
        return done["rows"][0] | {"seed": seed, "recipe": full}
    nbody.main(argv)
    return json.loads(out.read_text())["rows"][0] | {"seed": seed, "recipe": full}


def _claim(folder: Path, recipe: dict, fresh: bool) -> None:
    """Make ``folder`` belong to ``recipe``: results and checkpoints of another recipe (or any, with ``fresh``)
    are removed before the run starts, so a resume never mixes two recipes."""
    import shutil

    from symclone.io import write_json
    stamp = folder / "recipe.json"
    if fresh or _read(stamp) != recipe:
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        write_json(stamp, recipe)


def run_exp_seed(seed: int, work: Path, fresh: bool = False, recipe: Optional[dict] = None) -> dict:
    """Train and test EXP-classify (``EXP_MODEL``, ``EXP_RECIPE``) with ``seed``; cached like the n-body seeds."""
    from symclone.graphs import ClassifyConfig, exp_classify
    from symclone.io import write_json
    recipe = dict(EXP_RECIPE if recipe is None else recipe)
    folder = work / "exp" / f"seed{seed}"
    out = folder / "result.json"
    _claim(folder, {"recipe": recipe, "model": EXP_MODEL, "seed": seed}, fresh)
    done = _read(out)
    if done is not None:
        return done
    res = exp_classify(EXP_MODEL, ClassifyConfig(seed=seed, **recipe), out=folder, resume=True, progress=False)
    res |= {"seed": seed, "recipe": recipe}
    write_json(out, res)
    return res


#: valued settings of a ``benchmarks.nbody`` run that a lever row lists when they differ from the parser's defaults
#: (with every on/off switch of ``benchmarks.nbody.PAIR_SWITCHES``)
LEVER_VALUES = ("dropout", "ema", "weight_decay", "k", "dim", "depth", "lr", "batch")


def lever_rows(folder: Path = Path("results/nbody_levers")) -> list[dict]:
    """One row per n-body lever run (``folder/*.json``): name, flags (the switches and ``LEVER_VALUES`` that differ from
    ``benchmarks.nbody``'s defaults: a switched-on option by name, a value as ``name=value``), seed, epochs,
    CPU s, test / valid MSE."""
    from . import nbody
    defaults = vars(nbody.build_parser().parse_args([]))
    rows = []
    for f in sorted(folder.glob("*.json")):
        d = json.loads(f.read_text())
        s = d["settings"]
        for r in d["rows"]:
            if "error" in r:
                continue
            changed = [k for k in (*nbody.PAIR_SWITCHES, *LEVER_VALUES) if k in s and s[k] != defaults[k]]
            flags = [k if s[k] is True else f"{k}={s[k]}" for k in changed]
            rows.append({"lever": f.stem, "model": r["model"], "flags": flags, "seed": s.get("seed", 0),
                         "epochs": r["epochs"], "train_cpu_s": r["train_cpu_s"], "test_mse": r["test_mse"],
                         "valid_mse": r["valid_mse"]})
    return rows


def ensemble_test_mse(work: Path, seeds: Sequence[int], recipe: Sequence[str] = NBODY_RECIPE) -> dict:
    """Test MSE of the finished n-body seeds alone and of the average of their predictions (an ensemble of
    ``len(seeds)`` models, i.e. ``len(seeds)`` times the per-seed budget), each at the recipe's test ``k`` with
    the best-validation weights of ``work/nbody/seed<s>/nbody_ckpt``."""
    import torch

    from symclone.data.nbody import nbody_tensors

    from . import nbody
    args = nbody.build_parser().parse_args([*recipe])
    args.k_test = min(args.k_test, 8) if args.quick else args.k_test
    x, y = nbody_tensors("test", size="small" if args.quick else "full")
    name = args.models.split(",")[0]
    preds = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = nbody.build(name, args)
        model.load_state_dict(nbody.best_weights(work / "nbody" / f"seed{seed}" / "nbody_ckpt" / name))
        model.k_eval = args.k_test
        torch.manual_seed(seed)
        preds.append(nbody.predict(model, x))
    mse = lambda p: float((p.double() - y.double()).pow(2).mean())
    return {"seeds": list(seeds), "single_test_mse": [mse(p) for p in preds],
            "ensemble_test_mse": mse(torch.stack(preds).mean(0)), "k_test": args.k_test}


def _summary(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def assemble(nbody_rows: list[dict], exp_rows: list[dict], levers: list[dict]) -> dict:
    """The ``results/headline.json`` document from the per-seed rows."""
    doc: dict = {"published": PUBLISHED}
    if nbody_rows:
        mse = [r["test_mse"] for r in nbody_rows]
        cpu = [r["train_cpu_s"] / 60.0 for r in nbody_rows]
        doc["nbody"] = {"test_mse": mse, "seeds": [r["seed"] for r in nbody_rows],
                        "cpu_minutes": max(cpu), "cpu_minutes_per_seed": cpu,
                        "valid_mse": [r["valid_mse"] for r in nbody_rows], "epochs": [r["epochs"] for r in nbody_rows],
                        "model": "PairTransformer symmetrized over S5 x O(3), " + " ".join(nbody_rows[0]["recipe"]),
                        "summary": _summary(mse), "goal": 0.0040, "met": all(m <= 0.0040 for m in mse),
                        "within_budget": max(cpu) <= 30.0}
    if exp_rows:
        acc = [r["test_acc"] for r in exp_rows]
        doc["exp_classify"] = {"test_accuracy": acc, "seeds": [r["seed"] for r in exp_rows],
                               "val_accuracy": [r["val_acc"] for r in exp_rows],
                               "best_epoch": [r["best_epoch"] for r in exp_rows],
                               "cpu_seconds": [r["seconds"] for r in exp_rows], "model": EXP_MODEL,
                               "recipe": exp_rows[0]["recipe"], "met": all(a >= 1.0 for a in acc)}
    doc["nbody_levers"] = levers
    return doc


def _table(doc: dict) -> str:
    lines = []
    if "nbody" in doc:
        n = doc["nbody"]
        lines.append("n-body test MSE per seed: " + ", ".join(f"{m:.5f}" for m in n["test_mse"])
                     + f"  (mean {n['summary']['mean']:.5f}; goal 0.0040; max {n['cpu_minutes']:.1f} CPU-min)")
    if "exp_classify" in doc:
        e = doc["exp_classify"]
        lines.append("EXP-classify test accuracy per seed: " + ", ".join(f"{a:.3f}" for a in e["test_accuracy"]))
    if doc.get("nbody_levers"):
        lines.append(f"{'lever':24s} {'seed':>4s} {'epochs':>6s} {'CPU s':>7s} {'valid MSE':>9s} {'test MSE':>9s}")
        for r in doc["nbody_levers"]:
            lines.append(f"{r['lever']:24s} {r['seed']:4d} {r['epochs']:6d} {r['train_cpu_s']:7.0f} "
                         f"{r['valid_mse']:9.5f} {r['test_mse']:9.5f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.headline``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.headline", description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="nbody,exp", help="comma list of nbody, exp")
    p.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
    p.add_argument("--work", default="results/headline", help="per-seed results and checkpoints")
    p.add_argument("--levers", default="results/nbody_levers", help="folder of n-body lever runs")
    p.add_argument("--out", default="results/headline.json")
    p.add_argument("--fresh", action="store_true", help="recompute seeds that have results")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ensemble", action="store_true",
                   help="also score the average of the n-body seeds' predictions (len(seeds) x the budget)")
    return p


def main(argv: Optional[Sequence[str]] = None, runners: Optional[dict[str, Callable]] = None) -> int:
    import torch

    from symclone.io import write_json
    p = build_parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s != ""]
    except ValueError:
        p.error(f"--seeds: expected a comma list of integers, got {args.seeds!r}")
    parts = [s for s in args.parts.split(",") if s]
    for part in parts:
        if part not in ("nbody", "exp"):
            p.error(f"--parts: unknown part {part!r}; expected some of nbody, exp")
    torch.set_num_threads(args.threads)
    runners = runners or {"nbody": run_nbody_seed, "exp": run_exp_seed}
    work = Path(args.work)
    rows: dict[str, list[dict]] = {"nbody": [], "exp": []}
    for part in ("nbody", "exp"):
        for seed in seeds:
            if part in parts:
                rows[part].append(runners[part](seed, work, fresh=args.fresh))
    doc = assemble(rows["nbody"], rows["exp"], lever_rows(Path(args.levers)))
    doc["seeds"] = seeds
    if args.ensemble and rows["nbody"]:
        doc["nbody"]["ensemble"] = ensemble_test_mse(work, seeds)
    write_json(Path(args.out), doc)
    print(_table(doc))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
