"""Markdown tables and plots of the downstream grid (``benchmarks.downstream``)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["markdown", "plots"]

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

    from symclone.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(path, buf.getvalue())
    return path


def plots(data: dict, folder: Path) -> list[Path]:
    """Accuracy vs beta (invariance error on a second axis) per task; sample-complexity curves."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, out = data["rows"], []
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        sw = sorted([r for r in rows if r["task"] == task and r["model"] == "cloned-blocks" and
                     r["mode"] == "anchored" and r["anchor"] == "l2" and r["sweep"] == "main"], key=lambda r: r["beta"])
        if not sw:
            continue
        b = [r["beta"] for r in sw]
        ax.semilogx(b, [r["primary_accuracy"] for r in sw], "o-", color="C0", label="anchored (l2)")
        for r in rows:
            if r["task"] == task and r["model"] == "cloned-blocks" and r["sweep"] == "main" and r["mode"] != "anchored":
                ax.axhline(r["primary_accuracy"], ls="--" if r["mode"] == "frozen" else ":", color="C0",
                           label=f"{r['mode']}")
                if r["mode"] == "frozen" and r.get("accuracy_mod10") is not None:
                    ax.axhline(r["accuracy_mod10"] / 2, color="C2", lw=0.8,
                               label="frozen: (acc on label % 10) / 2, measured ceiling")
        ceil = sw[0]["invariant_ceiling"]
        if ceil:
            ax.axhline(ceil, color="gray", lw=0.8, label="invariant ceiling (perfect 10-class)")
        ax.set_xlabel("β (anchor strength)")
        ax.set_ylabel("test accuracy", color="C0")
        ax.set_title(task)
        ax2 = ax.twinx()
        ax2.loglog(b, [max(r["invariance_error"], 1e-9) for r in sw], "s--", color="C3")
        ax2.set_ylabel("invariance error of logits", color="C3")
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path = _save(fig, folder / "downstream_beta.png")
    plt.close(fig)
    out.append(path)
    samples = [r for r in rows if r["task"] == "c4-generalisation"]
    if any(r["sweep"] == "samples" for r in samples):
        fig, ax = plt.subplots(figsize=(5, 3.8))
        for model, mode in _SAMPLE_MODELS:
            pts = sorted((r["n_train_actual"], r["primary_accuracy"]) for r in samples
                         if r["model"] == model and r["mode"] == mode and r["beta"] is None)
            if pts:
                ax.semilogx(*zip(*pts), "o-", label=f"{_LABEL[model]} ({mode})")
        ax.set_xlabel("training examples")
        ax.set_ylabel("rotated test accuracy")
        ax.set_title("c4-generalisation: sample complexity")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = _save(fig, folder / "downstream_samples.png")
        plt.close(fig)
        out.append(path)
    return out
