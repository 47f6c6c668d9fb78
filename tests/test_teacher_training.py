"""train-teacher: tiny end-to-end runs, invariance of the trained classifier, resume, CLI."""
from __future__ import annotations

import json

import pytest
import torch

from symclone.cli import main
from symclone.data import DatasetMissingError
from symclone.io import read_json
from symclone.teachers import load_teacher
from symclone.teachers.training import TeacherTrainConfig, train_teacher


def _fmnist_available() -> bool:
    try:
        from symclone.data import find_fashion_mnist
        find_fashion_mnist()
        return True
    except (DatasetMissingError, FileNotFoundError, ValueError):
        return False


needs_fmnist = pytest.mark.skipif(not _fmnist_available(), reason="Fashion-MNIST IDX files not installed")
TINY = dict(fields=1, depth=1, kernel_size=3)


@needs_fmnist
def test_train_gcnn_resume_is_exact_and_invariant(tmp_path):
    base = dict(teacher="gcnn_c4", task="fashion-mnist", teacher_kwargs=TINY, batch_size=32, train_limit=96,
                test_limit=40, checkpoint_every=2, progress=False)
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


@needs_fmnist
def test_cli_train_teacher_cnn(tmp_path, capsys):
    out = tmp_path / "cnn"
    rc = main(["train-teacher", "--teacher", "cnn", "--out", str(out), "--train-limit", "64", "--test-limit", "16",
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
