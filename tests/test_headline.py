"""``python -m benchmarks.headline``: per-seed runs, reuse of finished seeds, recipe changes, the document."""
from __future__ import annotations

import json

import pytest

from benchmarks import headline, nbody

TINY = ("--models", "uniform", "--quick", "--epochs", "2", "--dim", "8", "--depth", "1", "--k-test", "2",
        "--center", "--velocity-step", "--charge-pairs")


def test_nbody_seed_runs_once_and_is_reused_until_the_recipe_changes(tmp_path, monkeypatch):
    row = headline.run_nbody_seed(0, tmp_path, recipe=TINY)
    assert row["model"] == "uniform" and row["seed"] == 0 and row["epochs"] == 2
    assert 0 < row["test_mse"] < 1 and row["recipe"] == list(TINY)
    stamp = json.loads((tmp_path / "nbody" / "seed0" / "recipe.json").read_text())
    assert stamp == {"recipe": list(TINY), "seed": 0}

    # the ensemble of two finished seeds scores the average of their predictions: never worse than their mean
    other = headline.run_nbody_seed(1, tmp_path, recipe=TINY)
    ens = headline.ensemble_test_mse(tmp_path, [0, 1], recipe=TINY)
    assert ens["seeds"] == [0, 1] and len(ens["single_test_mse"]) == 2 and other["seed"] == 1
    assert ens["single_test_mse"][0] != ens["single_test_mse"][1]             # two different models
    # MSE(mean) = mean MSE - |p0 - p1|^2 / 4: strictly below the mean of the two when the models differ
    assert ens["ensemble_test_mse"] < sum(ens["single_test_mse"]) / 2

    def refuse(argv):
        raise AssertionError("a finished seed of the same recipe must be reused")
    monkeypatch.setattr(nbody, "main", refuse)
    assert headline.run_nbody_seed(0, tmp_path, recipe=TINY) == row
    with pytest.raises(AssertionError, match="reused"):     # another recipe: the old result is not reused
        headline.run_nbody_seed(0, tmp_path, recipe=TINY[:-1])
    assert not (tmp_path / "nbody" / "seed0" / "nbody.json").exists()


def test_headline_document_from_per_seed_rows(tmp_path):
    calls = []

    def fake_nbody(seed, work, fresh=False):
        calls.append(("nbody", seed))
        return {"model": "uniform", "seed": seed, "test_mse": 0.004 + 0.001 * seed, "valid_mse": 0.004,
                "train_cpu_s": 600.0 * (seed + 1), "epochs": 10, "recipe": ["--models", "uniform"]}

    def fake_exp(seed, work, fresh=False):
        calls.append(("exp", seed))
        return {"seed": seed, "test_acc": 1.0 - 0.005 * seed, "val_acc": 1.0, "best_epoch": 3, "seconds": 9.0,
                "recipe": {}}
    levers = tmp_path / "levers"
    levers.mkdir()
    (levers / "base.json").write_text(json.dumps({"settings": {"seed": 0, "k": 1, "center": True}, "rows": [
        {"model": "uniform", "epochs": 5, "train_cpu_s": 1.0, "test_mse": 0.01, "valid_mse": 0.02}]}))
    out = tmp_path / "h.json"
    assert headline.main(["--seeds", "0,1", "--out", str(out), "--work", str(tmp_path / "w"), "--levers",
                          str(levers)], runners={"nbody": fake_nbody, "exp": fake_exp}) == 0
    doc = json.loads(out.read_text())
    assert calls == [("nbody", 0), ("nbody", 1), ("exp", 0), ("exp", 1)]
    assert doc["nbody"]["test_mse"] == pytest.approx([0.004, 0.005])
    assert doc["nbody"]["cpu_minutes"] == pytest.approx(20.0) and doc["nbody"]["within_budget"]
    assert doc["nbody"]["met"] is False                      # seed 1 misses 0.0040
    assert doc["exp_classify"]["test_accuracy"] == pytest.approx([1.0, 0.995])
    assert doc["exp_classify"]["met"] is False
    assert doc["nbody_levers"] == [{"lever": "base", "model": "uniform", "flags": ["center", "k=1"], "seed": 0,
                                    "epochs": 5, "train_cpu_s": 1.0, "test_mse": 0.01, "valid_mse": 0.02}]
    with pytest.raises(SystemExit):
        headline.main(["--parts", "nbody,gpu"])
