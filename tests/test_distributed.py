"""DDP (torchrun, gloo, 2 CPU processes) equals a single-process run with the same global batch.

The reference runs in this process while the torchrun job runs; both clone with
``symclone.distill.distill`` (and train with ``symclone.trainer.fit``, the CLI, fine-tuning). Both sides train in float64, so the different order in which two
processes sum gradients costs ~1e-15 relative, on any CPU (in float32, Adam amplified the same rounding
to a CPU-dependent 1e-5); the tolerance is 1e-9. Controls: each job must have moved its weights by more
than 1e-3 (else the comparison is vacuous), and one rank's shard alone (half the global batch) must
differ by more than 1e-3, so a wrong gradient average fails.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ddp_jobs import (CLI_INITIAL, CLI_JOBS, DDP_EQUAL_TOL, JOBS, SYM_ARGS, SYM_CHECKPOINT,  # noqa: E402
                       SYM_METRICS, SYM_WEIGHTS, TEACHER_ARGS, build, build_finetune, build_symmetrized,
                       float64_default, make_sym_run, teacher_data, teacher_params)

from symclone.distill import distill  # noqa: E402
from symclone.distributed import DistributedContext, relative_mse  # noqa: E402
from symclone.trainer import fit  # noqa: E402

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rel_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-12)) for k in b if b[k].is_floating_point())


def _reference(name: str, batch_size: int = 8) -> dict:
    teacher, student, cfg = build(name, batch_size)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    distill(student, teacher, None, cfg)
    return {"after": student.state_dict(), "before": before}


def _references(ref_dir: Path) -> dict:
    """Every job in this process (one rank, the whole global batch); runs while the torchrun job runs."""
    refs = {name: _reference(name) for name in JOBS}
    refs["half"] = _reference("family", batch_size=4)
    model, data, loss_fn = build_symmetrized()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, data, loss_fn, epochs=2, batch_size=8, lr=1e-2, progress=False)
    refs["symmetrized"] = {"after": model.state_dict(), "before": before}
    from symclone.cli import main as cli
    from symclone.finetune import finetune

    model, task, kw = build_finetune()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    finetune(model, task, **kw)
    refs["finetune"] = {"after": model.state_dict(), "before": before}
    for name, argv in CLI_JOBS.items():
        assert cli(argv + ["--out", str(ref_dir / name)]) == 0
        refs[name] = {"after": load_file(str(ref_dir / name / "student.safetensors")),
                      "before": CLI_INITIAL[name]().state_dict()}  # students are built from fixed seeds
    for name, extra in (("sym_cli", []), ("sym_before", ["--epochs", "0"])):  # one process; untrained control
        assert cli(["symmetrize", str(ref_dir / name)] + SYM_ARGS + extra) == 0
    refs["sym_cli"] = {"after": load_file(str(ref_dir / "sym_cli" / SYM_WEIGHTS)),
                       "before": load_file(str(ref_dir / "sym_before" / SYM_WEIGHTS))}
    assert cli(TEACHER_ARGS + ["--data-root", str(ref_dir / "fm"), "--out", str(ref_dir / "cli_teacher")]) == 0
    refs["cli_teacher"] = {"after": teacher_params(ref_dir / "cli_teacher" / "teacher"), "before": teacher_params()}
    return refs


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out, ref_dir = tmp_path_factory.mktemp("ddp"), tmp_path_factory.mktemp("ref")
    for name in ("sym_run", "sym_resumed"):  # run directories for `symclone symmetrize` under torchrun
        make_sym_run(out / name)
    for name in ("sym_cli", "sym_before"):  # and for the one-process reference (escnn builds in float32)
        make_sym_run(ref_dir / name)
    teacher_data(out / "fm")  # the same tiny Fashion-MNIST-format files for train-teacher on both sides
    teacher_data(ref_dir / "fm")
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(HERE / "ddp_worker.py"), str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with float64_default():  # the worker trains in float64 too
        refs = _references(ref_dir)
    log, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, log[-3000:]
    got = {p.stem: load_file(str(p)) for p in out.glob("*.safetensors")}
    got["sym_cli"] = load_file(str(out / "sym_run" / SYM_WEIGHTS))
    got["sym_resumed"] = load_file(str(out / "sym_resumed" / SYM_WEIGHTS))
    for name in ("sym_run", "sym_resumed"):  # rank 0 wrote the metrics, from a 2-process DDP run
        m = json.loads((out / name / SYM_METRICS).read_text())
        assert m["world_size"] == 2 and m["train"]["world_size"] == 2 and m["train"]["epoch"] == 2
        assert not (out / name / SYM_CHECKPOINT).exists()
    assert json.loads((out / "cli_teacher" / "metrics.json").read_text())["world_size"] == 2
    for name in CLI_JOBS:
        got[name] = load_file(str(out / name / "student.safetensors"))
        assert (out / name / "checkpoints" / "last.json").exists()
        assert json.loads((out / name / "metrics.json").read_text())["layers"][0]["steps"] == 6
    return got, refs


@pytest.mark.parametrize("name", JOBS + ("symmetrized", "finetune", "sym_cli", "cli_teacher") + tuple(CLI_JOBS))
def test_two_processes_equal_one(ddp_results, name):
    got, refs = ddp_results
    ref = refs[name]
    moved = _rel_diff(ref["after"], ref["before"])
    assert moved > 1e-3, "training did not change the student; the comparison would be vacuous"
    assert all(v.dtype == torch.float64 for v in got[name].values() if v.is_floating_point())
    print(f"{name}: moved {moved:.3g}, 2 processes vs 1: {_rel_diff(got[name], ref['after']):.3g}")
    assert _rel_diff(got[name], ref["after"]) < DDP_EQUAL_TOL


def test_distributed_resume_matches_uninterrupted(ddp_results):
    got, _ = ddp_results
    # "symmetrized" (trainer.fit) was also stopped after epoch 1 and resumed in the worker: compared with
    # the uninterrupted one-process run in test_two_processes_equal_one
    assert _rel_diff(got["sym_resumed"], got["sym_cli"]) < 1e-6  # symclone symmetrize --stop-after 1, --resume


def test_control_shard_alone_differs(ddp_results):
    got, refs = ddp_results
    assert _rel_diff(refs["half"]["after"], got["family"]) > 1e-3


def test_relative_mse_single_process_and_indivisible_batch():
    pred, y = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.0])
    assert float(relative_mse(pred, y)) == pytest.approx(0.5)
    ctx = DistributedContext(rank=1, world_size=2)
    assert ctx.shard(torch.arange(6)).tolist() == [3, 4, 5]
    with pytest.raises(ValueError, match="divisible"):
        ctx.shard(torch.arange(5))


def test_from_env_errors():
    with pytest.raises(ValueError, match="RANK"):
        DistributedContext.from_env(device="cpu", env={"WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        DistributedContext.from_env(device="cpu", env={"WORLD_SIZE": "two"})


def test_single_process_fit_resume_equals_uninterrupted(tmp_path):
    def run(stem, **kw):
        model, data, loss_fn = build_symmetrized()
        r = fit(model, data, loss_fn, epochs=2, batch_size=8, lr=1e-2, progress=False, checkpoint=stem, **kw)
        return model.state_dict(), r

    full, _ = run(tmp_path / "full")
    run(tmp_path / "split", stop_after=1)
    resumed, r = run(tmp_path / "split", resume=True)
    assert r["resumed_from"] == 1 and r["epochs_done"] == 2
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    before, _ = run(tmp_path / "none", stop_after=0)  # control: the comparison is not vacuous
    assert _rel_diff(full, before) > 1e-3
