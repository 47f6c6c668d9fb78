"""PATTERN: the generator (determinism, recipe statistics), storage and cache, the metric, node-level
equivariance of the symmetrized node classifiers (with a non-equivariant control), training with
resume, and the ``symclone graphs pattern`` command end to end."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from symclone.cli import main
from symclone.graphs import (NodeMessagePassing, NodeTransformer, PatternConfig, PatternData, PatternRecipe,
                             canonical_order, canonical_pattern, generate_pattern, load_pattern, pattern_class_weights,
                             pattern_expectations, pattern_motifs, pattern_statistics, symmetrize_graph_model,
                             train_pattern, weighted_accuracy)
from symclone.graphs._pattern_train import build_pattern_model
from symclone.groups import Sn
from symclone.io import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(d_model=16, heads=2, layers=1, ff=32, mp_hidden=16, mp_layers=2, score_hidden=8, score_layers=1)


def _arrays_digest(d: PatternData) -> str:
    h = hashlib.sha256()
    for a in (d.sizes.astype(np.int64), d.adj_bits, d.feats, d.labels, d.pattern_ids.astype(np.int64)):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- generator


def test_same_seed_same_graphs_other_seed_other_graphs():
    a, b = generate_pattern(6, seed=3), generate_pattern(6, seed=3)
    assert _arrays_digest(a) == _arrays_digest(b)
    c = generate_pattern(6, seed=4)
    assert _arrays_digest(a) != _arrays_digest(c)
    assert not np.array_equal(a.sizes, c.sizes) or not np.array_equal(a.adj_bits, c.adj_bits)
    # graph i does not depend on how many graphs are drawn, nor on where the draw starts
    assert _arrays_digest(generate_pattern(4, seed=3)) == _arrays_digest(a.subset(range(4)))
    assert _arrays_digest(generate_pattern(2, seed=3, start=4)) == _arrays_digest(a.subset([4, 5]))
    # the splits are different graphs that plant the same 100 patterns
    v = generate_pattern(6, seed=3, split="val")
    assert _arrays_digest(v) != _arrays_digest(a)
    m3, m3b, m4 = pattern_motifs(3), pattern_motifs(3), pattern_motifs(4)
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(m3, m3b))
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(m3, m4))


def test_golden_values_pin_the_stream():
    """numpy's PCG64 Generator is portable: these numbers are the same on every machine. A change means
    the generator (or numpy's stream) changed, and every cached / published split with it."""
    d = generate_pattern(5, seed=0)
    assert d.sizes.tolist() == [144, 153, 123, 137, 72]
    assert d.num_edges().tolist() == [4246, 4905, 3132, 3879, 1098]
    assert d.pattern_ids.tolist() == [10, 31, 29, 90, 63]


def test_each_graph_plants_one_pattern_exactly():
    recipe = PatternRecipe()
    data, motifs = generate_pattern(12, seed=1), pattern_motifs(1)
    eye = np.eye(3)
    for i in range(len(data)):
        a, f, lab = data.graph(i)
        assert np.array_equal(a, a.T) and not a.diagonal().any() and set(np.unique(a)) <= {0, 1}
        assert set(np.unique(f)) <= {0, 1, 2} and int(lab.sum()) == recipe.pattern_size
        p = np.flatnonzero(lab)
        w0, u0 = motifs[data.pattern_ids[i]]
        sub, fsub = a[p][:, p], f[p]
        o1, o2 = canonical_order(sub, eye[fsub]), canonical_order(w0, eye[u0])   # same graph up to relabelling
        assert np.array_equal(sub[o1][:, o1], w0[o2][:, o2]) and np.array_equal(fsub[o1], u0[o2])
        deg = a.sum(1)
        assert deg[lab == 1].mean() > deg[lab == 0].mean()   # q_P = 0.5 > q = 0.35: pattern nodes are denser


def test_statistics_of_300_graphs_match_the_recipe_and_the_published_figures():
    """Tolerances from the recipe's own distribution: 5 standard errors of the mean of 300 graphs
    (node count: sd 20 exactly; edges: the sample sd), so a failure is a ~1e-6 event, not noise."""
    n, recipe = 300, PatternRecipe()
    data = generate_pattern(n, seed=11)
    st, ex = pattern_statistics(data), pattern_expectations(recipe)
    assert recipe.n_min <= st["nodes_min"] and st["nodes_max"] <= recipe.n_max        # the support [45, 195]
    assert (ex["nodes_mean"], ex["nodes_sd"]) == (120.0, 20.0)
    tol_n = 5 * ex["nodes_sd"] / math.sqrt(n)                                          # 5.8 nodes
    assert abs(st["nodes_mean"] - ex["nodes_mean"]) < tol_n
    assert abs(119 - ex["nodes_mean"]) < tol_n                                         # published: ~119
    assert np.mean((data.sizes >= 44) & (data.sizes <= 188)) > 0.97                    # published range 44-188
    e = 2 * data.num_edges()
    tol_e = 5 * e.std(ddof=1) / math.sqrt(n)                                           # ~550 directed edges
    assert abs(e.mean() - ex["edges_directed_mean"]) < tol_e
    assert abs(6100 - ex["edges_directed_mean"]) < tol_e                               # published: ~6,100
    assert st["edges_directed_mean"] == pytest.approx(e.mean())
    assert st["degree_mean"] == pytest.approx(e.sum() / data.sizes.sum())
    # pattern fraction 20 G / Σ n -> 20 / E n; delta method: sd ≈ 20 · sd(n) / (E n)² / sqrt(G)
    tol_f = 5 * 20 * ex["nodes_sd"] / ex["nodes_mean"] ** 2 / math.sqrt(n)
    assert abs(st["pattern_fraction"] - 20 / ex["nodes_mean"]) < tol_f
    assert abs(20 / 119 - 20 / ex["nodes_mean"]) < tol_f
    assert st["class_balance"][1] == pytest.approx(st["pattern_fraction"])
    w = pattern_class_weights(data)
    assert torch.allclose(w, torch.tensor([st["class_balance"][1], st["class_balance"][0]], dtype=torch.float32))


# ----------------------------------------------------------------------------- storage, cache, dense batches


def test_dense_batches_storage_roundtrip_and_cache(tmp_path, monkeypatch):
    data = generate_pattern(5, seed=2)
    x, y = data.dense([3, 1])
    N = int(max(data.sizes[3], data.sizes[1]))
    assert x.shape == (2, N, N + 1 + 3) and y.shape == (2, N)
    for b, i in enumerate((3, 1)):
        a, f, lab = data.graph(i)
        n = len(f)
        assert torch.equal(x[b, :n, :n], torch.from_numpy(a).float())
        assert torch.equal(x[b, :, N], (torch.arange(N) < n).float())
        assert torch.equal(x[b, :n, N + 1:].argmax(-1), torch.from_numpy(f).long())
        assert torch.equal(y[b, :n], torch.from_numpy(lab).long()) and bool((y[b, n:] == -1).all())
        assert not x[b, n:].any() and not x[b, :, n:N].any()
    with pytest.raises(ValueError, match="n_max"):
        data.dense([0], n_max=10)
    path = tmp_path / "d.npz"
    path.write_bytes(data.to_bytes())
    assert _arrays_digest(PatternData.from_file(path)) == _arrays_digest(data)
    # cache: written once (atomically, as one file), then read back; a larger cached split serves a smaller n
    cache = tmp_path / "cache"
    first = load_pattern("test", n=6, seed=5, cache_dir=cache)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 1 and files[0].startswith("pattern_test_6_s5_") and files[0].endswith(".npz")
    import symclone.graphs._pattern as mod

    def no_generation(*a, **k):
        raise AssertionError("generated instead of reading the cache")
    monkeypatch.setattr(mod, "generate_pattern", no_generation)
    assert _arrays_digest(load_pattern("test", n=6, seed=5, cache_dir=cache)) == _arrays_digest(first)
    assert _arrays_digest(load_pattern("test", n=4, seed=5, cache_dir=cache)) == _arrays_digest(first.subset(range(4)))
    assert "/.cache/" in (ROOT / ".gitignore").read_text().split()


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="size_max"):
        PatternRecipe(size_max=3)
    with pytest.raises(ValueError, match="q_pattern"):
        PatternRecipe(q_pattern=1.5)
    with pytest.raises(ValueError, match="split"):
        generate_pattern(2, split="dev")
    with pytest.raises(ValueError, match="split"):
        load_pattern("training", n=2, cache_dir=None)
    with pytest.raises(ValueError, match="n_graphs"):
        generate_pattern(-1)
    with pytest.raises(ValueError, match="heads"):
        PatternConfig(d_model=10, heads=4)
    with pytest.raises(ValueError, match="noise_kind"):
        PatternConfig(noise_kind="gauss")
    with pytest.raises(ValueError, match="pred"):
        weighted_accuracy(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="n_max=6"):
        NodeTransformer(6, 1, 8, 2, 1, 16)(torch.zeros(1, 7, 9))
    with pytest.raises(ValueError, match="rep_out"):
        symmetrize_graph_model(NodeTransformer(6, 1, 8, 2, 1, 16), "uniform", 6, 1, rep_out="nodes")


# ----------------------------------------------------------------------------- metric


def test_weighted_accuracy_on_a_hand_computed_example():
    target = torch.tensor([[0, 0, 0, 1, 1, -1], [0, 1, 0, 0, -1, -1]])
    pred = torch.tensor([[0, 1, 0, 1, 0, 1], [1, 1, 0, 0, 1, 1]])
    # class 0: 6 nodes, 4 right (2/3); class 1: 3 nodes, 2 right (2/3); padding ignored
    assert weighted_accuracy(pred, target) == pytest.approx(2 / 3)
    # a plain accuracy would be 6/9 here too; make the classes unbalanced: recall 1 on class 0, 0 on class 1
    assert weighted_accuracy(torch.zeros(1, 5, dtype=torch.long), torch.tensor([[0, 0, 0, 0, 1]])) == 0.5
    logits = torch.nn.functional.one_hot(pred.clamp(min=0), 2).double()
    assert weighted_accuracy(logits, target) == pytest.approx(2 / 3)            # scores: argmax
    assert weighted_accuracy(torch.tensor([1, 1]), torch.tensor([1, 1])) == 1.0  # class 0 absent: not averaged


# ----------------------------------------------------------------------------- equivariance


def _relabel(x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``h·x``, ``h·y`` for random ``h ∈ S_N`` per graph (padding interleaved with real nodes)."""
    gen = torch.Generator().manual_seed(seed)
    h = torch.argsort(torch.rand(x.shape[0], x.shape[1], generator=gen), dim=-1)
    G = Sn()
    return G.act(h, x, "graph"), G.act(h, y, "set"), h


def _act(h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return Sn().act(h, out, "set")


@pytest.fixture(scope="module")
def batch():
    torch.set_num_threads(1)
    data = generate_pattern(3, seed=4)
    x, y = data.dense(range(3), dtype=torch.float64)
    return data, x, y


def _backbone(seed: int = 0) -> NodeTransformer:
    torch.manual_seed(seed)
    return NodeTransformer(PatternRecipe().n_max, 3, d_model=16, heads=2, layers=1, ff=32).double().eval()


def test_bare_transformer_is_not_equivariant_control(batch):
    _, x, y = batch
    f = _backbone()
    xh, yh, h = _relabel(x, y, 0)
    with torch.no_grad():
        err = (f(xh) - _act(h, f(x))).abs().max()
    assert err > 1e-2                       # far beyond every tolerance used below
    assert torch.equal((yh >= 0), xh[:, :, x.shape[1]] > 0.5)   # the labels travelled with their nodes


def test_canonical_node_classifier_is_exactly_equivariant_and_matches_the_training_shortcut(batch):
    data, x, y = batch
    f = symmetrize_graph_model(_backbone(), "canonical", None, 3, rep_out="set").eval()
    with torch.no_grad():
        out = f(x)
        for seed in range(3):
            xh, _, h = _relabel(x, y, seed)
            assert torch.equal(f(xh), _act(h, out))                          # exact, per call
        # training shortcut: the backbone on the stored canonical forms gives the same node outputs
        canon, _ = canonical_pattern(data)
        xc, yc = canon.dense(range(3), dtype=torch.float64)
        oc = f.model(xc)
        for b in range(3):
            n = int(data.sizes[b])
            a, fe, _ = data.graph(b)
            order = torch.as_tensor(canonical_order(a, np.eye(3)[fe]))
            assert torch.allclose(out[b, order], oc[b, :n], atol=1e-12, rtol=0)
            assert torch.equal(y[b, order], yc[b, :n])


def test_learned_node_classifier_is_equivariant_with_a_shared_sampling_seed(batch):
    """The refined noise is exactly equivariant (PATTERN graphs are discrete after 1-WL refinement, so no
    draw is spent on ties); a non-zero score head makes the GIN take part. Training mode exercises the
    straight-through permutation matrices."""
    _, x, y = batch
    torch.manual_seed(1)
    f = symmetrize_graph_model(_backbone(), "learned", None, 3, k=2, rep_out="set", hidden=8, layers=1).double()
    torch.nn.init.normal_(f.sampler.net.head.weight, std=0.3)
    for mode in ("eval", "train"):
        getattr(f, mode)()
        out = f(x, generator=torch.Generator().manual_seed(5))
        xh, _, h = _relabel(x, y, 7)
        outh = f(xh, generator=torch.Generator().manual_seed(5))
        assert torch.allclose(outh, _act(h, out), atol=1e-9, rtol=0), mode


def test_uniform_node_classifier_is_equivariant_in_distribution(batch):
    """With independent draws, ``f(h·x)`` differs from ``h·f(x)`` exactly as much as two draws of ``f(x)``
    differ from each other (both are differences of two independent k-sample averages of the same
    distribution). Ratio of the mean absolute differences over 6 repetitions: 0.97-1.03 over 15 other
    relabellings and draws, so [0.7, 1.4] leaves > 10 spreads of margin. Control: the bare backbone
    (deterministic: its own ratio is infinite) moves ~8x more under the relabelling than the sampling
    noise of k = 64 draws."""
    _, x, y = batch
    x, y = x[:2], y[:2]
    f = symmetrize_graph_model(_backbone(), "uniform", None, 3, k=64, rep_out="set").eval()
    xh, _, h = _relabel(x, y, 3)
    across, within = 0.0, 0.0
    with torch.no_grad():
        for r in range(6):
            g = lambda s: torch.Generator().manual_seed(s)
            a, b, c = f(x, generator=g(3 * r)), f(x, generator=g(3 * r + 1)), f(xh, generator=g(3 * r + 2))
            within += (a - b).abs().mean().item()
            across += (c - _act(h, a)).abs().mean().item()
        bare = (f.model(xh) - _act(h, f.model(x))).abs().mean().item()
    assert 0.7 < across / within < 1.4
    assert bare > 5 * across / 6            # the backbone alone moves far more than the sampling noise


def test_message_passing_baseline_is_equivariant(batch):
    _, x, y = batch
    torch.manual_seed(0)
    f = NodeMessagePassing(3, hidden=16, layers=2).double()
    xh, _, h = _relabel(x, y, 1)
    with torch.no_grad():
        assert torch.allclose(f(xh), _act(h, f(x)), atol=1e-10, rtol=0)


# ----------------------------------------------------------------------------- training, resume, CLI


def _cfg(**kw) -> PatternConfig:
    base = dict(epochs=2, batch_size=4, n_train=8, n_val=4, n_test=4, k_train=2, k=2, cache_dir=None,
                progress=False, **TINY)
    return PatternConfig(**{**base, **kw})


def _weights(stem) -> dict:
    tensors, _ = load_checkpoint(stem)
    return {k: v for k, v in tensors.items() if k.startswith("model/")}


def test_learned_training_resumes_exactly_and_selects_on_validation(tmp_path):
    data = {s: load_pattern(s, n, 0, tmp_path / "cache") for s, n in (("train", 8), ("val", 4), ("test", 4))}
    full = train_pattern("learned", _cfg(), tmp_path / "a", data=data)
    assert full["epochs_run"] == 2 and 0 <= full["test_accuracy"] <= 1 and full["cpu_seconds"] > 0
    _, meta = load_checkpoint(tmp_path / "a" / "pattern_learned_seed0")
    best = meta["history"][full["best_epoch"] - 1]
    assert best["val_accuracy"] == full["val_accuracy"]
    assert all((h["val_accuracy"], -h["val_loss"]) <= (best["val_accuracy"], -best["val_loss"]) for h in meta["history"])
    # stop after one epoch, then resume: the same weights and numbers as the uninterrupted run
    train_pattern("learned", _cfg(epochs=1), tmp_path / "b", data=data)
    resumed = train_pattern("learned", _cfg(), tmp_path / "b", resume=True, data=data)
    a, b = _weights(tmp_path / "a" / "pattern_learned_seed0"), _weights(tmp_path / "b" / "pattern_learned_seed0")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_accuracy"] == full["test_accuracy"] and resumed["val_accuracy"] == full["val_accuracy"]
    # a finished run is not trained again; other settings refuse to resume
    again = train_pattern("learned", _cfg(), tmp_path / "b", resume=True, data=data)
    assert again == resumed
    with pytest.raises(ValueError, match="resume"):
        train_pattern("learned", _cfg(lr=0.5), tmp_path / "b", resume=True, data=data)
    # control: another training seed trains other weights
    train_pattern("learned", _cfg(seed=1), tmp_path / "c", data=data)
    c = _weights(tmp_path / "c" / "pattern_learned_seed1")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_models_build_with_the_benchmark_shapes():
    cfg = _cfg()
    x, _ = generate_pattern(2, seed=0).dense([0, 1])
    for name in ("transformer", "uniform", "canonical", "learned", "mp"):
        m = build_pattern_model(name, cfg).eval()
        with torch.no_grad():
            out = m(x)
        assert out.shape == (2, x.shape[1], 2)
        assert not out[x[:, :, x.shape[1]] < 0.5].any()   # padding outputs are zero


def test_cli_pattern_end_to_end_writes_pattern_json(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["graphs", "pattern", "--models", "transformer,canonical,mp", "--seeds", "2", "--out", str(out),
            "--no-progress", "--pattern.epochs=1", "--pattern.n_train=6", "--pattern.n_val=3", "--pattern.n_test=3",
            f"--pattern.cache_dir={tmp_path / 'cache'}", "--pattern.batch_size=3"] + \
        [f"--pattern.{k}={v}" for k, v in TINY.items()]
    assert main(argv) == 0
    rec = json.loads((out / "pattern.json").read_text())
    for key in ("test_accuracy", "val_accuracy", "cpu_minutes"):
        assert set(rec[key]) == {"transformer", "canonical", "mp"}
        assert all(len(v) == 2 for v in rec[key].values())
    assert all(0 <= a <= 1 for v in rec["test_accuracy"].values() for a in v)
    s = rec["summary"]["mp"]
    assert s["test_mean"] == pytest.approx(np.mean(rec["test_accuracy"]["mp"]))
    assert s["test_sd"] == pytest.approx(np.std(rec["test_accuracy"]["mp"], ddof=1))
    assert rec["config"]["epochs"] == 1 and rec["model"]["canonical"]["parameters"] > 0
    assert "exact per call" in rec["model"]["canonical"]["averaging"]
    assert "wrote" in capsys.readouterr().out
    # resume: every run is finished, nothing is trained again, the record is rewritten the same
    assert main(argv + ["--resume"]) == 0
    again = json.loads((out / "pattern.json").read_text())
    assert again["test_accuracy"] == rec["test_accuracy"]
