"""Checkpoint + resume of a cloning run, through the training core's one-file checkpoint
(:class:`symclone.trainer.TrainingCheckpoint`): the student, the current layer's optimiser, extra tensors
(e.g. the parameters before a polish) and the run-state record, written in one atomic replace.

Examples
--------
>>> import tempfile, torch
>>> d = Path(tempfile.mkdtemp()); m = torch.nn.Linear(2, 1)
>>> save_state(d, m, {"step": 3}); load_state(d, m)[0]["step"]
3
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from symclone.trainer import TrainingCheckpoint

__all__ = ["save_state", "load_state", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoints/last"


def save_state(out: Path, student: torch.nn.Module, run_state: dict,
               opt: Optional[torch.optim.Optimizer] = None,
               extra: Optional[dict[str, torch.Tensor]] = None) -> None:
    """Write ``out/checkpoints/last.safetensors`` (+ its readable ``.json`` copy); ``extra`` tensors are
    returned by :func:`load_state` under their own names."""
    meta = {k: v for k, v in run_state.items() if k != "optimizer"}
    TrainingCheckpoint(Path(out) / CHECKPOINT_NAME).save(meta, {"student": student}, opt, tensors=extra)


def load_state(out: Path, student: torch.nn.Module) -> Optional[tuple[dict, dict[str, torch.Tensor]]]:
    """Load the student weights from the run's checkpoint; return ``(run_state, tensors)`` or ``None``
    when there is no checkpoint. ``tensors`` holds the optimiser state (``opt/...``, restored later by the
    layer that owns the optimiser) and the extra tensors under their names. Raises
    :class:`~symclone.io.CheckpointError` when the checkpoint is corrupt or does not fit the student."""
    ck = TrainingCheckpoint(Path(out) / CHECKPOINT_NAME)
    loaded = ck.read()
    if loaded is None:
        return None
    meta, tensors = loaded
    ck.restore_modules({"student": student}, tensors)
    tensors = {**tensors, **{k[2:]: v for k, v in tensors.items() if k.startswith("x/")}}
    return meta, tensors
