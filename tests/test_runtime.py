"""Device resolution, training precision and data loaders (symclone.runtime)."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from symclone.runtime import make_loader, precision_context, resolve_device


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


def test_precision_context():
    a, b = torch.randn(16, 16), torch.randn(16, 16)
    with precision_context("bf16", "cpu"):
        lo = a @ b
    assert lo.dtype == torch.bfloat16
    err = float((lo.float() - a @ b).norm() / (a @ b).norm())
    assert 1e-5 < err < 2e-2  # bf16 rounding is visible (why equivariance checks stay fp32/fp64)
    with precision_context("tf32", "cpu"):
        assert (a @ b).dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        with precision_context("fp8", "cpu"):
            pass


def test_make_loader_distributed_shards_cover_dataset():
    ds = TensorDataset(torch.arange(10))
    seen = []
    for rank in range(2):
        dl = make_loader(ds, 3, "cpu", distributed=True, shuffle=True, seed=1, rank=rank, world_size=2)
        dl.sampler.set_epoch(0)
        seen.append(torch.cat([b[0] for b in dl]).tolist())
    assert len(seen[0]) == len(seen[1]) == 5
    assert sorted(seen[0] + seen[1]) == list(range(10))
    dl = make_loader(ds, 4, "cpu", shuffle=False)
    assert not dl.pin_memory and dl.num_workers == 0
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ds, 0)


def test_bf16_training_through_distill_and_config_check():
    from symclone.distill import DistillConfig, build_pair, distill

    with pytest.raises(ValueError, match="precision"):
        DistillConfig(precision="fp8")
    errs = {}
    for prec in ("fp32", "bf16"):
        teacher, student = build_pair("cnn", "mlp", {"channels": 1, "depth": 1, "size": 6})
        cfg = DistillConfig(solver="adam", steps=100, lr=3e-2, n_train=64, n_eval=16, precision=prec,
                            progress=False, device="auto")
        rec = distill(student, teacher, "gaussian", cfg)["layers"][0]
        assert rec["loss_curve"][-1][1] < 0.5 * rec["loss_curve"][0][1]  # it trains
        errs[prec] = rec["feature_rel_error"]
        assert next(student.parameters()).dtype == torch.float32  # master weights stay fp32
    assert errs["bf16"] < 0.5 and abs(errs["bf16"] - errs["fp32"]) < 0.05 * errs["fp32"]
    assert errs["bf16"] != errs["fp32"]  # bf16 rounding reached the training forward


def test_tune_cpu_allocator_toggles():
    from symclone.runtime import cpu_allocator_tuned, tune_cpu_allocator

    ok = tune_cpu_allocator(True)
    assert cpu_allocator_tuned() == ok
    tune_cpu_allocator(False)
    assert not cpu_allocator_tuned()
