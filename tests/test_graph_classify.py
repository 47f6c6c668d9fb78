"""EXP-classify at a tiny size: the training loop, resume, weight averaging, bad input, and the
connected-component layout of the learned sampler (the size-generalisation lever)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from symclone.graphs import Graph, LearnedGraphSampler, component_labels, split_graph, to_dense
from symclone.graphs._classify import ClassifyConfig, exp_classify, exp_split
from symclone.graphs._embed import ModelConfig
from symclone.graphs._samplers import component_offsets, real_first_argsort
from symclone.groups import get_group
from symclone.io import load_checkpoint

TINY = ModelConfig(hidden=(16,), k=2, score_hidden=8, score_layers=1, layout="components")


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


def _union(sizes, n_max=12, seed=0):
    """A disjoint union of paths with one feature, padded to ``n_max`` (shape (1, n_max, n_max + 2))."""
    blocks = [np.eye(n, k=1, dtype=np.uint8) + np.eye(n, k=-1, dtype=np.uint8) for n in sizes]
    n = sum(sizes)
    adj = np.zeros((n, n), np.uint8)
    s = 0
    for b in blocks:
        adj[s:s + len(b), s:s + len(b)] = b
        s += len(b)
    feat = np.random.default_rng(seed).integers(0, 2, (n, 1)).astype(np.float32)
    return to_dense([Graph(adj, feat)], n_max)


def test_component_labels_and_offsets_are_equivariant():
    x = _union((5, 3, 3))
    a, m, _ = split_graph(x)
    lab = component_labels(a, m)
    assert lab[0].tolist() == [0] * 5 + [5] * 3 + [8] * 3 + [12]
    g = torch.randperm(12, generator=torch.Generator().manual_seed(1))[None]
    G = get_group("sn", n=12)
    xp = G.act(g, x, "graph")
    ap, mp, _ = split_graph(xp)
    s = torch.rand(1, 12, generator=torch.Generator().manual_seed(2))
    off = component_offsets(lab, s, s, m > 0.5)
    off_p = component_offsets(component_labels(ap, mp), G.act(g, s, "set"), G.act(g, s, "set"), mp > 0.5)
    assert torch.equal(G.act(g, off, "set"), off_p)           # offsets follow their nodes exactly
    with pytest.raises(ValueError, match="layout"):
        LearnedGraphSampler(12, 1, layout="nope")


def test_component_layout_puts_the_smallest_component_first_whatever_the_rest():
    """Global layout: the positions of a component's nodes move with the other components (the size-
    generalisation failure); component layout: each component is one block, smallest first."""
    moved = False
    for sizes in ((3, 6), (3, 8), (6, 3, 7)):
        x = _union(sizes, n_max=20)
        lab = component_labels(*split_graph(x)[:2])[0]
        n, small = sum(sizes), int(lab[sum(sizes[:sizes.index(3)])])  # label of the 3-node component
        for layout in ("global", "components"):
            with torch.no_grad():
                p = LearnedGraphSampler(20, 1, layout=layout).sample(x, 4, torch.Generator().manual_seed(0)).g
            for row in p:
                seq = lab[row[:n]].tolist()
                first = [i for i, c in enumerate(seq) if c == small]
                if layout == "components":
                    assert first == [0, 1, 2]
                    assert sum(seq[i] != seq[i - 1] for i in range(1, n)) == len(sizes) - 1   # blocks
                else:
                    moved |= first != [0, 1, 2]
    assert moved                                             # control: without blocks it moves


def test_classify_default_uses_the_component_layout():
    assert ClassifyConfig().model.layout == "components" and ModelConfig().layout == "global"
    res = exp_classify("learned", _cfg(epochs=1), progress=False, limit=6)
    assert 0.0 <= res["test_acc"] <= 1.0
