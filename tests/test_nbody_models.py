"""n-body backbones (plain and pair-feature particle transformers) and the resumable regressor loop."""
from __future__ import annotations

import pytest
import torch

from torch.optim.optimizer import register_optimizer_step_post_hook

from symclone.data.nbody import NBODY_REP_IN
from symclone.symmetrize import Symmetrized
from symclone.symmetrize._models import PairTransformer, ParticleTransformer
from symclone.symmetrize._train import TrainConfig, train_regressor


def _rotation(seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def _rotate(x: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Rotate positions and velocities of (B, N, 7) particle inputs (charges unchanged)."""
    return torch.cat([x[..., :3] @ R.T, x[..., 3:6] @ R.T, x[..., 6:]], -1)


@pytest.mark.parametrize("cls", [ParticleTransformer, PairTransformer])
def test_backbones_permutation_equivariant_but_not_rotation_equivariant(cls):
    torch.manual_seed(0)
    m = cls(dim=16, depth=2, heads=2).double()
    x = torch.randn(3, 5, 7, dtype=torch.float64)
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(m(x[:, perm]), m(x)[:, perm], atol=1e-12)
    R = _rotation(1)
    err = (m(_rotate(x, R)) - m(x) @ R.T).norm() / m(x).norm()
    assert err > 1e-3      # control: the bare backbone is not O(3)-equivariant
    with pytest.raises(ValueError, match="x: expected"):
        m(torch.randn(3, 5, 6, dtype=torch.float64))


def test_pair_transformer_canonicalized_is_rotation_equivariant():
    torch.manual_seed(0)
    f = Symmetrized(PairTransformer(dim=16, depth=1, heads=2), "sn x o3", NBODY_REP_IN, "points",
                    sampler="canonical", group_kw={"n": 5}).double().eval()
    x = torch.randn(4, 5, 7, dtype=torch.float64)
    R = _rotation(2)
    y, yr = f(x), f(_rotate(x, R))
    assert (yr - y @ R.T).norm() / y.norm() < 1e-9


def test_train_regressor_resume_continues_the_same_trajectory(tmp_path):
    """Two epochs in one go == one epoch, stop, resume for the second (optimiser state restored)."""
    torch.manual_seed(0)
    x, y = torch.randn(40, 5, 7), torch.randn(40, 5, 3)
    cfg = dict(lr=1e-2, batch_size=10, eval_every=1, cosine=False)

    def fresh():
        torch.manual_seed(1)
        return PairTransformer(dim=8, depth=1, heads=2)

    uninterrupted = train_regressor(fresh(), (x, y), (x[:10], y[:10]), TrainConfig(epochs=2, **cfg))
    b = fresh()
    stem = str(tmp_path / "ck")
    train_regressor(b, (x, y), (x[:10], y[:10]), TrainConfig(epochs=1, **cfg), checkpoint=stem)
    c = fresh()
    st = train_regressor(c, (x, y), (x[:10], y[:10]), TrainConfig(epochs=2, **cfg), checkpoint=stem)
    assert st["epoch"] == 2 and len(st["curve"]) == 2
    # best-on-validation weights are returned: compare the last-epoch weights via the curve instead
    assert st["curve"][-1][3] == pytest.approx(uninterrupted["curve"][-1][3], rel=1e-6)
    # control: resuming from the same epoch-1 checkpoint with the Adam moments zeroed follows another
    # trajectory (so the resume above did restore them); without any optimiser state it is refused
    from symclone.io import CheckpointError, load_checkpoint, save_checkpoint
    b2 = fresh()
    train_regressor(b2, (x, y), (x[:10], y[:10]), TrainConfig(epochs=1, **cfg), checkpoint=stem + "_noopt")
    tensors, meta = load_checkpoint(stem + "_noopt")
    assert "optimizer" in meta and any(k.startswith("opt/") for k in tensors)
    zeroed = {k: (torch.zeros_like(v) if k.startswith("opt/") and "exp_avg" in k else v) for k, v in tensors.items()}
    save_checkpoint(stem + "_noopt", zeroed, meta)
    st2 = train_regressor(fresh(), (x, y), (x[:10], y[:10]), TrainConfig(epochs=2, **cfg), checkpoint=stem + "_noopt")
    assert st2["epoch"] == 2
    assert st2["curve"][-1][3] != pytest.approx(st["curve"][-1][3], rel=1e-6)
    meta.pop("optimizer")
    save_checkpoint(stem + "_noopt", {k: v for k, v in tensors.items() if not k.startswith("opt/")}, meta)
    with pytest.raises(CheckpointError, match="optimiser"):
        train_regressor(fresh(), (x, y), (x[:10], y[:10]), TrainConfig(epochs=2, **cfg), checkpoint=stem + "_noopt")


def test_train_regressor_reports_why_it_stopped_and_a_spent_budget_stays_spent(tmp_path):
    """stop_after, epochs and CPU budget are told apart (``symclone symmetrize --stop-after`` relies on it),
    and resuming a run whose budget is spent trains no further epoch."""
    torch.manual_seed(0)
    x, y = torch.randn(20, 5, 7), torch.randn(20, 5, 3)
    cfg = dict(lr=1e-2, batch_size=10, eval_every=1)
    model = PairTransformer(dim=8, depth=1, heads=2)
    done = train_regressor(model, (x, y), (x, y), TrainConfig(epochs=1, **cfg))
    assert done["stopped_by"] == "epochs"
    part = train_regressor(model, (x, y), (x, y), TrainConfig(epochs=3, **cfg), stop_after=1)
    assert part["stopped_by"] == "stop_after" and part["epoch"] == 1
    stem = str(tmp_path / "ck")
    tiny = TrainConfig(epochs=50, minutes=1e-9, **cfg)          # budget spent after the first epoch
    first = train_regressor(model, (x, y), (x, y), tiny, checkpoint=stem, stop_after=10)
    assert first["stopped_by"] == "budget" and first["epoch"] == 1
    again = train_regressor(model, (x, y), (x, y), tiny, checkpoint=stem, stop_after=10)
    assert again["stopped_by"] == "budget" and again["epoch"] == 1   # no extra epoch on resume


def test_train_regressor_model_does_not_depend_on_the_machines_speed(monkeypatch):
    """The schedule (cosine over epochs) never reads a clock: with a CPU clock running 1000x faster (a
    slow machine) the trained weights are bit-identical. Control: with a ``minutes`` cap the slow
    clock stops the run early and the weights differ."""
    import time as _time
    torch.manual_seed(0)
    x, y = torch.randn(30, 5, 7), torch.randn(30, 5, 3)
    # a generous cap the run never reaches: it must not shape the schedule either (it used to: the cosine
    # ran over max(epoch fraction, CPU fraction), so a slower machine decayed the learning rate sooner)
    cfg = TrainConfig(epochs=3, lr=1e-2, batch_size=10, eval_every=1, cosine=True, minutes=1000.0)

    def trained(cfg):
        torch.manual_seed(1)
        m = PairTransformer(dim=8, depth=1, heads=2)
        st = train_regressor(m, (x, y), (x[:10], y[:10]), cfg)
        return st, {k: v.clone() for k, v in m.state_dict().items()}

    normal, w_normal = trained(cfg)
    real = _time.process_time
    start = real()
    monkeypatch.setattr(_time, "process_time", lambda: start + 1000.0 * (real() - start))
    slow, w_slow = trained(cfg)
    # same epochs, training losses and validation MSEs (the CPU-seconds column differs, as it should)
    assert [(r[0], r[2], r[3]) for r in normal["curve"]] == [(r[0], r[2], r[3]) for r in slow["curve"]]
    assert all(torch.equal(w_normal[k], w_slow[k]) for k in w_normal)
    assert slow["stopped_by"] == normal["stopped_by"] == "epochs"
    capped, w_capped = trained(TrainConfig(**{**cfg.__dict__, "minutes": 1e-3}))
    assert capped["stopped_by"] == "budget" and capped["epoch"] < 3


def test_train_regressor_schedule_ignores_the_cpu_clock(monkeypatch):
    """The learning rate at every step is a function of (epoch, step) alone. A clock on which every
    reading is 1000 CPU-seconds later than the last (an extremely slow machine) leaves the first epoch's
    schedule unchanged; the cap still stops that run after it (the old schedule, max(epoch fraction,
    CPU fraction), jumped to the end of the cosine at once)."""
    import time as _time
    import symclone.symmetrize._train as train_mod
    torch.manual_seed(0)
    x, y = torch.randn(30, 5, 7), torch.randn(30, 5, 3)
    cfg = TrainConfig(epochs=3, lr=1e-2, batch_size=10, eval_every=1, cosine=True, minutes=10.0)
    seen: list = []
    real_cosine = train_mod.cosine_lr
    monkeypatch.setattr(train_mod, "cosine_lr", lambda lr, t, total, floor=0.0: (seen.append(t / total),
                                                                                 real_cosine(lr, t, total, floor))[1])

    def fractions():
        seen.clear()
        torch.manual_seed(1)
        st = train_regressor(PairTransformer(dim=8, depth=1, heads=2), (x, y), (x[:10], y[:10]), cfg)
        return st, list(seen)

    normal, f_normal = fractions()
    assert normal["stopped_by"] == "epochs" and f_normal[:3] == [0.0, 1 / 9, 2 / 9]
    ticks = iter(range(10 ** 6))
    monkeypatch.setattr(_time, "process_time", lambda: 1000.0 * next(ticks))
    slow, f_slow = fractions()
    assert slow["stopped_by"] == "budget" and slow["epoch"] == 1
    assert f_slow == f_normal[:3]


def _assert_exact_and_trainable(kw: dict, x: torch.Tensor) -> None:
    """``PairTransformer(**kw)`` symmetrized by the canonical frame is exactly O(3)-equivariant, and under the
    learned sampler its gradients stay finite."""
    f = Symmetrized(PairTransformer(**kw), "sn x o3", NBODY_REP_IN, "points", sampler="canonical",
                    group_kw={"n": 5}).double().eval()
    R = _rotation(3)
    y = f(x)
    assert (f(_rotate(x, R)) - y @ R.T).norm() / y.norm() < 1e-9
    g = Symmetrized(PairTransformer(**kw), "sn x o3", NBODY_REP_IN, "points", sampler="learned",
                    group_kw={"n": 5}).double().train()
    out, aux = g.forward_with_aux(x)
    (out.pow(2).mean() + aux).backward()
    assert all(torch.isfinite(p.grad).all() for p in g.parameters() if p.grad is not None)


def test_pair_transformer_levers_keep_the_symmetry_and_mean_what_they_say():
    torch.manual_seed(0)
    kw = dict(dim=16, depth=1, heads=2, center=True, velocity_step=True, charge_pairs=True, dropout=0.1)
    m = PairTransformer(**kw).double().eval()
    x = torch.randn(3, 5, 7, dtype=torch.float64)
    x[..., 6] = torch.randint(0, 2, (3, 5)).double() * 2 - 1
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(m(x[:, perm]), m(x)[:, perm], atol=1e-12)
    shift = torch.tensor([1.5, -2.0, 0.25, 0, 0, 0, 0], dtype=torch.float64)
    assert torch.allclose(m(x + shift), m(x) + shift[:3], atol=1e-10)          # centred: translation-equivariant
    plain = PairTransformer(**(kw | dict(center=False))).double().eval()
    assert (plain(x + shift) - plain(x) - shift[:3]).abs().max() > 1e-3         # control: not without centring
    # velocity step: with a zero read-out the prediction is exactly p + tau v
    with torch.no_grad():
        m.head.weight.zero_(), m.head.bias.zero_(), m.tau.fill_(0.75)
    assert torch.allclose(m(x), x[..., :3] + 0.75 * x[..., 3:6], atol=1e-12)
    # charge pairs: the features hold q_i q_j and the clipped pair force, zero on the diagonal
    e = m._pair_features(x)
    qq = x[..., 6].unsqueeze(2) * x[..., 6].unsqueeze(1)
    assert torch.equal(e[..., 8], qq)
    d = x[:, 0, :3] - x[:, 1, :3]
    force = (qq[:, 0, 1, None] * d / d.norm(dim=-1, keepdim=True) ** 3).clamp(-100, 100)
    assert torch.allclose(e[:, 0, 1, 9:12], force, atol=1e-12)
    assert torch.equal(e[:, 2, 2, 9:12], torch.zeros(3, 3, dtype=torch.float64))
    # symmetrized (canonical frame): exactly O(3)-equivariant with every lever on; gradients stay finite
    _assert_exact_and_trainable(kw, x)
    # charge-flip invariance: exact with the option, not without (control)
    flip = x.clone()
    flip[..., 6] = -flip[..., 6]
    inv = PairTransformer(**(kw | dict(charge_flip_invariant=True))).double().eval()
    assert torch.allclose(inv(flip), inv(x), atol=1e-12)
    assert (plain(flip) - plain(x)).abs().max() > 1e-6                          # control: not without it
    with pytest.raises(ValueError, match="velocity_step"):
        PairTransformer(in_dim=4, velocity_step=True)
    with pytest.raises(ValueError, match="dropout"):
        PairTransformer(dropout=1.0)


def test_pair_transformer_refine_reads_pairs_at_the_estimated_positions():
    """``refine``: block l + 1 sees the pair features of ``p + tau v + W_l LN(h)`` (recomputed here by hand),
    the model keeps its permutation / translation / O(3) symmetry, and depth 1 has nothing to refine."""
    torch.manual_seed(0)
    kw = dict(dim=16, depth=2, heads=2, center=True, velocity_step=True, charge_pairs=True, refine=True)
    m = PairTransformer(**kw).double().eval()
    x = torch.randn(3, 5, 7, dtype=torch.float64)
    x[..., 6] = torch.randint(0, 2, (3, 5)).double() * 2 - 1
    with torch.no_grad():
        m.refine_heads[0][1].weight.normal_()                  # a non-zero read-out after block 0
    seen = []
    hook = m.blocks[1].register_forward_pre_hook(lambda mod, args: seen.append(args[1]))
    try:
        m(x)
    finally:
        hook.remove()
    h0 = m.blocks[0](m.embed(torch.cat([x[..., :3] - x[..., :3].mean(1, keepdim=True), x[..., 3:]], -1)),
                     m.pair_embed(m._pair_features(x)))
    p_hat = x[..., :3] + m.tau * x[..., 3:6] + m.refine_heads[0](h0)
    expected = m.pair_embed(m._pair_features(x)) + m.refine_embed(m._pair_features(torch.cat([p_hat, x[..., 3:]], -1)))
    assert torch.allclose(seen[0], expected, atol=1e-12)
    assert (seen[0] - m.pair_embed(m._pair_features(x))).abs().max() > 1e-3    # control: really re-read
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(m(x[:, perm]), m(x)[:, perm], atol=1e-12)
    shift = torch.tensor([1.5, -2.0, 0.25, 0, 0, 0, 0], dtype=torch.float64)
    assert torch.allclose(m(x + shift), m(x) + shift[:3], atol=1e-10)
    f = Symmetrized(PairTransformer(**kw), "sn x o3", NBODY_REP_IN, "points", sampler="canonical",
                    group_kw={"n": 5}).double().eval()
    R = _rotation(3)
    y = f(x)
    assert (f(_rotate(x, R)) - y @ R.T).norm() / y.norm() < 1e-9
    assert PairTransformer(**(kw | dict(depth=1))).refine_embed is None


def test_edge_messages_are_the_mlp_of_both_tokens_and_their_pair():
    """``edge_messages``: each block adds ``Σ_{j≠i} W2 gelu(A h_i + B h_j + C e_ij)`` (recomputed by a loop);
    the model stays permutation-equivariant."""
    from symclone.symmetrize._models import _EdgeMessages
    torch.manual_seed(0)
    msg = _EdgeMessages(8, 4).double()
    h, pair = torch.randn(2, 4, 8, dtype=torch.float64), torch.randn(2, 4, 4, 4, dtype=torch.float64)
    expected = torch.zeros(2, 4, 8, dtype=torch.float64)
    for i in range(4):
        for j in range(4):
            if i != j:
                z = msg.receiver(h[:, i]) + msg.sender(h[:, j]) + msg.edge(pair[:, i, j])
                expected[:, i] += torch.nn.functional.gelu(z) @ msg.out.weight.T
    expected += msg.out.bias
    assert torch.allclose(msg(h, pair), expected, atol=1e-12)
    m = PairTransformer(dim=16, depth=2, heads=2, edge_messages=True, charge_pairs=True).double().eval()
    x = torch.randn(3, 5, 7, dtype=torch.float64)
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(m(x[:, perm]), m(x)[:, perm], atol=1e-12)
    assert m.blocks[0].edges is not None and PairTransformer(dim=16, depth=1, heads=2).blocks[0].edges is None


def test_encounter_features_find_the_closest_approach_and_keep_the_symmetry():
    """``encounter``: ``t*`` and ``‖r(t*)‖`` match a dense search over ``[0, T]`` of the straight-line motion; the
    symmetrized model stays exactly O(3)-equivariant and the learned sampler's gradients stay finite."""
    torch.manual_seed(0)
    T = 1.0
    kw = dict(dim=16, depth=1, heads=2, velocity_step=True, charge_pairs=True, encounter=True, frame_time=T)
    m = PairTransformer(**kw).double().eval()
    x = torch.randn(3, 5, 7, dtype=torch.float64)
    x[..., 6] = torch.randint(0, 2, (3, 5)).double() * 2 - 1
    e = m._pair_features(x)[..., -8:]                                     # log r, r·w/r, |w|, t*/T, log d*, r(t*)
    r = x[:, :, None, :3] - x[:, None, :, :3]
    w = x[:, :, None, 3:6] - x[:, None, :, 3:6]
    ts = torch.linspace(0, T, 20001, dtype=torch.float64)
    d = (r[..., None, :] + ts[:, None] * w[..., None, :]).norm(dim=-1)    # (B, N, N, t)
    best = d.argmin(-1)
    off = ~torch.eye(5, dtype=torch.bool)
    assert torch.allclose(e[..., 3][:, off], ts[best][:, off] / T, atol=1e-4)
    assert torch.allclose(e[..., 4][:, off], d.min(-1).values.log()[:, off], atol=1e-6)
    assert torch.allclose(e[..., 0][:, off], r.norm(dim=-1).log()[:, off], atol=1e-12)
    assert (e[:, 1, 1] == 0).all()
    _assert_exact_and_trainable(kw, x)
    with pytest.raises(ValueError, match="encounter"):
        PairTransformer(in_dim=4, encounter=True)


def test_galilean_boost_is_a_symmetry_of_the_simulator_and_exact_in_the_model():
    """Boosting every velocity by ``u`` moves the output frame by ``T u`` in the simulator (checked by
    integrating), and ``galilean=True`` makes the model (bare and symmetrized) exactly equivariant to it;
    control: the same model without the option is not."""
    import numpy as np

    from symclone.data.nbody import NBodyConfig, integrate, simulate
    cfg = NBodyConfig(steps=500, frame_in=1, frame_out=3)
    start = simulate(4, seed=3, cfg=NBodyConfig(steps=300, frame_in=0, frame_out=1))
    loc0, vel0, q = start["loc"][:, 0], start["vel"][:, 0], start["charges"]
    u = np.array([0.3, -0.2, 0.1])
    base, boosted = integrate(loc0, vel0, q, cfg), integrate(loc0, vel0 + u, q, cfg)
    moved = lambda run: run["loc"][:, cfg.frame_out] - run["loc"][:, cfg.frame_in]
    assert np.allclose(moved(boosted), moved(base) + cfg.frame_time * u, atol=1e-9)
    assert np.abs(moved(base) - cfg.frame_time * base["vel"][:, cfg.frame_in]).max() > 1e-3   # forces act
    torch.manual_seed(0)
    kw = dict(dim=16, depth=2, heads=2, velocity_step=True, charge_pairs=True, refine=True, galilean=True,
              frame_time=cfg.frame_time)
    x = torch.randn(3, 5, 7, dtype=torch.float64)
    x[..., 6] = torch.randint(0, 2, (3, 5)).double() * 2 - 1
    boost = torch.zeros(7, dtype=torch.float64)
    boost[3:6] = torch.tensor([0.3, -0.2, 0.1])
    m = PairTransformer(**kw).double().eval()
    assert torch.allclose(m(x + boost), m(x) + cfg.frame_time * boost[3:6], atol=1e-10)
    # uniform frames (independent of the input): equivariant draw by draw, i.e. for the same random frames
    f = Symmetrized(PairTransformer(**kw), "sn x o3", NBODY_REP_IN, "points", sampler="uniform", k_eval=3,
                    group_kw={"n": 5}).double().eval()
    torch.manual_seed(1)
    y_boosted = f(x + boost)
    torch.manual_seed(1)
    assert torch.allclose(y_boosted, f(x) + cfg.frame_time * boost[3:6], atol=1e-10)
    plain = PairTransformer(**(kw | dict(galilean=False))).double().eval()
    assert (plain(x + boost) - plain(x) - cfg.frame_time * boost[3:6]).abs().max() > 1e-3   # control
    with pytest.raises(ValueError, match="galilean"):
        PairTransformer(in_dim=4, galilean=True)


def test_train_regressor_ema_validates_and_returns_the_average(tmp_path):
    """``ema = d``: the returned weights are the running average of the per-step weights (recomputed here),
    not the last weights; resuming restores the average (same curve as the uninterrupted run)."""
    torch.manual_seed(0)
    x, y = torch.randn(40, 5, 7), torch.randn(40, 5, 3)
    cfg = dict(lr=1e-2, batch_size=10, eval_every=1, cosine=False, ema=0.5)

    def fresh():
        torch.manual_seed(1)
        return PairTransformer(dim=8, depth=1, heads=2)

    steps = []   # weights after every optimiser step, recorded through a hook on the optimiser
    m = fresh()
    avg = {k: v.clone() for k, v in m.state_dict().items()}
    hook = register_optimizer_step_post_hook(
        lambda opt, a, kw: steps.append({k: v.detach().clone() for k, v in m.state_dict().items()}))
    try:
        st = train_regressor(m, (x, y), (x, y), TrainConfig(epochs=1, **cfg))
    finally:
        hook.remove()
    assert len(steps) == 4
    for s in steps:
        avg = {k: 0.5 * avg[k] + 0.5 * s[k] for k in avg}
    assert all(torch.allclose(m.state_dict()[k], avg[k], atol=1e-6) for k in avg)
    assert not torch.allclose(m.state_dict()["head.weight"], steps[-1]["head.weight"])   # not the last weights
    # resume: two epochs in one go == one epoch, stop, resume (the average comes back from the checkpoint)
    two = train_regressor(fresh(), (x, y), (x, y), TrainConfig(epochs=2, **cfg))
    stem = str(tmp_path / "ema")
    train_regressor(fresh(), (x, y), (x, y), TrainConfig(epochs=2, **cfg), checkpoint=stem, stop_after=1)
    resumed = train_regressor(fresh(), (x, y), (x, y), TrainConfig(epochs=2, **cfg), checkpoint=stem)
    assert resumed["curve"][-1][3] == pytest.approx(two["curve"][-1][3], rel=1e-6)
    assert st["best_valid"] == pytest.approx(st["curve"][-1][3])
    with pytest.raises(ValueError, match="ema"):
        TrainConfig(ema=1.0)
