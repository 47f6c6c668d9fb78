"""SIGKILL at chosen instants of a run, then ``--resume``: the result equals the uninterrupted run bit for bit.

Covered: ``symclone clone`` (family, Adam), ``train-teacher``, ``symmetrize`` (the student trained) and
``finetune`` (anchored).

Each process runs the real CLI with ``os.replace`` wrapped so that the process kills itself (SIGKILL, no
clean-up of any kind) at its N-th file replacement, either just *before* it (the temporary file is complete
but not in place: it must be removed by the next start) or just *after* it (e.g. the checkpoint's tensors
are in place but its readable ``.json`` copy is not: the checkpoint must still resume). A chain of such
processes, each resuming the previous one's run directory, must end with the same student tensors as one
uninterrupted process, and with no temporary file left anywhere in the run directory.

Control: the kill points must really have killed (exit status -9) before the run completed, otherwise the
test would only compare two uninterrupted runs.
"""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HARNESS = r"""
import os, signal, sys
kill_at, phase = int(os.environ.get("KILL_AT", "0")), os.environ.get("KILL_PHASE", "after")
count, real_replace = 0, os.replace

def replace(src, dst, *a, **kw):
    global count
    count += 1
    if count == kill_at and phase == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst, *a, **kw)
    if count == kill_at and phase == "after":
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace
from symclone.cli import main
sys.exit(main(sys.argv[1:]))
"""

CLONE = ["clone", "--teacher", "cnn", "--student", "blocks", "--mode", "family", "--paper-layer",
         "--teacher.size=12", "--distill.solver=adam", "--distill.steps=60", "--distill.checkpoint_every=20",
         "--distill.n_eval=8", "--no-progress", "--device", "cpu"]
TEACH = ["train-teacher", "--teacher", "cnn", "--data-root", "fm", "--batch-size", "4", "--epochs", "2",
         "--checkpoint-every", "2", "--teacher-kwargs", '{"channels": 2, "depth": 1, "kernel_size": 3}',
         "--no-progress"]
SYM = ["symmetrize", "{run}", "--sampler", "uniform", "--k", "all", "--train-student", "--epochs", "3",
       "--minutes", "0", "--batch-size", "8", "--n-train", "32", "--n-eval", "16", "--lr", "1e-2", "--no-progress"]
FINETUNE = ["finetune", "{run}", "--task", "c4-generalisation", "--dataset", "synthetic", "--n-train", "64",
            "--n-test", "16", "--mode", "anchored", "--beta", "1", "--finetune.epochs=3",
            "--finetune.batch_size=16", "--no-progress"]


def _prepare(kind: str, root: Path) -> None:
    """What each command reads: Fashion-MNIST-format files, or a cloned run directory."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if kind == "train-teacher":
        from _idx import write_idx_dataset
        write_idx_dataset(root / "fm", n=16, size=28)
    elif kind == "symmetrize":
        from _ddp_jobs import make_sym_run
        for name in ("ref", "run"):
            make_sym_run(root / name)
    elif kind == "finetune":
        for name in ("ref", "run"):  # a one-layer T(2) conv cloned into an MLP (28x28, closed form)
            r = _cli(["clone", "--teacher", "cnn", "--student", "mlp", "--teacher.depth=1", "--teacher.channels=1",
                      "--no-progress", "--out", name], root)
            assert r.returncode == 0, r.stderr[-2000:]


#: per command: argv for a run directory NAME, where the result lands, and the chain of kill points
#: ((N-th replacement, before|after), each process resuming the previous one). (k, "after") on an odd k
#: leaves a checkpoint's tensors in place without its readable .json copy (formerly unresumable).
COMMANDS = {
    "clone": (lambda name: CLONE + ["--out", name], "{name}/student.safetensors",
              [(4, "after"), (2, "before"), (3, "after"), (5, "before"), (1, "before")]),
    "train-teacher": (lambda name: TEACH + ["--out", name], "{name}/teacher.safetensors",
                      [(3, "after"), (2, "before"), (3, "before"), (1, "after")]),
    "symmetrize": (lambda name: [a.replace("{run}", name) for a in SYM],
                   "{name}/symmetrize/teacher-uniform-kall-weights.safetensors",
                   [(1, "after"), (3, "before"), (1, "before"), (2, "before")]),
    "finetune": (lambda name: [a.replace("{run}", name) for a in FINETUNE],
                 "{name}/finetune/c4-generalisation-anchored-l2-beta1-model.safetensors",
                 [(1, "after"), (3, "before"), (2, "after"), (1, "before")]),
}


def _cli(args: list[str], cwd: Path, kill: tuple[int, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", KILL_AT=str(kill[0] if kill else 0),
               KILL_PHASE=kill[1] if kill else "after")
    return subprocess.run([sys.executable, "-c", HARNESS, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(path))


@pytest.mark.parametrize("kind", list(COMMANDS))
def test_killed_anywhere_resumes_to_the_same_result(tmp_path, kind):
    argv, result, kills = COMMANDS[kind]
    umask = 0o022
    old = os.umask(umask)
    try:
        _prepare(kind, tmp_path)
        ref = _cli(argv("ref"), tmp_path)
        assert ref.returncode == 0, ref.stderr[-2000:]
        killed = 0
        for i, kill in enumerate(kills):
            r = _cli(argv("run") + (["--resume"] if i else []), tmp_path, kill)
            if r.returncode == 0:
                break
            assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
            killed += 1
        assert killed >= len(kills) - 1, f"only {killed} kills landed before the run completed: the test lost its point"
        final = _cli(argv("run") + ["--resume"], tmp_path)
        assert final.returncode == 0, final.stderr[-2000:]
    finally:
        os.umask(old)
    a, b = _tensors(tmp_path / result.format(name="run")), _tensors(tmp_path / result.format(name="ref"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    run = tmp_path / "run"
    left = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert not left, f"temporary files left behind: {left}"
    for p in (run.rglob("*") if run.is_dir() else []):  # files honour the umask (0644 under 022), not 0600
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p
