"""Read a run directory written by ``symclone clone`` (contract: config.json, teacher.*, student.*,
metrics.json).

Examples
--------
>>> import tempfile
>>> from symclone.distill import DistillConfig, build_pair, clone_run
>>> t, s = build_pair("cnn", "mlp", teacher_kwargs=dict(channels=1, depth=1, size=5))
>>> d = tempfile.mkdtemp(); _ = clone_run(d, t, s, cfg=DistillConfig(n_train=32, n_eval=8, progress=False))
>>> run = load_run(d)
>>> run.config["student"]["name"], run.metrics["layers"][0]["layer"], type(run.student).__name__
('mlp', 1, 'MLPStudent')
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .io import CheckpointError, read_json

__all__ = ["RunArtifacts", "load_run"]


@dataclass
class RunArtifacts:
    """Everything a finished (or checkpointed) cloning run left behind."""

    teacher: Any
    student: Any
    config: dict
    metrics: dict
    path: Path


def load_run(path: str | Path, map_location: str = "cpu") -> RunArtifacts:
    """Load ``teacher``, ``student``, ``config.json`` and ``metrics.json`` from a run directory.

    If the run was interrupted before ``student.*`` was written, the student is rebuilt from
    ``checkpoints/last``. Raises :class:`~symclone.io.CheckpointError` (a ``ValueError``) when the
    directory or its files are missing or corrupt.
    """
    from symclone.students import load_student
    from symclone.teachers import load_teacher

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"path: run directory {path} does not exist")
    config = read_json(path / "config.json")
    metrics = read_json(path / "metrics.json") if (path / "metrics.json").exists() else {"layers": []}
    teacher = load_teacher(path / "teacher", map_location=map_location)
    if (path / "student.safetensors").exists():
        student = load_student(path / "student", map_location=map_location)
    else:
        from symclone.registry import create_student

        from .distill._state import load_state
        st = config["student"]
        student = create_student(st["name"], **st["kwargs"])
        if load_state(path, student) is None:
            raise CheckpointError(f"path: {path} has neither student.* nor checkpoints/last")
        student.to(map_location)
    student.eval()
    return RunArtifacts(teacher=teacher, student=student, config=config, metrics=metrics, path=path)
