"""Markdown table of the graph benchmarks (one row per model)."""
from __future__ import annotations

from typing import Iterable, Optional

__all__ = ["results_table"]

_LABEL = {"mlp": "bare MLP", "uniform": "MLP + uniform S_n", "canonical": "MLP + canonical",
          "learned": "MLP + learned (LPS)", "mp": "message passing (1-WL)"}


def _cell(r: Optional[dict], key: str, total: str = "", extra: Optional[str] = None) -> str:
    if r is None or key not in r:
        return "–"
    s = f"{r[key]:.1%}" if isinstance(r[key], float) else f"{r[key]}{total}"
    if extra and extra in r:
        s += f" ({r[extra]})"
    return s + f" [{r['seconds']:.0f} s, {r.get('seeds', r.get('epochs_run', ''))}]"


def results_table(exp: Iterable[dict] = (), g8c: Iterable[dict] = (), cls: Iterable[dict] = ()) -> str:
    """Rows: models; columns: EXP-iso, GRAPH8c, EXP-classify, each with [seconds, seeds/epochs].

    Examples
    --------
    >>> print(results_table(exp=[{"model": "mp", "not_separated": 600, "pairs": 600,
    ...                           "copies_separated": 0, "seconds": 3.0, "seeds": 100}]))
    ... # doctest: +NORMALIZE_WHITESPACE
    | model | EXP-iso not separated | EXP copies separated | GRAPH8c not separated | GRAPH8c copies separated | EXP-classify test acc (relabelled) |
    |---|---|---|---|---|---|
    | message passing (1-WL) | 600/600 [3 s, 100] | 0 | – | – | – |
    """
    exp, g8c, cls = ({r["model"]: r for r in t} for t in (exp, g8c, cls))
    names = [m for m in _LABEL if m in exp or m in g8c or m in cls]
    head = ("| model | EXP-iso not separated | EXP copies separated | GRAPH8c not separated | "
            "GRAPH8c copies separated | EXP-classify test acc (relabelled) |\n|---|---|---|---|---|---|")
    rows = [head]
    for m in names:
        e, g, c = exp.get(m), g8c.get(m), cls.get(m)
        e_ns = _cell(e, "not_separated", f"/{e.get('pairs', '?')}" if e else "")
        if e and "not_separated_in_distribution" in e:
            e_ns += f"; in distribution: {e['not_separated_in_distribution']}"
        e_cp = "–" if e is None else str(e["copies_separated"]) + (
            f"; in distribution: {e['copies_separated_in_distribution']}"
            if "copies_separated_in_distribution" in e else "")
        g_cp = "–" if g is None else str(g["copies_separated"])
        c_acc = _cell(c, "test_acc")
        if c and "test_acc_relabeled" in c:
            c_acc = c_acc.replace(" [", f" ({c['test_acc_relabeled']:.1%}) [", 1)
        rows.append(f"| {_LABEL[m]} | {e_ns} | {e_cp} | {_cell(g, 'not_separated')} | {g_cp} | {c_acc} |")
    return "\n".join(rows)
