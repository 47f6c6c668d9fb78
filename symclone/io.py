"""Atomic files and safe checkpoints (safetensors + JSON; never pickle).

>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> save_checkpoint(os.path.join(d, "ck"), {"w": torch.ones(2)}, {"step": 3})
>>> t, meta = load_checkpoint(os.path.join(d, "ck"))
>>> t["w"].tolist(), meta["step"]
([1.0, 1.0], 3)
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

__all__ = ["atomic_write_bytes", "atomic_write_text", "write_json", "read_json", "save_checkpoint",
           "load_checkpoint", "checkpoint_exists", "remove_checkpoint", "CheckpointError", "update_json", "flatten_optimizer",
           "restore_optimizer"]


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not match the model."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file + ``os.replace`` (never a partial file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"path: {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"path: {path} is not valid JSON ({err})") from None


def update_json(path: str | os.PathLike, updates: Mapping[str, Any]) -> dict:
    """Merge ``updates`` into the JSON object at ``path`` (created if missing), atomically."""
    data = read_json(path) if Path(path).exists() else {}
    data.update(updates)
    write_json(path, data)
    return data


def save_checkpoint(stem: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                    meta: Optional[Mapping[str, Any]] = None) -> None:
    """Write ``<stem>.safetensors`` (tensors) and ``<stem>.json`` (metadata), both atomically."""
    from safetensors.torch import save

    stem = Path(stem)
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(stem.with_suffix(".safetensors"), save(flat))
    write_json(stem.with_suffix(".json"), dict(meta or {}))


def checkpoint_exists(stem: str | os.PathLike) -> bool:
    stem = Path(stem)
    return stem.with_suffix(".safetensors").exists() and stem.with_suffix(".json").exists()


def remove_checkpoint(stem: str | os.PathLike) -> None:
    """Delete ``<stem>.safetensors`` and ``<stem>.json`` where they exist (a missing file is no error).

    >>> import tempfile, os
    >>> stem = os.path.join(tempfile.mkdtemp(), "ck")
    >>> save_checkpoint(stem, {"w": torch.ones(1)})
    >>> remove_checkpoint(stem); checkpoint_exists(stem), os.listdir(os.path.dirname(stem))
    (False, [])
    >>> remove_checkpoint(stem)   # already gone: nothing to do
    """
    stem = Path(stem)
    for suffix in (".safetensors", ".json"):
        stem.with_suffix(suffix).unlink(missing_ok=True)


def load_checkpoint(stem: str | os.PathLike, map_location: str = "cpu"
                    ) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a checkpoint written by :func:`save_checkpoint`; raise :class:`CheckpointError` if it
    is missing or corrupt."""
    from safetensors.torch import load

    stem = Path(stem)
    st = stem.with_suffix(".safetensors")
    if not st.exists():
        raise CheckpointError(f"checkpoint: {st} does not exist")
    try:
        tensors = load(st.read_bytes())
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"checkpoint: {st} is corrupt or not a safetensors file ({err})") from None
    meta = read_json(stem.with_suffix(".json")) if stem.with_suffix(".json").exists() else {}
    return {k: v.to(map_location) for k, v in tensors.items()}, meta


def flatten_optimizer(opt: torch.optim.Optimizer, prefix: str = "opt/") -> tuple[dict[str, torch.Tensor], dict]:
    """Optimiser state as flat tensors ``<prefix><param>/<name>`` (for :func:`save_checkpoint`) plus a
    JSON-able dict (param groups and non-tensor state entries) for the checkpoint's metadata.

    >>> p = torch.nn.Parameter(torch.ones(2)); opt = torch.optim.AdamW([p])
    >>> p.grad = torch.ones(2); opt.step()
    >>> t, meta = flatten_optimizer(opt)
    >>> opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))]); restore_optimizer(opt2, t, meta)
    >>> torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    True
    """
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}{idx}/{name}"] = v
            else:
                scalars[f"{idx}/{name}"] = v
    groups = [dict(g) for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def restore_optimizer(opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
                      prefix: str = "opt/") -> None:
    """Inverse of :func:`flatten_optimizer`; :class:`CheckpointError` if the state does not fit ``opt``."""
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith(prefix):
            idx, name = key[len(prefix):].split("/", 1)
            state.setdefault(int(idx), {})[name] = v
    for key, v in meta.get("scalars", {}).items():
        idx, name = key.split("/", 1)
        state.setdefault(int(idx), {})[name] = v
    try:
        opt.load_state_dict({"state": state, "param_groups": [dict(g) for g in meta["param_groups"]]})
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint: optimiser state does not match ({err})") from None
