"""SIGKILL at chosen instants of a run, then ``--resume``: the result equals the uninterrupted run bit for bit.

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

#: (N-th replacement, before|after) for successive processes on one run directory; each resumes the last.
#: (4, after) is a checkpoint's tensors replaced before its .json copy was written (formerly unresumable).
KILLS = [(4, "after"), (2, "before"), (3, "after"), (5, "before"), (1, "before")]


def _cli(args: list[str], cwd: Path, kill: tuple[int, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", KILL_AT=str(kill[0] if kill else 0),
               KILL_PHASE=kill[1] if kill else "after")
    return subprocess.run([sys.executable, "-c", HARNESS, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(path))


@pytest.mark.parametrize("umask", [0o022])
def test_clone_killed_anywhere_resumes_to_the_same_weights(tmp_path, umask):
    old = os.umask(umask)
    try:
        ref = _cli(CLONE + ["--out", "ref"], tmp_path)
        assert ref.returncode == 0, ref.stderr[-2000:]
        killed = 0
        for i, kill in enumerate(KILLS):
            r = _cli(CLONE + ["--out", "run"] + (["--resume"] if i else []), tmp_path, kill)
            if r.returncode == 0:
                break
            assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
            killed += 1
        assert killed >= 4, f"only {killed} kills landed before the run completed: the test lost its point"
        final = _cli(CLONE + ["--out", "run", "--resume"], tmp_path)
        assert final.returncode == 0, final.stderr[-2000:]
    finally:
        os.umask(old)
    run, ref_dir = tmp_path / "run", tmp_path / "ref"
    a, b = _tensors(run / "student.safetensors"), _tensors(ref_dir / "student.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    left = [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    assert not left, f"temporary files left behind: {left}"
    for p in run.rglob("*"):  # files honour the umask (0644 under 022), not mkstemp's 0600
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p
