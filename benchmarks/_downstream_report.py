"""Markdown tables and plots of the downstream grid (``benchmarks.downstream``).

The figures use matplotlib's object API (``Figure`` + the Agg canvas, no pyplot state); they can be
rebuilt from an existing ``results/downstream.json`` with ``python -m benchmarks.downstream --plots-only``.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["markdown", "plots", "beta_figure", "samples_figure"]

_LABEL = {"mlp": "MLP baseline", "cnn": "CNN baseline", "equivariant": "equivariant (GCNN / T2-CNN) from scratch",
          "cloned-blocks": "cloned blocks net", "cloned-mlp": "cloned MLP", "cloned-mlp-sym": "Symmetrized cloned MLP"}


def _fmt_res(v) -> str:
    if not v:
        return "-"
    return "/".join(f"{x:.1e}" for x in v)


def _mode(r) -> str:
    if r["mode"] != "anchored":
        return r["mode"]
    return f"anchored {r['anchor']} β={r['beta']:g}"


def markdown(data: dict, command: str) -> str:
    rows = data["rows"]
    train = sum(r["train_seconds"] for r in rows) / 60
    build = sum(r.get("build_seconds", 0.0) for r in rows) / 60
    wall = (f"; wall-clock {data['seconds'] / 60:.1f} min over {data['sessions']} session(s)"
            if "sessions" in data else "")  # older files: "seconds" counted only the last resumed session
    lines = [f"Size `{data['size']}` ({data['dataset']}, {data['threads']} torch thread(s); training "
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
            acc = f"{r['primary_accuracy']:.3f}"
            if task == "c4-generalisation":
                acc += f" / {r['accuracy']['upright']:.3f}"
            if mod10:
                m = r.get("accuracy_mod10")
                acc += " | " + (f"{m:.3f}" if m is not None else "-")
            res = f"{_fmt_res(r['structure_residual_before'])} → {_fmt_res(r['structure_residual_after'])}"
            drift = f"{r['cloned_distance']:.3g}" if r["model"].startswith("cloned") else "-"
            lines.append(f"| {_LABEL.get(r['model'], r['model'])} | {_mode(r)} | {acc} | {r['invariance_error']:.1e} | "
                         f"{res} | {drift} | {r['n_params']:,} ({r['n_trainable']:,}) | {r['train_seconds']:.0f} |")
        lines.append("")
    samples = [r for r in rows if r["task"] == "c4-generalisation" and
               (r["sweep"] == "samples" or (r["model"], r["mode"]) in _SAMPLE_MODELS)]
    if any(r["sweep"] == "samples" for r in samples):
        ns = sorted({r["n_train_actual"] for r in samples})
        lines += ["**Sample complexity** (c4-generalisation, rotated test accuracy)", "",
                  "| model | " + " | ".join(f"n={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
        for model, mode in _SAMPLE_MODELS:
            vals = {r["n_train_actual"]: r["primary_accuracy"] for r in samples
                    if r["model"] == model and r["mode"] == mode}
            lines.append(f"| {_LABEL[model]} ({mode}) | " + " | ".join(
                f"{vals[n]:.3f}" if n in vals else "-" for n in ns) + " |")
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

    rows = data["rows"]
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
            ax.plot(b, [r["primary_accuracy"] for r in sw], "o-", color=f"C{i}", label=label)
            ax2.plot(b, [r["invariance_error"] for r in sw], "s--", color=f"C{i}")
        for r in rows:
            if r["task"] == task and r["model"] == "cloned-blocks" and r["sweep"] == "main" and r["mode"] != "anchored":
                ax.axhline(r["primary_accuracy"], ls="--" if r["mode"] == "frozen" else ":", color="k", lw=1,
                           label=f"{_LABEL['cloned-blocks']}, {r['mode']}")
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

    samples = [r for r in data["rows"] if r["task"] == "c4-generalisation"]
    if not any(r["sweep"] == "samples" for r in samples):
        return None
    fig = Figure(figsize=(6.0, 4.4), layout="constrained")
    ax = fig.subplots()
    ns = set()
    for model, mode in _SAMPLE_MODELS:
        pts = sorted((r["n_train_actual"], r["primary_accuracy"]) for r in samples
                     if r["model"] == model and r["mode"] == mode and r["beta"] is None)
        if pts:
            ns.update(n for n, _ in pts)
            ax.plot(*zip(*pts), "o-", label=f"{_LABEL[model]} ({mode})")
    ns = sorted(ns)
    ax.set_xscale(value_scale(ns))
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("training examples")
    ax.set_ylabel("rotated test accuracy")
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
