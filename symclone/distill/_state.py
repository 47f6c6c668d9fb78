"""Checkpoint + resume of a cloning run: student and optimiser tensors (safetensors) and the
progress record (JSON), both written atomically.

>>> import tempfile, torch
>>> p = torch.nn.Parameter(torch.ones(2)); opt = torch.optim.AdamW([p])
>>> p.grad = torch.ones(2); opt.step()
>>> t, meta = flatten_optimizer(opt)
>>> opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))]); restore_optimizer(opt2, t, meta)
>>> torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
True
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from symclone.io import CheckpointError, checkpoint_exists, load_checkpoint, save_checkpoint

__all__ = ["flatten_optimizer", "restore_optimizer", "save_state", "load_state", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoints/last"


def flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimiser state as flat tensors ``opt/<param>/<name>`` plus JSON-able param groups."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt/{idx}/{name}"] = v
            else:
                scalars[f"{idx}/{name}"] = v
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("opt/"):
            _, idx, name = key.split("/", 2)
            state.setdefault(int(idx), {})[name] = v
    for key, v in meta.get("scalars", {}).items():
        idx, name = key.split("/", 1)
        state.setdefault(int(idx), {})[name] = v
    groups = meta["param_groups"]
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint: optimiser state does not match ({err})") from None


def save_state(out: Path, student: torch.nn.Module, progress: dict,
               opt: Optional[torch.optim.Optimizer] = None) -> None:
    """Write ``out/checkpoints/last.{safetensors,json}``."""
    tensors = {f"student/{k}": v for k, v in student.state_dict().items()}
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
