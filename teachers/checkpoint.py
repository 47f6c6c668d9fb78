"""Teacher checkpoints: ``<stem>.safetensors`` (parameters) + ``<stem>.json`` (config).

The JSON holds ``teacher.config`` (``{"name", "kwargs"}``) so :func:`load_teacher` rebuilds the
module with :func:`symclone.registry.create_teacher` and copies the saved parameters in, exactly
(bit for bit). Buffers such as escnn's sampled kernel bases are deterministic functions of the
config and are rebuilt, not stored. Writes are atomic; a missing, corrupt or mismatched checkpoint
raises :class:`~symclone.io.CheckpointError` (a ``ValueError``) and the model is not touched.

Examples
--------
>>> import tempfile, os, torch
>>> from symclone.registry import create_teacher
>>> t = create_teacher("cnn", channels=2, depth=1, size=6)
>>> stem = os.path.join(tempfile.mkdtemp(), "teacher")
>>> save_teacher(t, stem)
>>> u = load_teacher(stem)
>>> x = torch.randn(1, 1, 6, 6)
>>> torch.equal(t.forward_features(x)[0], u.forward_features(x)[0])
True
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import torch
import torch.nn as nn

from symclone.io import CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["save_teacher", "load_teacher", "teacher_state", "load_teacher_state", "FORMAT"]

FORMAT = "symclone-teacher/1"


def teacher_state(teacher: nn.Module) -> dict[str, torch.Tensor]:
    """The teacher's learnable parameters by name (what a checkpoint stores)."""
    return {name: p.detach() for name, p in teacher.named_parameters()}


def load_teacher_state(teacher: nn.Module, tensors: Mapping[str, torch.Tensor], source: str = "state") -> None:
    """Copy ``tensors`` into ``teacher``'s parameters after checking names, shapes and dtypes
    agree; raise :class:`CheckpointError` (and leave the teacher unchanged) otherwise."""
    params = dict(teacher.named_parameters())
    missing, extra = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or extra:
        raise CheckpointError(f"checkpoint: {source} does not match the teacher: missing {missing[:5]}, "
                              f"unexpected {extra[:5]}")
    for name, p in params.items():
        if tuple(tensors[name].shape) != tuple(p.shape):
            raise CheckpointError(f"checkpoint: {source}: parameter {name!r} has shape "
                                  f"{tuple(tensors[name].shape)}, the teacher expects {tuple(p.shape)}")
    with torch.no_grad():
        dtype = next(iter(tensors.values())).dtype if tensors else None
        if dtype is not None and dtype.is_floating_point:
            teacher.to(dtype)
        for name, p in params.items():
            p.copy_(tensors[name])
    if hasattr(teacher, "invalidate_cache"):
        teacher.invalidate_cache()


def save_teacher(teacher: nn.Module, stem: str | os.PathLike, meta: Optional[Mapping[str, Any]] = None) -> None:
    """Write ``stem.safetensors`` + ``stem.json`` for a registered teacher (atomically)."""
    config = getattr(teacher, "config", None)
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"teacher: {type(teacher).__name__} has no registry config; only teachers built "
                         "with create_teacher can be saved")
    save_checkpoint(stem, teacher_state(teacher), {"format": FORMAT, "config": config, **dict(meta or {})})


def load_teacher(stem: str | os.PathLike, map_location: str = "cpu") -> nn.Module:
    """Rebuild a teacher saved by :func:`save_teacher`; raise :class:`CheckpointError` if the files
    are missing, corrupt or do not fit the config they carry."""
    from symclone.registry import create_teacher

    tensors, meta = load_checkpoint(stem, map_location=map_location)
    if meta.get("format") != FORMAT or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"checkpoint: {stem}.json is not a teacher checkpoint (format "
                              f"{meta.get('format')!r}, expected {FORMAT!r})")
    cfg = meta["config"]
    try:
        teacher = create_teacher(cfg["name"], **cfg.get("kwargs", {}))
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"checkpoint: {stem}.json has an invalid teacher config ({err})") from None
    load_teacher_state(teacher, tensors, source=str(stem))
    teacher.eval()
    return teacher.to(map_location)
