"""n-body backbones (plain and pair-feature particle transformers) and the resumable regressor loop."""
from __future__ import annotations

import pytest
import torch

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
