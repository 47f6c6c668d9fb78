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


# ---- --device / --precision on every training command, and in the APIs behind them ----------------------

@pytest.mark.parametrize("argv", [["clone", "--teacher", "cnn", "--student", "mlp", "--out", "x"],
                                  ["symmetrize", "runs/x"], ["finetune", "runs/x", "--task", "c4-generalisation"],
                                  ["train-teacher", "--out", "x"]])
def test_training_commands_take_device_and_precision(argv):
    from symclone.cli import build_parser

    args = build_parser().parse_args(argv + ["--device", "cpu", "--precision", "bf16"])
    assert args.device == "cpu" and args.precision == "bf16"
    with pytest.raises(SystemExit):  # argparse rejects an unknown precision before anything runs
        build_parser().parse_args(argv + ["--precision", "fp8"])


def test_train_regressor_bf16_trains_fp32_master_weights():
    from symclone.symmetrize._train import TrainConfig, train_regressor

    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=gen)
    y = x @ torch.randn(8, 3, generator=gen)
    finals = {}
    for prec in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 3)
        st = train_regressor(model, (x, y), (x[:16], y[:16]),
                             TrainConfig(lr=3e-2, batch_size=16, epochs=20, eval_every=5, cosine=False, device="cpu",
                                         precision=prec))
        assert st["curve"][-1][3] < 0.1 * st["curve"][0][3]  # it trains
        assert model.weight.dtype == torch.float32 and st["world_size"] == 1
        finals[prec] = model.weight.detach().clone()
    diff = float((finals["bf16"] - finals["fp32"]).norm() / finals["fp32"].norm())
    assert 0 < diff < 0.05  # bf16 rounding reached the training forward, and only perturbed it


def test_symmetrize_run_bf16_keeps_the_float64_equivariance_check(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _ddp_jobs import make_sym_run

    from symclone.symmetrize import SymmetrizeRunConfig, symmetrize_run

    with pytest.raises(ValueError, match="precision"):
        SymmetrizeRunConfig(precision="half")
    make_sym_run(tmp_path / "run")
    cfg = SymmetrizeRunConfig(sampler="uniform", k="all", train_student=True, epochs=2, minutes=None, batch_size=8,
                              n_train=32, n_eval=16, lr=1e-2, progress=False, device="cpu", precision="bf16",
                              ks=("all",))
    m = symmetrize_run(tmp_path / "run", cfg)
    assert m["config"]["precision"] == "bf16" and m["device"] == "cpu" and m["world_size"] == 1
    assert m["symmetrized_after_training"] < m["symmetrized_before_training"]
    # Reynolds averaging is exact: the float64 check sees ~1e-15, far below bf16's 4e-3 rounding
    assert m["equivariance_vs_k"][0]["equivariance_error"] < 1e-9
    assert not (tmp_path / "run" / "symmetrize" / "teacher-uniform-kall-checkpoint.json").exists()


def test_finetune_device_and_precision():
    from symclone.finetune import FinetuneConfig, finetune
    from symclone.finetune.tasks import task_from_tensors

    with pytest.raises(ValueError, match="precision"):
        FinetuneConfig(precision="fp16")
    gen = torch.Generator().manual_seed(2)
    x, y = torch.rand(32, 1, 28, 28, generator=gen), torch.arange(32) % 10
    task = task_from_tensors("c4-generalisation", x, y, x[:8], y[:8])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    w0 = model[1].weight.detach().clone()
    r = finetune(model, task, mode="frozen", cloned=["1.*"],
                 config=FinetuneConfig(epochs=2, batch_size=16, progress=False, eval_limit=8, device="cpu",
                                       precision="bf16"))
    assert r.metrics["device"] == "cpu" and r.metrics["precision"] == "bf16"
    assert torch.equal(model[1].weight, w0) and model[3].weight.dtype == torch.float32
    assert r.history[-1]["ce"] > 0
    with pytest.raises(ValueError, match="device"):
        finetune(model, task, mode="free", config=FinetuneConfig(epochs=1, device="tpu", progress=False))


# ---- the benchmark suite forwards --device -------------------------------------------------------------

def _suite():
    from symclone.commands.bench import load_suite

    return load_suite()


def test_bench_module_command_and_drop_rejected():
    suite = _suite()
    base, opts = suite.module_command("nbody", True, out=None, device="cuda")
    assert base[-3:] == ["--quick", "--models", "transformer,learned"] and opts == ["--device", "cuda"]
    assert suite.drop_rejected(["--device", "cpu", "--out", "o.json"],
                               "usage: ...\nx.py: error: unrecognized arguments: --device cpu") == ["--out", "o.json"]
    assert suite.drop_rejected(["--device", "cpu"], "x.py: error: argument --models: invalid") is None


def test_bench_run_module_forwards_device_and_retries_without_it(tmp_path, monkeypatch):
    import json
    import subprocess
    import types

    suite = _suite()
    calls = []

    def fake_run(cmd, **kw):  # a module that takes --out but not --device
        calls.append(cmd)
        if "--device" in cmd:
            return types.SimpleNamespace(returncode=2, stdout="", stderr="error: unrecognized arguments: --device cpu")
        out = cmd[cmd.index("--out") + 1]
        (tmp_path / "r.json").write_text(json.dumps({"ok": 1}))
        assert out == str(tmp_path / "r.json")
        return types.SimpleNamespace(returncode=0, stdout="done", stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    rec = suite.run_module("teachers", False, tmp_path / "r.json", 10.0, 1, device="cpu")
    assert calls[0][-4:] == ["--device", "cpu", "--out", str(tmp_path / "r.json")]
    assert "--device" not in calls[1] and rec["status"] == "ok" and rec["result"] == {"ok": 1}
    seen = {}

    def fake_module(name, *args, **kw):  # the suite's main hands its --device to every module it runs
        seen[name] = kw
        return {"module": name, "status": "ok"}

    monkeypatch.setattr(suite, "run_module", fake_module)
    assert suite.main(["--only", "nbody", "--device", "cpu", "--results", str(tmp_path)]) == 0
    assert seen["nbody"]["device"] == "cpu"


def test_nbody_and_clone_benchmarks_take_device():
    _suite()
    from benchmarks import nbody

    a = nbody.build_parser().parse_args(["--device", "cpu", "--precision", "bf16"])
    assert a.device == "cpu" and a.precision == "bf16"
    from benchmarks import clone

    rate = clone.matmul_rate("cpu", n=64, min_time=0.01)["flops_per_s"]  # the rate clone.py measures
    assert rate > 1e6


def test_training_precision_reaches_only_the_backbone_of_a_symmetrized_model():
    from symclone.symmetrize import Symmetrized
    from symclone.symmetrize._train import training_precision

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
    f = Symmetrized(mlp, "c4", "image", "trivial", sampler="uniform")
    seen = []
    mlp[1].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x = torch.randn(3, 1, 4, 4)
    with training_precision(f, "bf16", torch.device("cpu")):
        y = f(x)
    assert seen == [torch.bfloat16] and y.dtype == torch.float32  # backbone bf16, group average fp32
    assert "forward" not in vars(mlp)  # the patch is gone afterwards
    f(x)
    assert seen[-1] == torch.float32
    assert float((y - f(x)).norm() / f(x).norm()) < 2e-2
