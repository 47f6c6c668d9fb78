"""train-teacher: tiny end-to-end runs, invariance of the trained classifier, resume, CLI."""
from __future__ import annotations

import json

import pytest
import torch

from symclone.cli import main
from symclone.io import read_json
from symclone.teachers import load_teacher
from symclone.teachers.training import TeacherTrainConfig, train_teacher


TINY = dict(fields=1, depth=1, kernel_size=3)


def _idx_root(tmp_path, n: int) -> str:
    """A Fashion-MNIST-format folder of ``n`` random images written by the test: no installed dataset needed."""
    from _idx import write_idx_dataset
    root = tmp_path / "fm"
    write_idx_dataset(root, n=n, size=28)
    return str(root)


def test_train_gcnn_resume_is_exact_and_invariant(tmp_path):
    base = dict(teacher="gcnn_c4", task="fashion-mnist", teacher_kwargs=TINY, batch_size=32, train_limit=96,
                test_limit=40, checkpoint_every=2, progress=False, data_root=_idx_root(tmp_path, 96))
    full = train_teacher(TeacherTrainConfig(epochs=2, **base), tmp_path / "full")
    train_teacher(TeacherTrainConfig(epochs=1, **base), tmp_path / "split")
    with pytest.raises(ValueError, match="resume"):
        train_teacher(TeacherTrainConfig(epochs=2, **base), tmp_path / "split")
    resumed = train_teacher(TeacherTrainConfig(epochs=2, **base), tmp_path / "split", resume=True)
    assert resumed["steps"] == full["steps"] == 6
    assert resumed["loss_curve"] == full["loss_curve"]
    a, b = load_teacher(tmp_path / "full" / "teacher"), load_teacher(tmp_path / "split" / "teacher")
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    # a p4-invariant classifier predicts the same class for every rotation of an image
    acc = full["test_accuracy_by_rotation"]
    assert max(acc) - min(acc) <= 1 / 40 + 1e-12
    assert abs(full["test_accuracy_rotated"] - full["test_accuracy_upright"]) <= 1 / 40 + 1e-12
    m = read_json(tmp_path / "full" / "metrics.json")
    assert m["n_train"] == 96 and len(m["loss_curve"]) == 6


def test_cli_train_teacher_cnn(tmp_path, capsys):
    out = tmp_path / "cnn"
    rc = main(["train-teacher", "--teacher", "cnn", "--out", str(out), "--train-limit", "64", "--test-limit", "16",
               "--data-root", _idx_root(tmp_path, 64),
               "--teacher-kwargs", json.dumps(dict(channels=2, depth=1, kernel_size=3)), "--no-progress",
               "--train.weight_decay=0"])
    assert rc == 0 and "upright test accuracy" in capsys.readouterr().out
    assert read_json(out / "metrics.json")["config"]["weight_decay"] == 0.0
    assert main(["train-teacher", "--teacher", "cnn", "--out", str(tmp_path / "x"), "--teacher-kwargs", "[1]"]) == 2
    assert main(["train-teacher", "--teacher", "e3nn", "--task", "fashion-mnist", "--out", str(tmp_path / "y")]) == 2


def test_train_e3nn_nbody_tiny(tmp_path):
    cfg = TeacherTrainConfig(teacher="e3nn", task="nbody", teacher_kwargs=dict(mul=2, depth=2), nbody_size="tiny",
                             batch_size=8, epochs=1, progress=False)
    m = train_teacher(cfg, tmp_path / "nb")
    assert m["steps"] == 2 and m["n_test"] == 8
    # O(3)-equivariant teacher: rotating the test systems does not change the error
    assert abs(m["test_mse"] - m["test_mse_rotated"]) < 1e-4 * max(1.0, m["test_mse"])


# --- --data-root, and resume with a corrupt / incomplete / mismatched training state ------------------

CNN_TINY = dict(channels=2, depth=1, kernel_size=3)


def _tiny_run(tmp_path, **over):
    from _idx import write_idx_dataset
    root = tmp_path / "fm"
    if not root.exists():
        write_idx_dataset(root, n=8, size=28)
    base = dict(teacher="cnn", task="fashion-mnist", teacher_kwargs=CNN_TINY, batch_size=4, epochs=1,
                checkpoint_every=1, progress=False, data_root=str(root))
    return TeacherTrainConfig(**{**base, **over})


def test_cli_train_teacher_data_root(tmp_path, capsys):
    from _idx import write_idx_dataset
    write_idx_dataset(tmp_path / "fm", n=8, size=28)
    out = tmp_path / "run"
    rc = main(["train-teacher", "--teacher", "cnn", "--out", str(out), "--data-root", str(tmp_path / "fm"),
               "--batch-size", "4", "--teacher-kwargs", json.dumps(CNN_TINY), "--no-progress"])
    assert rc == 0 and "(8 test images)" in capsys.readouterr().out
    m = read_json(out / "metrics.json")         # the 8 images under --data-root, not the installed 60,000
    assert m["n_train"] == 8 and m["n_test"] == 8 and m["steps"] == 2
    assert m["config"]["data_root"] == str(tmp_path / "fm")
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["train-teacher", "--teacher", "cnn", "--out", str(tmp_path / "x"), "--data-root", str(empty),
               "--teacher-kwargs", json.dumps(CNN_TINY), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "apt-get install dataset-fashion-mnist" in err and str(empty) in err
    assert not (tmp_path / "x").exists()


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_resume_rejects_corrupt_or_mismatched_state_and_writes_nothing(tmp_path):
    from symclone.io import CheckpointError
    out = tmp_path / "run"
    train_teacher(_tiny_run(tmp_path), out)
    good = _snapshot(out)
    assert {"train_state.json", "train_state.safetensors", "teacher.json", "metrics.json"} <= set(good)

    def expect(match, cfg=None, mutate=None):
        for name, data in good.items():          # start each case from the good run
            (out / name).write_bytes(data)
        for name in set(_snapshot(out)) - set(good):
            (out / name).unlink()
        if mutate:
            mutate()
        before = _snapshot(out)
        with pytest.raises(CheckpointError, match=match):
            train_teacher(cfg or _tiny_run(tmp_path, epochs=2), out, resume=True)
        assert _snapshot(out) == before          # nothing overwritten, nothing added

    from _ckpt import edit_meta, set_meta
    stem, state_st = out / "train_state", out / "train_state.safetensors"
    expect(r"train_state\.safetensors's metadata is not valid JSON", mutate=lambda: set_meta(stem, '{"step": 2, "opt'))
    expect(r"train_state\.safetensors's metadata is not a JSON object", mutate=lambda: set_meta(stem, [1, 2]))
    expect(r"train_state\.safetensors is not a training state", mutate=lambda: set_meta(stem, {"epoch": 1}))
    expect(r"train_state\.safetensors is corrupt",
           mutate=lambda: state_st.write_bytes(good["train_state.safetensors"][:50]))
    expect(r"incomplete.*train_state\.safetensors is missing", mutate=state_st.unlink)
    expect(r"train_state\.safetensors was written for teacher",
           cfg=_tiny_run(tmp_path, epochs=2, teacher_kwargs=dict(CNN_TINY, channels=3)))
    expect(r"train_state\.safetensors was written with a different training config \(batch_size: saved 4, now 2",
           cfg=_tiny_run(tmp_path, epochs=2, batch_size=2))
    expect(r"optimizer_lr", cfg=_tiny_run(tmp_path, epochs=2, optimizer_lr=1e-2))
    expect(r"past the 2 steps", mutate=lambda: edit_meta(stem, lambda m: m.update(step=5)), cfg=_tiny_run(tmp_path))
    # the readable copy train_state.json is not what resume reads: a stale or garbled copy changes nothing
    expect(r"train_state\.safetensors was written with a different training config",
           mutate=lambda: (out / "train_state.json").write_text("not json"), cfg=_tiny_run(tmp_path, epochs=2, batch_size=2))
    # tensors renamed in a valid safetensors file: the file is named, the teacher is not half-loaded
    from safetensors.torch import load, save
    t = load(good["train_state.safetensors"])
    from symclone.io import load_checkpoint
    meta_text = json.dumps(load_checkpoint(stem)[1])
    expect(r"train_state\.safetensors.*does not match the teacher",
           mutate=lambda: state_st.write_bytes(save({k.replace("teacher.", "teacher.x"): v for k, v in t.items()},
                                                    metadata={"symclone.meta": meta_text})))
    # the untouched state still resumes
    for name, data in good.items():
        (out / name).write_bytes(data)
    assert train_teacher(_tiny_run(tmp_path, epochs=2), out, resume=True)["steps"] == 4


def test_cli_resume_with_corrupt_state_names_the_file(tmp_path, capsys):
    from _idx import write_idx_dataset
    write_idx_dataset(tmp_path / "fm", n=8, size=28)
    out = tmp_path / "run"
    args = ["train-teacher", "--teacher", "cnn", "--out", str(out), "--data-root", str(tmp_path / "fm"),
            "--batch-size", "4", "--teacher-kwargs", json.dumps(CNN_TINY), "--no-progress"]
    assert main(args) == 0
    from _ckpt import set_meta
    set_meta(out / "train_state", "not json")
    before = _snapshot(out)
    capsys.readouterr()
    assert main(args + ["--resume", "--epochs", "2"]) == 2
    assert "train_state.safetensors's metadata is not valid JSON" in capsys.readouterr().err
    assert _snapshot(out) == before
