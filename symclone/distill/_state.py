"""Checkpoint + resume of a cloning run: student and optimiser tensors (safetensors) and the
progress record (JSON), both written atomically (optimiser flattening: :mod:`symclone.io`).

>>> import tempfile, torch
>>> d = Path(tempfile.mkdtemp()); m = torch.nn.Linear(2, 1)
>>> save_state(d, m, {"step": 3}); load_state(d, m)[0]["step"]
3
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from symclone.io import (CheckpointError, checkpoint_exists, flatten_optimizer, load_checkpoint,
                         restore_optimizer, save_checkpoint)

__all__ = ["save_state", "load_state", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoints/last"


def save_state(out: Path, student: torch.nn.Module, progress: dict,
               opt: Optional[torch.optim.Optimizer] = None,
               extra: Optional[dict[str, torch.Tensor]] = None) -> None:
    """Write ``out/checkpoints/last.{safetensors,json}``; ``extra`` tensors (names outside ``student/``,
    ``opt/``) are stored alongside and returned by :func:`load_state`."""
    tensors = {f"student/{k}": v for k, v in student.state_dict().items()}
    for k, v in (extra or {}).items():
        if k.startswith(("student/", "opt/", "__token__")):
            raise ValueError(f"extra: tensor name {k!r} collides with the checkpoint's own entries")
        tensors[k] = v.detach()
    meta = dict(progress)
    meta["token"] = int(meta.get("token", 0)) + 1
    tensors["__token__"] = torch.tensor(meta["token"])
    if opt is not None:
        t, ometa = flatten_optimizer(opt)
        tensors.update(t)
        meta["optimizer"] = ometa
    else:
        meta.pop("optimizer", None)
    save_checkpoint(out / CHECKPOINT_NAME, tensors, meta)
    progress["token"] = meta["token"]


def load_state(out: Path, student: torch.nn.Module) -> Optional[tuple[dict, dict[str, torch.Tensor]]]:
    """Load the student weights from the run's checkpoint; return ``(progress, tensors)`` or ``None``
    when there is no checkpoint. Raises :class:`CheckpointError` when it is corrupt or mismatched."""
    stem = out / CHECKPOINT_NAME
    if not checkpoint_exists(stem):
        return None
    tensors, meta = load_checkpoint(stem)
    if "__token__" not in tensors or int(tensors["__token__"]) != int(meta.get("token", -1)):
        raise CheckpointError(f"checkpoint: {stem}.json and .safetensors are from different saves")
    sd = {k[len("student/"):]: v for k, v in tensors.items() if k.startswith("student/")}
    try:
        student.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint: {stem} does not match this student: {err}") from None
    return meta, tensors
