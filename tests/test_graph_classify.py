"""EXP-classify at a tiny size: the training loop, resume, weight averaging and bad input."""
from __future__ import annotations

import pytest
import torch

from symclone.graphs._classify import ClassifyConfig, exp_classify, exp_split
from symclone.graphs._embed import ModelConfig
from symclone.io import load_checkpoint

TINY = ModelConfig(hidden=(16,), k=2, score_hidden=8, score_layers=1)


def _cfg(**kw) -> ClassifyConfig:
    return ClassifyConfig(**{"epochs": 2, "batch": 8, "k_train": 2, "model": TINY, **kw})


def _weights(stem):
    tensors, _ = load_checkpoint(stem)
    return {k: v for k, v in tensors.items() if k.startswith(("model/", "ema/"))}


def test_learned_classify_runs_and_resume_equals_uninterrupted(tmp_path):
    full = exp_classify("learned", _cfg(), out=tmp_path / "a", progress=False, limit=12)
    assert full["epochs_run"] == 2 and full["k_train"] == 2
    for key in ("test_acc", "test_acc_relabeled", "val_acc", "train_acc"):
        assert 0.0 <= full[key] <= 1.0
    _, meta = load_checkpoint(tmp_path / "a" / "classify_learned")
    best = meta["history"][full["best_epoch"]]
    assert best["val_acc"] == full["val_acc"] and full["val_nll"] == pytest.approx(best["val_nll"], abs=1e-5)
    # the selected epoch: best validation accuracy, ties broken by the lower validation loss
    assert all((h["val_acc"], -h["val_nll"]) <= (best["val_acc"], -best["val_nll"]) for h in meta["history"])
    exp_classify("learned", _cfg(epochs=1), out=tmp_path / "b", progress=False, limit=12)
    resumed = exp_classify("learned", _cfg(), out=tmp_path / "b", resume=True, progress=False, limit=12)
    a, b = _weights(tmp_path / "a" / "classify_learned"), _weights(tmp_path / "b" / "classify_learned")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_acc"] == full["test_acc"] and resumed["val_acc"] == full["val_acc"]
    # control: a different seed trains different weights
    exp_classify("learned", _cfg(seed=5), out=tmp_path / "c", progress=False, limit=12)
    c = _weights(tmp_path / "c" / "classify_learned")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_ema_weights_are_averaged_and_checkpointed(tmp_path):
    exp_classify("mlp", _cfg(ema=0.9), out=tmp_path, progress=False, limit=12)
    w = _weights(tmp_path / "classify_mlp")
    live = {k[6:]: v for k, v in w.items() if k.startswith("model/")}
    avg = {k[11:]: v for k, v in w.items() if k.startswith("ema/module.")}
    assert live.keys() == avg.keys()
    # the average lags the live weights: equal only where nothing trained (none here)
    assert all(not torch.equal(live[k], avg[k]) for k in live if live[k].is_floating_point())


def test_classify_bad_input():
    with pytest.raises(ValueError, match="ema"):
        exp_classify("mlp", _cfg(ema=1.0), progress=False, limit=12)
    with pytest.raises(ValueError, match="limit"):
        exp_classify("mlp", _cfg(), progress=False, limit=3)
    with pytest.raises(ValueError, match="sizes"):
        exp_split(10, 0, (5, 3, 3))


def test_classify_model_does_not_depend_on_the_machines_speed(tmp_path, monkeypatch):
    """Budgets are epochs: on a clock where every reading is 1000 CPU-seconds later (an extremely slow
    machine) the trained weights are identical. Control: an explicit ``max_seconds`` cap stops that run."""
    import time as _time
    exp_classify("mlp", _cfg(), out=tmp_path / "a", progress=False, limit=12)
    ticks = iter(range(10 ** 6))
    monkeypatch.setattr(_time, "process_time", lambda: 1000.0 * next(ticks))
    exp_classify("mlp", _cfg(), out=tmp_path / "b", progress=False, limit=12)
    a, b = _weights(tmp_path / "a" / "classify_mlp"), _weights(tmp_path / "b" / "classify_mlp")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    capped = exp_classify("mlp", _cfg(max_seconds=600.0), out=tmp_path / "c", progress=False, limit=12)
    assert capped["stopped_by_time_budget"] and capped["epochs_run"] < 2
