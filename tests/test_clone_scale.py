"""The cloning-scale benchmark: the exponent fit, and its quick mode end to end (JSON and table
from the same run, every row accurate)."""
import json
import math

import pytest

from benchmarks.clone_scale import fit_exponent, main


def test_fit_exponent_recovers_power_laws():
    sides = [20, 28, 40, 56]
    assert fit_exponent(sides, [2.5 * s ** 4 for s in sides]) == pytest.approx(4.0)
    assert fit_exponent(sides, [s ** 2.3 * (1 + 0.01 * (-1) ** i) for i, s in enumerate(sides)]) == \
        pytest.approx(2.3, abs=0.05)
    assert fit_exponent([28], [1.0]) is None and fit_exponent([20, 28], [0.0, 1.0]) is None
    assert math.isclose(fit_exponent([10, 100], [1.0, 1000.0]), 3.0)


def test_quick_mode_writes_json_and_table(tmp_path, capsys):
    out = tmp_path / "clone_scale.json"
    assert main(["--quick", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    s, rows = res["summary"], res["rows"]
    fam = [r for r in rows if r["row"] == "family"]
    assert [r["side"] for r in fam] == [12, 16, 20] and s["exponent_sides"] == [12, 16, 20]
    assert all(r["solver"] == "closed_form" and r["feature_rel_error"] <= 1e-3 for r in fam)
    assert all(r["cpu_s"] > 0 and r["over_matmul"] > 0 and r["floor_s"] > 0 for r in fam)
    assert s["family_time_exponent"] is not None and s["goals_met"]["error"]
    fn = [r for r in rows if r["row"] == "function"]
    assert fn and all(r["feature_rel_error"] <= 1e-3 for r in fn)
    proj = [r for r in rows if r["row"] == "function (projected)"]
    assert proj and proj[0]["side"] == 112 and proj[0]["estimated_peak_bytes"] > proj[0]["student_dense_bytes"]
    printed = capsys.readouterr().out
    assert "| row" in printed and "fitted exponents" in printed and str(out) in printed


def test_quick_rows_record_the_function_method_and_big_row_is_measured(monkeypatch):
    """Quick function rows are ridge solves with their method recorded; ``--big`` measures (not projects) a
    112 px function row (here the 112 px rows are stubbed: only the wiring is checked)."""
    import benchmarks.clone_scale as cs

    calls = []
    monkeypatch.setattr(cs, "family_row", lambda size, m: dict(row="family", side=size, cpu_s=1.0 + size,
                                                                   peak_bytes=1, peak_over_weights=1.0,
                                                                   over_matmul=1.0, feature_rel_error=0.0))
    real = cs.function_row
    monkeypatch.setattr(cs, "function_row", lambda size, m: calls.append(size) or (
        real(size, m) if size < 100 else dict(row="function", side=size, method="probe", cpu_s=9.0, peak_bytes=1,
                                              peak_over_weights=2.5, feature_rel_error=1e-7)))
    res = cs.run(quick=True, big=True)
    assert calls == [12, 16, 112]
    fn = [r for r in res["rows"] if r["row"] == "function"]
    assert [r["method"] for r in fn] == ["ridge", "ridge", "probe"]
    s = res["summary"]
    assert s["function_112_peak_over_weights"] == 2.5 and s["goals_met"]["function_112_memory"]
