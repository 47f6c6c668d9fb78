"""PATTERN over several models and seeds: ``run_pattern`` (the ``symclone graphs pattern`` command's
work, writing ``pattern.json`` after every run) and its Markdown table."""
from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..config import to_dict
from ..io import write_json
from ..validation import check_choice, check_int
from ._pattern import PatternRecipe
from ._pattern_train import _LABEL, PATTERN_MODELS, PatternConfig, _load_splits, train_pattern

__all__ = ["run_pattern", "pattern_table"]


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    return float(statistics.fmean(values)), float(statistics.stdev(values)) if len(values) > 1 else 0.0


def run_pattern(models: Sequence[str], seeds: int, config: PatternConfig = PatternConfig(),
                out: Optional[str | Path] = None, resume: bool = False,
                callback: Optional[Callable[[dict], None]] = None, recipe: PatternRecipe = PatternRecipe()) -> dict:
    """Train every model with training seeds ``0 … seeds − 1`` on one dataset; write ``<out>/pattern.json``.

    The dataset (``config.data_seed``) is the same for every run; ``config.seed`` is replaced by each
    training seed.

    The record: ``{"protocol": "pattern", "test_accuracy": {model: [per seed]}, "val_accuracy": {...},
    "cpu_minutes": {...}, "summary": {model: {"test_mean", "test_sd", "val_mean", "val_sd",
    "cpu_minutes_mean"}}, "model": {model: {"label", "parameters", "averaging"}}, "config", "recipe",
    "runs"}`` (``sd``: sample standard deviation over seeds, 0 for one seed). It is rewritten
    atomically after every run, so an interrupted run leaves the finished ones; ``resume`` skips
    finished (model, seed) runs and continues unfinished ones from their checkpoints.
    ``callback`` receives each run's record (the CLI prints it).
    """
    models = list(models)
    if not models:
        raise ValueError(f"models: expected a non-empty subset of {PATTERN_MODELS}")
    for m in models:
        check_choice(m, "models", PATTERN_MODELS)
    check_int(seeds, "seeds", minimum=1)
    data = _load_splits(config, recipe)
    record: dict = {"protocol": "pattern", "test_accuracy": {}, "val_accuracy": {}, "cpu_minutes": {},
                    "summary": {}, "model": {}, "config": to_dict(config), "recipe": to_dict(recipe), "runs": []}
    for m in models:
        for seed in range(seeds):
            r = train_pattern(m, replace(config, seed=seed), out, resume, data, recipe)
            record["runs"].append({k: v for k, v in r.items() if k != "history"})
            record["test_accuracy"].setdefault(m, []).append(r["test_accuracy"])
            record["val_accuracy"].setdefault(m, []).append(r["val_accuracy"])
            record["cpu_minutes"].setdefault(m, []).append(round(r["cpu_seconds"] / 60, 3))
            record["model"][m] = {"label": _LABEL[m], "parameters": r["parameters"], "averaging": r["averaging"]}
            t_mean, t_sd = _mean_sd(record["test_accuracy"][m])
            v_mean, v_sd = _mean_sd(record["val_accuracy"][m])
            record["summary"][m] = {"test_mean": t_mean, "test_sd": t_sd, "val_mean": v_mean, "val_sd": v_sd,
                                    "cpu_minutes_mean": _mean_sd(record["cpu_minutes"][m])[0]}
            if out is not None:
                write_json(Path(out) / "pattern.json", record)
            if callback is not None:
                callback(record["runs"][-1])
    return record


def pattern_table(record: dict) -> str:
    """Markdown table of a :func:`run_pattern` record: test / val accuracy (mean ± sd over seeds), CPU minutes.

    Examples
    --------
    >>> print(pattern_table({"summary": {"mp": {"test_mean": 0.85, "test_sd": 0.01, "val_mean": 0.86,
    ...     "val_sd": 0.0, "cpu_minutes_mean": 3.0}}, "test_accuracy": {"mp": [0.84, 0.86]},
    ...     "model": {"mp": {"parameters": 1000}}}))
    | model | test weighted acc | val weighted acc | seeds | parameters | CPU min / run |
    |---|---|---|---|---|---|
    | message passing (1-WL) | 85.00 ± 1.00 % | 86.00 ± 0.00 % | 2 | 1000 | 3.0 |
    """
    rows = ["| model | test weighted acc | val weighted acc | seeds | parameters | CPU min / run |",
            "|---|---|---|---|---|---|"]
    for m, s in record["summary"].items():
        rows.append(f"| {_LABEL.get(m, m)} | {100 * s['test_mean']:.2f} ± {100 * s['test_sd']:.2f} % | "
                    f"{100 * s['val_mean']:.2f} ± {100 * s['val_sd']:.2f} % | {len(record['test_accuracy'][m])} | "
                    f"{record['model'][m]['parameters']} | {s['cpu_minutes_mean']:.1f} |")
    return "\n".join(rows)
