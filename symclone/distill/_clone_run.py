"""Run directories: build a teacher/student pair, clone, and write ``runs/NAME/`` (contract layout).

``runs/NAME/config.json``, ``teacher.*``, ``student.*``, ``metrics.json``, ``checkpoints/last.*``.

Examples
--------
>>> import tempfile, torch
>>> from symclone.distill import DistillConfig
>>> t, s = build_pair("cnn", "mlp", teacher_kwargs=dict(channels=1, depth=1, size=5))
>>> d = tempfile.mkdtemp()
>>> m = clone_run(d, t, s, cfg=DistillConfig(n_train=64, n_eval=8, progress=False))
>>> sorted(p.name for p in __import__("pathlib").Path(d).iterdir())[:3]
['checkpoints', 'config.json', 'metrics.json']
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from symclone.config import to_dict
from symclone.io import read_json, write_json

from ._config import DistillConfig
from ._engine import distill

__all__ = ["build_pair", "clone_run"]

log = logging.getLogger(__name__)


def build_pair(teacher_name: str, student_name: str, teacher_kwargs: Optional[dict] = None,
               student_kwargs: Optional[dict] = None, blocks: int = 0) -> tuple[Any, Any]:
    """``create_teacher(teacher_name, **teacher_kwargs)`` and a student built ``like`` it
    (``blocks > 0`` sets ``B`` for the ``blocks`` student)."""
    from symclone.registry import create_student, create_teacher

    teacher = create_teacher(teacher_name, **(teacher_kwargs or {}))
    kw = dict(student_kwargs or {})
    if blocks:
        if student_name != "blocks":
            raise ValueError(f"blocks: --blocks only applies to the 'blocks' student, not {student_name!r}")
        kw["blocks"] = blocks
    return teacher, create_student(student_name, teacher=teacher, **kw)


def clone_run(out: str | Path, teacher: Any, student: Any, data: Any = "gaussian",
              cfg: Optional[DistillConfig] = None, resume: bool = False, ctx: Any = None) -> dict:
    """Clone into the run directory ``out`` and write the contract's files; returns the metrics.

    With ``resume`` the teacher is reloaded from ``out/teacher`` (so the same teacher is cloned) and
    training continues from ``out/checkpoints/last``. With a multi-process ``ctx`` (``torchrun``) only
    rank 0 writes files; every rank trains its shard (see :func:`distill`).
    """
    from symclone.students import save_student
    from symclone.teachers import load_teacher, save_teacher

    from ._feeds import base_inputs

    cfg = cfg or DistillConfig()
    out = Path(out)
    # the data exists and fits the teacher: checked on one sample before any file is written
    base_inputs(teacher, data, 1, cfg.seed, root=cfg.data_root, download=cfg.download)
    cfg_path = out / "config.json"
    config = {"teacher": teacher.config, "student": student.config, "mode": cfg.mode,
              "layers": list(cfg.layers) or list(range(1, teacher.num_layers + 1)),
              "data": data if isinstance(data, str) or data is None else type(data).__name__,
              "distill": to_dict(cfg)}
    if resume and cfg_path.exists():
        old = read_json(cfg_path)
        for key in ("teacher", "student", "mode"):
            if old.get(key) != config[key]:
                raise ValueError(f"resume: {out} was started with a different {key} ({old.get(key)!r}); "
                                 f"use a new --out or the same settings")
        teacher = load_teacher(out / "teacher")
    elif ctx is None or ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_teacher(teacher, out / "teacher")
    if ctx is None or ctx.is_main:
        write_json(cfg_path, config)
    metrics = distill(student, teacher, data, cfg, out=out, resume=resume, ctx=ctx)
    if ctx is None or ctx.is_main:
        save_student(student, out / "student")
    if ctx is not None:
        ctx.barrier()
    return metrics
