"""Fine-tuning: task generators, frozen / anchored / free modes, cloned-structure declaration, CLI."""
from __future__ import annotations

import torch
import pytest

from symclone.finetune import (AnchorPenalty, ClonedNet, FinetuneConfig, InvariantHead, MLPBaseline, finetune,
                               invariance_error, select_cloned, task_from_tensors)
from symclone.finetune._metrics import structure_residuals
from symclone.finetune.tasks import CENTRE_COL, SHIFT_RANGE, VSHIFT_RANGE
from symclone.registry import create_student, create_teacher

CFG = FinetuneConfig(epochs=1, batch_size=16, progress=False, n_invariance=16, structure_probes=1)


def _base(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


# ---------------------------------------------------------------- task generators
def test_c4_breaking_labels_and_images():
    x, y = _base(64)
    task = task_from_tensors("c4-breaking", x, y, x, y, seed=3)
    assert task.num_classes == 20 and task.group.name == "c4" and task.invariant_ceiling == 0.5
    xb, yb = task.train.batch(torch.arange(64))
    k = task.train.params["k"]
    assert set(k.tolist()) == {0, 1, 2, 3}
    for i in range(64):
        assert torch.equal(xb[i], torch.rot90(x[i], int(k[i]), dims=(-2, -1)))
        assert int(yb[i]) == int(y[i]) + (10 if int(k[i]) >= 2 else 0)
    i180 = int((k == 2).nonzero()[0])   # a sample rotated by 180 degrees gets y + 10
    assert int(yb[i180]) == int(y[i180]) + 10
    i90 = int((k == 1).nonzero()[0])
    assert int(yb[i90]) == int(y[i90])
    # test split drawn independently of the training split
    assert not torch.equal(task.test["test"].params["k"], k)


def test_c4_generalisation_splits():
    x, y = _base(40)
    task = task_from_tensors("c4-generalisation", x, y, x, y)
    xb, yb = task.train.batch(torch.arange(40))
    assert torch.equal(xb, x) and torch.equal(yb, y)          # upright training data
    assert torch.equal(task.test["upright"].batch(torch.arange(40))[0], x)
    xr, yr = task.test["rotated"].batch(torch.arange(40))
    k = task.test["rotated"].params["k"]
    assert torch.equal(yr, y) and len(set(k.tolist())) > 1
    assert all(torch.equal(xr[i], torch.rot90(x[i], int(k[i]), (-2, -1))) for i in range(40))
    assert task.primary == "rotated"


def test_t2_breaking_labels_and_shift_ranges():
    n = 600
    x = torch.ones(n, 1, 28, 28)
    y = torch.arange(n) % 10
    task = task_from_tensors("t2-breaking", x, y, x[:10], y[:10], seed=1)
    assert task.input_shape == (1, 48, 48) and task.group.name == "t2"
    xb, yb = task.train.batch(torch.arange(n))
    v, s = task.train.params["v"], task.train.params["s"]
    assert VSHIFT_RANGE[0] <= int(v.min()) and int(v.max()) <= VSHIFT_RANGE[1]
    assert SHIFT_RANGE[0] <= int(s.abs().min()) and int(s.abs().max()) <= SHIFT_RANGE[1]
    # the whole documented ranges are used, both directions
    assert int(v.min()) == 0 and int(v.max()) == 15 and int(s.min()) == -15 and int(s.max()) == 15
    assert set(s.abs().tolist()) == set(range(5, 16))
    for i in range(n):
        rows = xb[i, 0].sum(1).nonzero().flatten()
        cols = xb[i, 0].sum(0).nonzero().flatten()
        left = CENTRE_COL + int(s[i])
        assert int(rows[0]) == int(v[i]) and int(rows[-1]) == int(v[i]) + 27
        assert int(cols[0]) == max(left, 0) and int(cols[-1]) == min(left + 27, 47)
        right = int(s[i]) > 0
        assert (int(cols[0]) + int(cols[-1])) / 2 > 23.5 if right else (int(cols[0]) + int(cols[-1])) / 2 < 23.5
        assert int(yb[i]) == int(y[i]) + (10 if right else 0)   # right-shifted samples get y + 10


def test_task_bad_input():
    x, y = _base(4)
    with pytest.raises(ValueError, match="task"):
        task_from_tensors("c8-breaking", x, y, x, y)
    with pytest.raises(ValueError, match="x_train"):
        task_from_tensors("c4-breaking", x[:, :, :20], y, x, y)
    with pytest.raises(ValueError, match="labels"):
        task_from_tensors("c4-breaking", x, y + 10, x, y)


# ---------------------------------------------------------------- modes on a cloned blocks net
@pytest.fixture(scope="module")
def lifting():
    """A C4 lifting layer (1 regular field) cloned exactly by family closed-form cloning."""
    from symclone.distill import DistillConfig, distill
    teacher = create_teacher("gcnn_c4", fields=1, depth=1, size=28)
    student = create_student("blocks", teacher=teacher, seed=0)
    distill(student, teacher, cfg=DistillConfig(mode="family", solver="closed_form", n_train=128, n_eval=8,
                                                eval_kernels=2, progress=False))
    return teacher, student


def _net(lifting, seed=0):
    import copy
    teacher, student = lifting
    k = teacher.sample_params(1, 3, generator=torch.Generator().manual_seed(seed))
    return ClonedNet(copy.deepcopy(student), 20, kernels=k, structure_group=teacher.group, hidden=16)


def test_frozen_keeps_cloned_tensors_bit_identical(lifting):
    x, y = _base(48)
    task = task_from_tensors("c4-breaking", x, y, x[:16], y[:16])
    model = _net(lifting)
    names = select_cloned(model)
    assert names and all(n.startswith("net.") for n in names)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    kernels0, head0 = model.kernels.detach().clone(), model.head.mlp[0].weight.detach().clone()
    assert model.field_bias.shape == (3, 1) and not model.field_bias.detach().any()
    res = structure_residuals(model, 1)
    r = finetune(model, task, mode="frozen", config=CFG)
    for k, v in model.net.state_dict().items():     # W_b, kernel maps, block biases c_b
        assert torch.equal(v, before[k]), k
    assert r.metrics["structure_residual_before"] == r.metrics["structure_residual_after"] == res
    assert r.metrics["structure_residual_after"][0] < 1e-5     # the exact clone stays p4-equivariant
    assert r.metrics["cloned_distance"] == 0.0
    assert not torch.equal(model.kernels.detach(), kernels0)       # kernels, biases and head did train
    assert model.field_bias.detach().abs().min() > 0
    assert not torch.equal(model.head.mlp[0].weight.detach(), head0)
    assert r.metrics["n_trainable"] == 3 * 6 + 3 + sum(p.numel() for p in model.head.parameters())
    assert r.metrics["invariance_error"] < 1e-4                    # frozen exact clone: invariant logits


def test_head_only_trains_the_head_alone(lifting):
    """``head-only``: every parameter outside ``head`` (cloned basis, kernels, per-field bias) stays
    bit-identical, the head trains, the logits stay invariant. Control: a model without a head."""
    x, y = _base(48)
    task = task_from_tensors("c4-breaking", x, y, x[:16], y[:16])
    model = _net(lifting)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = finetune(model, task, mode="head-only", config=CFG)
    after = model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed and all(k.startswith("head.") for k in changed)
    assert r.metrics["n_trainable"] == sum(p.numel() for p in model.head.parameters())
    assert r.metrics["cloned_distance"] == 0.0 and r.metrics["invariance_error"] < 1e-4
    frozen = finetune(_net(lifting), task, mode="frozen", config=CFG)
    assert frozen.metrics["n_trainable"] > r.metrics["n_trainable"]     # the two readings differ
    with pytest.raises(ValueError, match="head-only.*head"):
        finetune(MLPBaseline((1, 28, 28), 20), task, mode="head-only", config=CFG)


def test_frozen_dense_clone_trains_equivariant_biases_only():
    """Frozen cloned MLP: weight and cloned bias vector bit-identical, the per-field bias trains and
    the logits stay invariant. Control: moving the dense bias vector itself breaks the symmetry."""
    from symclone.distill import DistillConfig, distill
    x, y = _base(48, seed=5)
    task = task_from_tensors("c4-breaking", x, y, x[:16], y[:16])
    teacher = create_teacher("gcnn_c4", fields=1, depth=1, size=28)
    student = create_student("mlp", teacher=teacher, seed=0)
    distill(student, teacher, cfg=DistillConfig(mode="function", solver="closed_form", n_train=900, n_eval=8,
                                                progress=False))
    off = ClonedNet(student, 20, hidden=16, bias=False)
    assert off.field_bias is None and torch.equal(off.features(x[:2]), student.forward_features(x[:2])[-1])
    model = ClonedNet(student, 20, hidden=16, structure_group=teacher.group)
    assert model.field_bias.shape == (1,)                        # 1 regular field = 4 channels
    assert select_cloned(model) == ["net.layers.0.bias", "net.layers.0.weight"]
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    r = finetune(model, task, mode="frozen", config=CFG)
    assert all(torch.equal(v, before[k]) for k, v in model.net.state_dict().items())
    assert model.field_bias.detach().abs().min() > 1e-4
    assert r.metrics["structure_residual_after"] == r.metrics["structure_residual_before"]
    assert 0 < r.metrics["invariance_error"] < 1e-4              # > 0: the logits are not constant
    with torch.no_grad():                                         # control: a non-invariant bias vector
        model.net.layers[0].bias.add_(0.5 * torch.randn(model.net.layers[0].bias.shape))
    assert invariance_error(model, task, n_samples=16) > 1e-2


def test_anchored_huge_beta_stays_near_w0_and_free_drifts(lifting):
    x, y = _base(48, seed=1)
    task = task_from_tensors("c4-breaking", x, y, x[:16], y[:16])
    drift = {}
    for mode, beta in (("anchored", 1e6), ("free", 0.0), ("anchored", 1e-9)):
        model = _net(lifting)
        w0 = model.net.layers[0].W.detach().clone()
        r = finetune(model, task, mode=mode, beta=beta, config=CFG, lr=3e-3)
        rel = float((model.net.layers[0].W.detach() - w0).norm() / w0.norm())
        assert abs(rel - r.metrics["cloned_distance"]) < 0.05 + 0.5 * rel
        drift[(mode, beta)] = r.metrics["cloned_distance"]
    assert drift[("anchored", 1e6)] < 1e-3
    assert drift[("free", 0.0)] > 5 * drift[("anchored", 1e6)]
    assert drift[("anchored", 1e-9)] > 5 * drift[("anchored", 1e6)]   # a negligible anchor does not hold


def test_anchor_penalty_values():
    m = torch.nn.Linear(3, 2)
    pen = AnchorPenalty(m, ["weight"], beta=0.5, kind="l2")
    with torch.no_grad():
        m.weight.add_(2.0)
    assert float(pen(m)) == pytest.approx(0.5 * 6 * 4.0)
    kl = AnchorPenalty(m, ["weight"], beta=1.0, kind="kl")
    assert float(kl(m)) == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        m.weight.add_(3.0)           # a per-row constant does not change the softmax: still 0
    assert float(kl(m)) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        m.weight[0, 0] += 1.0
    assert float(kl(m)) > 1e-3
    with pytest.raises(ValueError, match="anchor"):
        AnchorPenalty(m, ["weight"], beta=1.0, kind="l1")


def test_cloned_declaration_and_bad_modes():
    x, y = _base(16)
    task = task_from_tensors("c4-generalisation", x, y, x, y)
    mlp = MLPBaseline((1, 28, 28), 10)
    with pytest.raises(ValueError, match="cloned"):
        finetune(mlp, task, mode="frozen", config=CFG)
    with pytest.raises(ValueError, match="mode"):
        finetune(mlp, task, mode="thawed", config=CFG)
    with pytest.raises(ValueError, match="nothing left"):
        finetune(mlp, task, mode="frozen", cloned=lambda n: True, config=CFG)
    with pytest.raises(ValueError, match="logits"):
        finetune(MLPBaseline((1, 28, 28), 20), task, mode="free", config=CFG)
    assert select_cloned(mlp, ["net.1.*"]) == ["net.1.bias", "net.1.weight"]
    w = mlp.net[1].weight.detach().clone()
    r = finetune(mlp, task, mode="frozen", cloned=["net.1.*"], config=CFG)
    assert torch.equal(mlp.net[1].weight, w) and r.metrics["cloned_tensors"] == 2
    w3 = mlp.net[3].weight.detach().clone()
    finetune(mlp, task, mode="free", cloned=["net.1.*"], config=CFG, cloned_lr_scale=0.0)
    assert mlp.net[1].weight.requires_grad and torch.equal(mlp.net[1].weight, w)  # lr 0 on cloned tensors
    assert not torch.equal(mlp.net[3].weight, w3)


def test_symmetrized_wrapper_declares_inner_structure(lifting):
    sym = pytest.importorskip("symclone.symmetrize")
    if not hasattr(sym, "Symmetrized"):
        pytest.skip("Symmetrized not available")
    model = sym.Symmetrized(_net(lifting), "c4", "image", "trivial", sampler="uniform")
    names = select_cloned(model)
    assert names and all(n.startswith("model.net.") for n in names)
    x, y = _base(8)
    task = task_from_tensors("c4-breaking", x, y, x, y)
    assert invariance_error(model, task, n_samples=8) < 1e-5


def test_invariant_head_control():
    """The c4 head is invariant on equivariant features; a plain flatten head is not (control)."""
    head = InvariantHead((8, 6, 6), 5, rep="regular", pool="c4")
    x = torch.randn(3, 8, 6, 6)
    gx = torch.rot90(x.view(3, 2, 4, 6, 6).roll(1, 2).view(3, 8, 6, 6), 1, (-2, -1))
    assert torch.allclose(head(x), head(gx), atol=1e-5)
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(288, 5))
    assert not torch.allclose(flat(x), flat(gx), atol=1e-2)
    t2 = InvariantHead((3, 10, 10), 5, pool="t2")               # power spectrum: exact under cyclic shifts
    z = torch.randn(4, 3, 10, 10, dtype=torch.float64)
    t2 = t2.double()
    assert torch.allclose(t2(z), t2(torch.roll(z, (3, -7), (-2, -1))), atol=1e-12)
    assert not torch.allclose(t2(z), t2(torch.rot90(z, 1, (-2, -1)).flip(-1).roll(1, 1)), atol=1e-3)


def test_checkpoint_resume(tmp_path):
    x, y = _base(32)
    task = task_from_tensors("c4-breaking", x, y, x[:8], y[:8])
    torch.manual_seed(0)
    a = MLPBaseline((1, 28, 28), 20, hidden=(16,))
    b = MLPBaseline((1, 28, 28), 20, hidden=(16,))
    b.load_state_dict(a.state_dict())
    full = finetune(a, task, mode="anchored", beta=1.0, cloned=["net.1.*"], config=CFG, epochs=2)
    stem = str(tmp_path / "ck")
    finetune(b, task, mode="anchored", beta=1.0, cloned=["net.1.*"], config=CFG, epochs=1, checkpoint=stem)
    c = MLPBaseline((1, 28, 28), 20, hidden=(16,))
    c.load_state_dict(b.state_dict())   # any start: the checkpoint restores epoch-1 state
    with torch.no_grad():
        c.net[1].weight.add_(1.0)
    resumed = finetune(c, task, mode="anchored", beta=1.0, cloned=["net.1.*"], config=CFG, epochs=2,
                       checkpoint=stem)
    assert len(resumed.history) == 2
    for p, q in zip(a.parameters(), c.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_cli_finetune_on_a_cloned_run(tmp_path, lifting, capsys):
    import copy
    import json

    from symclone.cli import main
    from symclone.distill import DistillConfig, clone_run

    teacher, student = lifting
    run = tmp_path / "run"
    clone_run(run, teacher, copy.deepcopy(student), cfg=DistillConfig(mode="family", solver="closed_form",
                                                                       n_train=16, n_eval=4, eval_kernels=1,
                                                                       progress=False))
    argv = [str(run), "--task", "c4-breaking", "--mode", "anchored", "--beta", "1e6", "--dataset", "synthetic",
            "--n-train", "32", "--n-test", "16", "--kernels", "2", "--no-progress", "--finetune.epochs=1",
            "--finetune.structure_probes=1", "--finetune.n_invariance=8"]
    assert main(["finetune"] + argv) == 0
    out = json.loads((run / "finetune" / "c4-breaking-anchored-l2-beta1e+06.json").read_text())
    m = out["metrics"]
    assert set(m["accuracy"]) == {"test"} and 0.0 <= m["accuracy"]["test"] <= 1.0
    assert m["cloned_distance"] < 1e-3 and m["structure_residual_after"][0] < 1e-4
    assert (run / "finetune" / "c4-breaking-anchored-l2-beta1e+06-model.safetensors").exists()
    assert main(["finetune", str(run), "--task", "t2-breaking", "--dataset", "synthetic", "--no-progress"]) == 2
    assert "needs (1, 48, 48)" in capsys.readouterr().err


def test_zoo_models_shapes_and_invariance(lifting):
    from symclone.finetune.zoo import build_model

    x, y = _base(8)
    c4 = task_from_tensors("c4-breaking", x, y, x, y)
    t2 = task_from_tensors("t2-breaking", x, y, x, y)
    gcnn = build_model("equivariant", c4, fields=2)
    assert gcnn(c4.train.batch(torch.arange(4))[0]).shape == (4, 20)
    assert invariance_error(gcnn, c4, n_samples=8) < 1e-4
    tcnn = build_model("equivariant", t2, fields=2)
    assert invariance_error(tcnn, t2, n_samples=4) < 1e-4
    assert invariance_error(build_model("cnn", t2), t2, n_samples=4) > 1e-2      # control: not invariant
    cache = {("blocks", "gcnn_c4", (("depth", 1), ("fields", 1), ("size", 28))): lifting}
    net = build_model("cloned-blocks", c4, fields=3, students=cache)
    assert net.kernels.shape == (3, 6) and net.net is not lifting[1]               # a copy of the clone
    assert invariance_error(net, c4, n_samples=8) < 1e-4
    with pytest.raises(ValueError, match="kind"):
        build_model("resnet", c4)
