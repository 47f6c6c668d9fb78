"""The downstream benchmark's bookkeeping: mod-10 accuracy, rows at a tiny size, exact reruns of a
seed, resume and merging of per-seed result files (``benchmarks.downstream``)."""
from __future__ import annotations

import pytest
import torch
from test_finetune import _base   # seeded random 28x28 base images and labels

from symclone.finetune import task_from_tensors

# ---------------------------------------------------------------- downstream grid bookkeeping
def _downstream():
    from symclone.commands.bench import load_suite
    load_suite()  # puts the checkout's benchmarks/ on sys.path
    from benchmarks import downstream
    return downstream


def test_mod10_accuracy_measures_the_invariant_ceiling():
    """A C4-invariant oracle that knows the class but must guess the rotation bit: 100 % on
    label % 10, about half of that on the 20 labels (the invariant ceiling)."""
    ds = _downstream()
    x, y = _base(200, seed=4)
    task = task_from_tensors("c4-breaking", x, y, x, y, seed=2)
    split = task.test["test"]
    _, labels = split.batch(torch.arange(len(split)))

    class Replay(torch.nn.Module):
        """Answers with fixed labels, in the order the samples are asked for."""

        def __init__(self, answers):
            super().__init__()
            self.answers, self.pos = answers, 0

        def forward(self, xb):
            out = torch.nn.functional.one_hot(self.answers[self.pos:self.pos + len(xb)], 20).float()
            self.pos += len(xb)
            return out

    # invariant: class y, always the "upright" half, whatever the rotation of the input
    assert ds.mod10_accuracy(Replay(y), split, batch_size=64) == 1.0
    acc20 = float((y == labels).double().mean())        # right only on the k in {0, 1} half
    assert 0.35 < acc20 < 0.65
    assert ds.mod10_accuracy(Replay((labels + 1) % 20), split, batch_size=64) == 0.0
    assert ds.mod10_accuracy(Replay(labels), split, limit=50) == 1.0


def test_run_row_records_mod10_accuracy_at_tiny_size():
    from types import SimpleNamespace
    ds = _downstream()
    args = SimpleNamespace(dataset="synthetic", data_root=None, seed=0, progress=False)
    size = {"n_test": 32}
    tasks = {}
    row = dict(task="c4-breaking", model="mlp", mode="free", beta=None, anchor=None, n_train=64, epochs=1,
               sweep="main", fields=1)
    out = ds.run_row(row, size, tasks, cache=None, args=args)
    assert 0.0 <= out["primary_accuracy"] <= out["accuracy_mod10"] <= 1.0
    assert out["invariant_ceiling"] == 0.5 and out["n_train_actual"] == 64
    gen = ds.run_row({**row, "task": "c4-generalisation"}, size, tasks, cache=None, args=args)
    assert "accuracy_mod10" not in gen   # 10-class task: nothing to fold


def test_downstream_rerun_of_a_seed_is_exact(tmp_path):
    """A row rerun with the same seed gives bit-identical numbers, whether its clone is built fresh or
    read from the cache (the head's initialisation used to depend on which); another seed differs."""
    from types import SimpleNamespace
    ds = _downstream()
    args = SimpleNamespace(dataset="synthetic", data_root=None, seed=0, progress=False)
    size = {"n_test": 32}
    row = dict(task="c4-breaking", model="cloned-mlp", mode="frozen", beta=None, anchor=None, n_train=64,
               epochs=1, sweep="main", fields=1, seed=1)
    runs = []
    for _ in range(2):   # first run: fresh clone (written to the cache); second: read back from it
        runs.append(ds.run_row(row, size, {}, ds.StudentCache(tmp_path / "cache", 1), args))
    keys = ("accuracy", "primary_accuracy", "accuracy_mod10", "invariance_error", "cloned_distance", "final_ce")
    assert [runs[0][k] for k in keys] == [runs[1][k] for k in keys]
    other = ds.run_row({**row, "seed": 2}, size, {}, ds.StudentCache(tmp_path / "cache", 2), args)
    assert other["final_ce"] != runs[0]["final_ce"]


def test_downstream_resume_accumulates_seconds(tmp_path, monkeypatch, capsys):
    import json
    ds = _downstream()
    template = dict(task="c4-breaking", model="mlp", mode="free", beta=None, anchor=None, n_train=64, epochs=1,
                    sweep="main", fields=8)
    rows = [template, {**template, "model": "cnn"}]

    def fake_run(r, size, tasks, cache, args):
        return {**r, "accuracy": {"test": 0.4}, "primary": "test", "primary_accuracy": 0.4, "accuracy_mod10": 0.7,
                "invariance_error": 1.0, "structure_residual_before": None, "structure_residual_after": None,
                "cloned_distance": 0.0, "n_params": 10, "n_trainable": 10, "train_seconds": 1.0,
                "build_seconds": 0.0, "n_train_actual": 64, "invariant_ceiling": 0.5, "final_ce": 1.0}

    monkeypatch.setattr(ds, "grid", lambda size: rows)
    monkeypatch.setattr(ds, "run_row", fake_run)
    out = tmp_path / "d.json"
    out.write_text(json.dumps({"size": "quick", "rows": [fake_run(rows[0], None, None, None, None)],
                               "seconds": 100.0, "sessions": 1}))
    assert ds.main(["--quick", "--seeds", "0", "--resume", "--out", str(out), "--no-plots", "--tasks",
                    "c4-breaking"]) == 0
    data = json.loads(out.read_text())
    assert len(data["rows"]) == 2 and data["sessions"] == 2 and 100.0 <= data["seconds"] < 160.0
    md = (tmp_path / "d.md").read_text()
    assert "over 2 session(s)" in md and "acc mod 10" in md and "| 0.400 | 0.700 |" in md


def test_downstream_merge_combines_per_seed_files(tmp_path, capsys):
    import json
    ds = _downstream()
    row = dict(task="c4-breaking", model="mlp", mode="free", beta=None, anchor=None, n_train=64, epochs=1,
               sweep="main", fields=8, accuracy={"test": 0.4}, primary="test", invariance_error=1.0,
               structure_residual_before=None, structure_residual_after=None, cloned_distance=0.0, n_params=10,
               n_trainable=10, train_seconds=1.0, build_seconds=0.0, n_train_actual=64, invariant_ceiling=0.5,
               final_ce=1.0)
    for seed, acc in ((0, 0.4), (1, 0.6)):
        rec = {"size": "quick", "config": {}, "dataset": "synthetic", "threads": 1, "seconds": 10.0, "sessions": 1,
               "rows": [{**row, "seed": seed, "primary_accuracy": acc, "accuracy": {"test": acc}}]}
        (tmp_path / f"s{seed}.json").write_text(json.dumps(rec))
    out = tmp_path / "all.json"
    assert ds.main(["--merge", str(tmp_path / "s0.json"), str(tmp_path / "s1.json"), "--out", str(out),
                    "--no-plots"]) == 0
    data = json.loads(out.read_text())
    assert data["seeds"] == [0, 1] and len(data["rows"]) == 2 and data["seconds"] == 20.0
    (s,) = data["summary"]
    assert s["n_seeds"] == 2 and s["primary_accuracy"] == pytest.approx(0.5)
    assert s["primary_accuracy_sd"] == pytest.approx(0.1414, abs=1e-4) and s["primary_accuracy_values"] == [0.4, 0.6]
    assert "0.500 ± 0.141" in (tmp_path / "all.md").read_text()
