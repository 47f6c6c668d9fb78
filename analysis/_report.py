"""``report.md`` of a clone run: configuration, a metrics table and the figures.

Examples
--------
>>> md = render_report("demo", {"teacher": {"name": "cnn"}}, {"layers": []},
...                    {"layers": [{"layer": 1, "residual": {"t2": 1e-9}}]}, {})
>>> "| 1 |" in md and "δ t2" in md
True
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

__all__ = ["render_report", "fmt"]

_CAPTIONS = {
    "matrix": "Learned dense matrix beside the teacher's unrolled (Toeplitz) matrix and |W − W_T|; bottom: "
              "the same window of each (box), where the teacher's matrix (on the data support) is largest. "
              "A cloned convolution shows the same banded diagonals.",
    "blocks": "Learned blocks W_b, each zoomed where it is largest: each should be a combination of shift matrices.",
    "kernels": "Filters recovered from the learned matrix (mean along each diagonal) vs the teacher's.",
    "features": "Feature maps for an input and its transforms (C4: max over the 4 orientations of field 0). "
                "An equivariant model's maps move with the input.",
    "curves": "Loss and equivariance error vs step for trained layers; final relative error and final "
              "equivariance error per layer as bars (closed-form layers have no curve).",
}


def fmt(v: Any) -> str:
    """Short number formatting for tables (``-`` for missing).

    Examples
    --------
    >>> fmt(1.23456e-7), fmt(0.5), fmt(None), fmt(3)
    ('1.23e-07', '0.500', '-', '3')
    """
    if v is None:
        return "-"
    if isinstance(v, (bool, int)) or not isinstance(v, float):
        return str(v)
    if not math.isfinite(v):
        return str(v)
    return f"{v:.3f}" if 1e-2 <= abs(v) < 1e3 else f"{v:.2e}"


def _get(d: Mapping, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


def _ee(entry: Mapping | None, who: str) -> Any:
    v = _get(entry or {}, "equivariance_error", who)
    if isinstance(v, Mapping):  # per group: report the largest
        vals = [x for x in v.values() if isinstance(x, (int, float))]
        return max(vals) if vals else None
    return v


def _lie_line(s: Mapping) -> str:
    """One bullet: the layer's Lie derivatives with the method used, and any that were not computed.

    Examples
    --------
    >>> line = _lie_line({"layer": 1, "lie_derivative": {"student": 0.25}, "lie_derivative_method": {"student": "jvp"},
    ...                   "lie_derivative_skipped": {"x": "ValueError: no"}})
    >>> line.split(": ", 1)[1]
    'student 0.250 [jvp]; not computed: x (ValueError: no)'
    """
    methods, regions = s.get("lie_derivative_method") or {}, s.get("lie_derivative_region") or {}
    parts = []
    for k, v in (s.get("lie_derivative") or {}).items():
        how = ", ".join(m for m in (methods.get(k), regions.get(k) if regions.get(k) != "full" else None) if m)
        parts.append(f"{k} {fmt(v)}" + (f" [{how}]" if how else ""))
    gen = s.get("lie_derivative_generator", "translation_x")
    text = f"- layer {s['layer']} Lie derivative ‖L f‖/‖f‖ ({gen}, pre-activation): " + ", ".join(parts)
    skipped = s.get("lie_derivative_skipped") or {}
    if skipped:
        text += ("; " if parts else "") + "not computed: " + ", ".join(f"{k} ({v})" for k, v in skipped.items())
    return text


def render_report(name: str, config: Mapping, metrics: Mapping, structure: Mapping,
                  figures: Mapping[str, str], base: Path | None = None) -> str:
    """Markdown text of the report (figure paths made relative to ``base``)."""
    lines = [f"# symclone analysis: {name}", ""]
    for key in ("teacher", "student"):
        if key in config:
            lines.append(f"- **{key}**: `{json.dumps(config[key], default=str)}`")
    for key in ("mode", "layers"):
        if key in config:
            lines.append(f"- **{key}**: `{config[key]}`")
    lines += ["", "## Metrics", "",
              "δ_G = ‖W − R_G(W)‖/‖W‖ (Reynolds projection; 0 = exactly equivariant, ≈√(1−1/|G|) for random W). "
              "Kernel metrics compare the filter recovered from the learned matrix with the teacher's. "
              "Footprint energy = share of ‖W‖² on the k×k diagonals; 1/IPR ≈ weights used per row. "
              "'support' = the same on input pixels that are ever non-zero in the data.", ""]
    head = ["layer", "feature rel. err", "EE teacher", "EE student", "EE untrained", "‖W−W_T‖/‖W_T‖",
            "δ t2", "δ c4", "δ p4", "kernel cos", "kernel rel. err", "footprint energy", "1/IPR (teacher)",
            "C4 orient. err", "δ t2 (support)", "kernel rel. err (support)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_layer = {e.get("layer"): e for e in metrics.get("layers", []) or []}
    for s in structure.get("layers", []):
        l = s["layer"]
        m = by_layer.get(l, {})
        t = s.get("toeplitz", {})
        inv = (1 / t["ipr"]) if t.get("ipr") else None
        tinv = (1 / t["teacher_ipr"]) if t.get("teacher_ipr") else None
        row = [l, m.get("feature_rel_error"), _ee(m, "teacher"), _ee(m, "student"), _ee(m, "untrained"),
               s.get("matrix_rel_error_vs_teacher"), _get(s, "residual", "t2"), _get(s, "residual", "c4"),
               _get(s, "residual", "p4"), t.get("kernel_cosine"), t.get("kernel_rel_error"),
               t.get("footprint_energy"), f"{fmt(inv)} ({fmt(tinv)})" if inv else None,
               _get(s, "orientation_agreement", "rel_error"), _get(t, "support", "residual"),
               _get(t, "support", "kernel_rel_error")]
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    notes = [f"- layer {s['layer']}: {s['note']}" for s in structure.get("layers", []) if s.get("note")]
    lie = [_lie_line(s) for s in structure.get("layers", [])
           if s.get("lie_derivative") or s.get("lie_derivative_skipped")]
    if notes or lie:
        lines += [""] + notes + lie
    if structure.get("support_source"):
        lines += ["", f"Data support from `{structure['support_source']}` "
                      f"({fmt(structure.get('support_fraction'))} of the input pixels)."]
    if figures:
        lines += ["", "## Figures", ""]
        for fig, path in figures.items():
            rel = Path(path)
            if base is not None:
                try:
                    rel = rel.relative_to(base)
                except ValueError:
                    pass
            cap = next((c for k, c in _CAPTIONS.items() if fig.startswith(k)), "")
            lines += [f"### {fig}", "", f"![{fig}]({rel.as_posix()})", "", cap, ""]
    return "\n".join(lines).rstrip() + "\n"
