"""Bad input on the command line: one line on stderr naming the argument, exit status 2, no traceback,
and nothing written (no file, no folder).

Every case runs ``symclone.cli.main`` in-process from a scratch working directory that holds one tiny
cloned run (``runs/ok``, for the commands that read a run). An uncaught exception (the traceback a bug
would show) fails the case by itself; the directory tree is compared before and after.

Control: the same command lines with the bad value replaced by a good one are accepted (see
``test_good_twins_are_accepted``), so a case cannot pass because the command refuses everything.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from symclone.cli import main

CLONE = ["clone", "--teacher", "cnn", "--student", "mlp", "--no-progress", "--teacher.size=6",
         "--teacher.depth=1", "--teacher.channels=1"]
TEACH = ["train-teacher", "--teacher", "cnn", "--no-progress"]

#: (id, argv, text the one-line message must contain)
CASES = [
    ("typo-teacher-kwarg", CLONE + ["--teacher.chanels=1", "--out", "runs/x"], "chanels"),
    ("float-size", CLONE + ["--teacher.size=28.5", "--out", "runs/x"], "size"),
    ("zero-depth", CLONE + ["--teacher.depth=0", "--out", "runs/x"], "depth"),
    ("zero-kernel", CLONE + ["--teacher.kernel_size=0", "--out", "runs/x"], "kernel_size"),
    ("typo-student-kwarg", CLONE + ["--student.widht=3", "--out", "runs/x"], "widht"),
    ("unknown-teacher", ["clone", "--teacher", "cnm", "--student", "mlp", "--out", "runs/x"], "cnm"),
    ("unknown-student", ["clone", "--teacher", "cnn", "--student", "mpl", "--out", "runs/x"], "mpl"),
    ("bad-mode", CLONE + ["--mode", "fam", "--out", "runs/x"], "--mode"),
    ("out-is-a-file", CLONE + ["--out", "afile"], "--out"),
    ("out-empty", CLONE + ["--out", ""], "--out"),
    ("out-under-a-file", CLONE + ["--out", "afile/run"], "--out"),
    ("steps-zero", CLONE + ["--distill.solver=adam", "--distill.steps=0", "--out", "runs/x"], "steps"),
    ("lr-nan", CLONE + ["--distill.solver=adam", "--distill.lr=nan", "--out", "runs/x"], "lr"),
    ("lr-negative", CLONE + ["--distill.lr=-1", "--out", "runs/x"], "lr"),
    ("batch-zero", CLONE + ["--distill.batch_size=0", "--out", "runs/x"], "batch_size"),
    ("unknown-distill-field", CLONE + ["--distill.stpes=5", "--out", "runs/x"], "stpes"),
    ("distill-int-not-float", CLONE + ["--distill.steps=2.5", "--out", "runs/x"], "steps"),
    ("unknown-override-head", CLONE + ["--optim.lr=1", "--out", "runs/x"], "optim.lr"),
    ("unknown-dataset", CLONE + ["--data", "foo", "--out", "runs/x"], "data"),
    ("missing-mnist", CLONE + ["--data", "mnist", "--data-root", "empty", "--out", "runs/x"], "MNIST"),
    ("e3nn-teacher-blocks-student", ["clone", "--teacher", "e3nn", "--student", "blocks", "--out", "runs/x"],
     "blocks"),
    ("negative-blocks", CLONE[:4] + ["blocks", "--blocks", "-1", "--teacher.size=6", "--out", "runs/x"],
     "blocks"),
    ("bad-device", CLONE + ["--device", "tpu", "--out", "runs/x"], "device"),
    ("bad-precision", CLONE + ["--precision", "fp8", "--out", "runs/x"], "--precision"),
    ("stray-argument", CLONE + ["--out", "runs/x", "extra"], "extra"),
    ("teacher-batch-zero", TEACH + ["--batch-size", "0", "--out", "runs/t"], "batch_size"),
    ("teacher-epochs-zero", TEACH + ["--epochs", "0", "--out", "runs/t"], "epochs"),
    ("teacher-lr-nan", TEACH + ["--lr", "nan", "--out", "runs/t"], "lr"),
    ("teacher-train-limit-zero", TEACH + ["--train-limit", "0", "--out", "runs/t"], "train_limit"),
    ("teacher-checkpoint-every-zero", TEACH + ["--checkpoint-every", "0", "--out", "runs/t"], "checkpoint_every"),
    ("teacher-kwargs-not-object", TEACH + ["--teacher-kwargs", "[1]", "--out", "runs/t"], "--teacher-kwargs"),
    ("teacher-kwargs-typo", TEACH + ["--teacher-kwargs", '{"chanels": 1}', "--out", "runs/t"], "chanels"),
    ("teacher-wrong-task", ["train-teacher", "--teacher", "e3nn", "--task", "fashion-mnist", "--out", "runs/t"],
     "e3nn"),
    ("teacher-missing-data", TEACH + ["--data-root", "empty", "--out", "runs/t"], "empty"),
    ("teacher-unknown-override", TEACH + ["--train.bogus=1", "--out", "runs/t"], "bogus"),
    ("teacher-out-is-a-file", TEACH + ["--out", "afile"], "--out"),
    ("teacher-size-float", TEACH + ["--teacher-kwargs", '{"size": 28.5}', "--out", "runs/t"], "size"),
    ("finetune-missing-run", ["finetune", "runs/nope", "--task", "c4-generalisation"], "runs/nope"),
    ("finetune-n-train-zero", ["finetune", "runs/ok", "--task", "c4-generalisation", "--n-train", "0"],
     "--n-train"),
    ("finetune-negative-beta", ["finetune", "runs/ok", "--task", "c4-generalisation", "--beta", "-1"], "--beta"),
    ("finetune-epochs-zero", ["finetune", "runs/ok", "--task", "c4-generalisation", "--finetune.epochs=0"],
     "epochs"),
    ("finetune-bad-task", ["finetune", "runs/ok", "--task", "c5"], "--task"),
    ("symmetrize-epochs-negative", ["symmetrize", "runs/ok", "--epochs", "-1"], "epochs"),
    ("symmetrize-k-zero", ["symmetrize", "runs/ok", "--k", "0"], "k"),
    ("symmetrize-missing-run", ["symmetrize", "runs/nope"], "runs/nope"),
    ("analyze-missing-run", ["analyze", "runs/nope"], "runs/nope"),
    ("graphs-unknown-benchmark", ["graphs", "exp-isomorphism"], "exp-isomorphism"),
    ("graphs-unknown-model", ["graphs", "exp-iso", "--models", "mlp,transfomer", "--out", "runs/g"], "transfomer"),
    ("graphs-pattern-unknown-model", ["graphs", "pattern", "--models", "transformer,gin", "--out", "runs/g"], "gin"),
    ("graphs-pattern-seeds-zero", ["graphs", "pattern", "--seeds", "0", "--out", "runs/g"], "--seeds"),
    ("graphs-pattern-epochs-zero", ["graphs", "pattern", "--pattern.epochs=0", "--out", "runs/g"], "epochs"),
    ("graphs-pattern-heads", ["graphs", "pattern", "--pattern.d_model=10", "--out", "runs/g"], "heads"),
    ("graphs-pattern-foreign-override", ["graphs", "pattern", "--classify.epochs=3", "--out", "runs/g"],
     "classify.epochs"),
    ("unknown-command", ["clonee"], "clonee"),
    ("graphs-under-torchrun", ["graphs", "exp-iso", "--out", "runs/g", "--env", "WORLD_SIZE=2"], "torchrun"),
]

#: good twins (the control): the same clone command lines with the bad value fixed are accepted
GOOD = [CLONE + ["--teacher.channels=1", "--out", "runs/good1"],
        CLONE + ["--teacher.size=7", "--distill.solver=adam", "--distill.steps=2", "--distill.lr=0.01",
                 "--out", "runs/good2"]]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    root = tmp_path_factory.mktemp("badcli")
    old = os.getcwd()
    os.chdir(root)
    try:
        assert main(CLONE + ["--out", "runs/ok"]) == 0
    finally:
        os.chdir(old)
    (root / "afile").write_text("not a folder\n")
    (root / "empty").mkdir()
    return root


@pytest.mark.parametrize("argv, needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(scratch, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(scratch)
    argv = list(argv)
    if "--env" in argv:  # test-only: "--env KEY=VALUE" sets an environment variable (e.g. torchrun's)
        i = argv.index("--env")
        key, value = argv[i + 1].split("=", 1)
        del argv[i:i + 2]
        monkeypatch.setenv(key, value)
    before = _tree(scratch)
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2, f"exit status {rc}; stderr: {err}"
    assert len(err.splitlines()) == 1, f"expected one line, got:\n{err}"
    assert needle in err, f"the message does not name {needle!r}: {err}"
    assert "Traceback" not in err
    assert _tree(scratch) == before, f"files written: {sorted(_tree(scratch) - before)}"


@pytest.mark.parametrize("argv", GOOD)
def test_good_twins_are_accepted(scratch, monkeypatch, argv):
    monkeypatch.chdir(scratch)
    assert main(argv) == 0
    assert (scratch / argv[-1] / "student.safetensors").exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("symclone ")
