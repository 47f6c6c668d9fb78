"""Markdown tables and plots of the downstream grid (``benchmarks.downstream``).

The figures use matplotlib's object API (``Figure`` + the Agg canvas, no pyplot state); they can be
rebuilt from an existing ``results/downstream.json`` with ``python -m benchmarks.downstream --plots-only``.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["aggregate", "config_key", "markdown", "plots", "beta_figure", "samples_figure"]

#: metrics averaged over seeds (``<m>`` = mean, ``<m>_sd`` = sample sd, ``<m>_values`` = per seed)
METRICS = ("primary_accuracy", "accuracy_mod10", "invariance_error", "cloned_distance", "train_seconds",
           "build_seconds", "final_ce")

_LABEL = {"mlp": "MLP baseline", "cnn": "CNN baseline", "equivariant": "equivariant (GCNN / T2-CNN) from scratch",
          "cloned-blocks": "cloned blocks net", "cloned-mlp": "cloned MLP", "cloned-mlp-sym": "Symmetrized cloned MLP"}


def config_key(r: dict) -> tuple:
    """What identifies a row apart from its seed (rows with equal keys are averaged over seeds)."""
    return tuple(r.get(k) for k in ("task", "model", "mode", "beta", "anchor", "n_train", "fields", "sweep"))


def aggregate(rows: list) -> list:
    """One entry per row configuration: the first seed's record with every metric of :data:`METRICS`
    replaced by its mean over seeds, plus ``<m>_sd`` (sample standard deviation, ``ddof = 1``; 0 for
    one seed), ``<m>_values`` (per seed, in ``seeds`` order), ``seeds`` and ``n_seeds``; the accuracy of
    every test split is averaged the same way (``accuracy``, ``accuracy_sd``).

    >>> rows = [dict(task="t", model="m", mode="free", beta=None, anchor=None, n_train=8, fields=1,
    ...              sweep="main", seed=s, primary_accuracy=a, accuracy={"test": a}) for s, a in ((0, .5), (1, .7))]
    >>> r = aggregate(rows)[0]
    >>> round(r["primary_accuracy"], 6), round(r["primary_accuracy_sd"], 6), r["primary_accuracy_values"], r["seeds"]
    (0.6, 0.141421, [0.5, 0.7], [0, 1])
    """
    import statistics

    groups: dict = {}
    for r in rows:
        groups.setdefault(config_key(r), []).append(r)
    out = []
    for grp in groups.values():
        grp = sorted(grp, key=lambda r: r.get("seed", 0))
        rec = {k: v for k, v in grp[0].items() if k != "seed"}
        rec["seeds"] = [r.get("seed", 0) for r in grp]
        rec["n_seeds"] = len(grp)
        for m in METRICS:
            vals = [r[m] for r in grp if r.get(m) is not None]
            if not vals:
                continue
            rec[m] = statistics.fmean(vals)
            rec[f"{m}_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
            rec[f"{m}_values"] = vals
        if all(isinstance(r.get("accuracy"), dict) for r in grp):
            splits = grp[0]["accuracy"]
            rec["accuracy"] = {k: statistics.fmean(r["accuracy"][k] for r in grp) for k in splits}
            rec["accuracy_sd"] = {k: (statistics.stdev(r["accuracy"][k] for r in grp) if len(grp) > 1 else 0.0)
                                  for k in splits}
        out.append(rec)
    return out


def _pm(r: dict, m: str, fmt: str = ".3f") -> str:
    """``mean ± sd`` of metric ``m`` (just the value for one seed or an old single-seed record)."""
    v = r.get(m)
    if v is None:
        return "-"
    sd = r.get(f"{m}_sd")
    return f"{v:{fmt}} ± {sd:{fmt}}" if sd is not None and r.get("n_seeds", 1) > 1 else f"{v:{fmt}}"


def _fmt_res(v) -> str:
    if not v:
        return "-"
    return "/".join(f"{x:.1e}" for x in v)


def _mode(r) -> str:
    if r["mode"] != "anchored":
        return r["mode"]
    return f"anchored {r['anchor']} β={r['beta']:g}"


def _summary_rows(data: dict) -> list:
    return data.get("summary") or aggregate(data["rows"])


def markdown(data: dict, command: str) -> str:
    """The tables of the grid (mean ± sd over seeds), with the command that produced them."""
    per_seed = data["rows"]
    rows = _summary_rows(data)
    train = sum(r["train_seconds"] for r in per_seed) / 60
    build = sum(r.get("build_seconds", 0.0) for r in per_seed) / 60
    seeds = data.get("seeds") or sorted({r.get("seed", 0) for r in per_seed})
    wall = (f"; wall-clock {data['seconds'] / 60:.1f} min over {data['sessions']} session(s)"
            if "sessions" in data else "")  # older files: "seconds" counted only the last resumed session
    lines = [f"Size `{data['size']}`, seeds {', '.join(map(str, seeds))} (accuracy: mean ± sample sd over the "
             f"seeds; per-seed values in the JSON) ({data['dataset']}, {data['threads']} torch thread(s); training "
             f"{train:.1f} min + model building/cloning {build:.1f} min summed over rows{wall}). "
             f"Command: `{command}`.", ""]
    for task in dict.fromkeys(r["task"] for r in rows):
        main = [r for r in rows if r["task"] == task and r["sweep"] == "main"]
        if not main:
            continue
        r0 = main[0]
        extra = " / upright" if task == "c4-generalisation" else ""
        ceil = (f"; an invariant model reaches at most half its 10-class accuracy, <= "
                f"{r0['invariant_ceiling']:.0%}") if r0["invariant_ceiling"] else ""
        mod10 = any(r.get("accuracy_mod10") is not None for r in main)
        if mod10:
            ceil += "; `mod 10` = accuracy on label % 10 in the same run, twice that model's invariant ceiling"
        lines += [f"**{task}** (n_train {r0['n_train_actual']}, {r0['epochs']} epochs{ceil})", "",
                  f"| model | mode | test acc ({r0['primary']}{extra}) | " + ("acc mod 10 | " if mod10 else "") +
                  "invariance error | δ_G before → after | drift ‖W−W0‖/‖W0‖ | params (trainable) | train s |",
                  "|---|---|---|" + ("---|" if mod10 else "") + "---|---|---|---|---|"]
        for r in main:
            acc = _pm(r, "primary_accuracy")
            if task == "c4-generalisation":
                acc += f" / {r['accuracy']['upright']:.3f}"
            if mod10:
                acc += " | " + _pm(r, "accuracy_mod10")
            res = f"{_fmt_res(r['structure_residual_before'])} → {_fmt_res(r['structure_residual_after'])}"
            drift = f"{r['cloned_distance']:.3g}" if r["model"].startswith("cloned") else "-"
            lines.append(f"| {_LABEL.get(r['model'], r['model'])} | {_mode(r)} | {acc} | {_pm(r, 'invariance_error', '.1e')} | "
                         f"{res} | {drift} | {r['n_params']:,} ({r['n_trainable']:,}) | {r['train_seconds']:.0f} |")
        lines.append("")
    samples = [r for r in rows if r["task"] == "c4-generalisation" and
               (r["sweep"] == "samples" or (r["model"], r["mode"]) in _SAMPLE_MODELS)]
    if any(r["sweep"] == "samples" for r in samples):
        ns = sorted({r["n_train_actual"] for r in samples})
        lines += ["**Sample complexity** (c4-generalisation, rotated test accuracy)", "",
                  "| model | " + " | ".join(f"n={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
        for model, mode in _SAMPLE_MODELS:
            vals = {r["n_train_actual"]: r for r in samples if r["model"] == model and r["mode"] == mode}
            lines.append(f"| {_LABEL[model]} ({mode}) | " + " | ".join(
                _pm(vals[n], "primary_accuracy") if n in vals else "-" for n in ns) + " |")
        lines.append("")
    return "\n".join(lines)


_SAMPLE_MODELS = (("mlp", "free"), ("cnn", "free"), ("equivariant", "free"), ("cloned-blocks", "frozen"))


def _save(fig, path: Path) -> Path:
    """``fig`` as a PNG at ``path``, written atomically (a temporary file, then a rename)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from symclone.io import atomic_write_bytes

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _sweeps(rows: list, task: str) -> dict:
    """Anchored rows of the main grid of ``task`` by series (model, anchor), sorted by beta."""
    out: dict = {}
    for r in rows:
        if r["task"] == task and r["sweep"] == "main" and r["mode"] == "anchored" and r["beta"] is not None:
            out.setdefault((r["model"], r.get("anchor") or "l2"), []).append(r)
    return {k: sorted(v, key=lambda r: r["beta"]) for k, v in out.items()}


def _beta_axis(ax, betas: list) -> None:
    """Log β axis when the betas span decades, linear otherwise; ticks at the betas present."""
    from symclone.analysis.plots import value_scale

    ax.set_xscale(value_scale(betas))
    ax.set_xticks(betas)
    ax.set_xticklabels([f"{b:g}" for b in betas])
    ax.minorticks_off()
    if len(betas) == 1:
        ax.set_xlim(betas[0] * 0.5, betas[0] * 1.5)


def beta_figure(data: dict):
    """Accuracy (top) and invariance error of the logits (bottom) against the anchor strength β,
    one column per task with anchored rows: every β present, one series per (model, anchor), the
    non-anchored cloned-blocks rows and the ceilings as horizontal references, legend below each
    column. The invariance-error axis is log only when its values span a decade or more.

    Returns
    -------
    ``matplotlib.figure.Figure`` (not written); ``None`` when no task has an anchored row.
    """
    from matplotlib.figure import Figure

    from symclone.analysis.plots import value_scale

    rows = _summary_rows(data)
    tasks = [t for t in dict.fromkeys(r["task"] for r in rows) if _sweeps(rows, t)]
    if not tasks:
        return None
    fig = Figure(figsize=(4.6 * len(tasks), 7.4), layout="constrained")
    axes = fig.subplots(2, len(tasks), squeeze=False, sharex="col")
    for j, task in enumerate(tasks):
        ax, ax2 = axes[0][j], axes[1][j]
        sweeps = _sweeps(rows, task)
        betas = sorted({r["beta"] for sw in sweeps.values() for r in sw})
        for i, ((model, anchor), sw) in enumerate(sweeps.items()):
            label = f"{_LABEL.get(model, model)}, anchored ({anchor})"
            b = [r["beta"] for r in sw]
            ax.errorbar(b, [r["primary_accuracy"] for r in sw], yerr=[r.get("primary_accuracy_sd", 0.0) for r in sw],
                        fmt="o-", color=f"C{i}", capsize=3, label=label)
            for r in sw:   # every seed, so the spread behind each error bar is visible
                vals = r.get("primary_accuracy_values") or []
                ax.plot([r["beta"]] * len(vals), vals, ".", color=f"C{i}", alpha=0.35, ms=4)
            ax2.errorbar(b, [r["invariance_error"] for r in sw], yerr=[r.get("invariance_error_sd", 0.0) for r in sw],
                         fmt="s--", color=f"C{i}", capsize=3)
        for r in rows:
            if r["task"] == task and r["model"] == "cloned-blocks" and r["sweep"] == "main" and r["mode"] != "anchored":
                style = {"frozen": "--", "head-only": "-."}.get(r["mode"], ":")
                ax.axhline(r["primary_accuracy"], ls=style, color="k", lw=1,
                           label=f"{_LABEL['cloned-blocks']}, {r['mode']} ({_pm(r, 'primary_accuracy')})")
                if r["mode"] == "frozen" and r.get("accuracy_mod10") is not None:
                    ax.axhline(r["accuracy_mod10"] / 2, color="C2", lw=0.8,
                               label="frozen: (acc on label % 10) / 2, measured ceiling")
        ceil = next((r["invariant_ceiling"] for sw in sweeps.values() for r in sw if r.get("invariant_ceiling")), None)
        if ceil:
            ax.axhline(ceil, color="gray", lw=0.8, label="invariant ceiling (perfect 10-class)")
        inv = [r["invariance_error"] for sw in sweeps.values() for r in sw]
        ax2.set_yscale(value_scale(inv))
        _beta_axis(ax2, betas)
        ax.tick_params(labelbottom=True)
        ax.set_ylabel(f"test accuracy ({sweeps[next(iter(sweeps))][0]['primary']})")
        ax.set_title(task + (f" (single β = {betas[0]:g}: no sweep)" if len(betas) == 1 else ""), fontsize=10)
        ax2.set_xlabel("β (anchor strength)")
        ax2.set_ylabel("invariance error of logits")
        handles, labels = ax.get_legend_handles_labels()
        ax2.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=1,
                   frameon=False, title="(bottom row: same colours, squares)", title_fontsize=7)
    return fig


def samples_figure(data: dict):
    """Rotated test accuracy against training-set size (c4-generalisation), one line per model;
    ``None`` without a sample sweep."""
    from matplotlib.figure import Figure

    from symclone.analysis.plots import value_scale

    samples = [r for r in _summary_rows(data) if r["task"] == "c4-generalisation"]
    if not any(r["sweep"] == "samples" for r in samples):
        return None
    fig = Figure(figsize=(6.0, 4.4), layout="constrained")
    ax = fig.subplots()
    ns = set()
    for model, mode in _SAMPLE_MODELS:
        pts = sorted((r["n_train_actual"], r["primary_accuracy"], r.get("primary_accuracy_sd", 0.0)) for r in samples
                     if r["model"] == model and r["mode"] == mode and r["beta"] is None)
        if pts:
            ns.update(n for n, _, _ in pts)
            n_, m_, sd_ = zip(*pts)
            ax.errorbar(n_, m_, yerr=sd_, fmt="o-", capsize=3, label=f"{_LABEL[model]} ({mode})")
    ns = sorted(ns)
    ax.set_xscale(value_scale(ns))
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("training examples")
    ax.set_ylabel("rotated test accuracy (mean ± sd over seeds)")
    ax.set_title("c4-generalisation: sample complexity")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    return fig


def plots(data: dict, folder: Path) -> list[Path]:
    """Write ``downstream_beta.png`` (:func:`beta_figure`) and ``downstream_samples.png``
    (:func:`samples_figure`) under ``folder``; return the paths written."""
    out = []
    for name, build in (("downstream_beta.png", beta_figure), ("downstream_samples.png", samples_figure)):
        fig = build(data)
        if fig is not None:
            out.append(_save(fig, Path(folder) / name))
    return out
