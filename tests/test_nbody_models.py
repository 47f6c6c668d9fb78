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
