"""Atomic files and safe checkpoints (safetensors + JSON; never pickle).

Crash safety. Every file is written to a temporary sibling and moved into place with ``os.replace``,
so a reader sees the old file or the new one, never a partial one. A checkpoint is **one** file:
``<stem>.safetensors`` carries the tensors *and* the JSON metadata (in the safetensors header), so a
SIGKILL at any instant leaves either the previous complete checkpoint or the new complete one.
``<stem>.json`` is written afterwards as a human-readable copy; loading never depends on it.

Temporary files are named ``.<name>.<pid>.<random>.tmp``; each write first removes the temporaries in
its folder whose writing process no longer exists (left by a killed run). Files get the permissions
the umask allows (``0o666 & ~umask``), like any file a program creates with ``open``.

Examples
--------
>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> save_checkpoint(os.path.join(d, "ck"), {"w": torch.ones(2)}, {"step": 3})
>>> t, meta = load_checkpoint(os.path.join(d, "ck"))
>>> t["w"].tolist(), meta["step"]
([1.0, 1.0], 3)
"""
from __future__ import annotations

import json
import logging
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

log = logging.getLogger(__name__)

#: the safetensors header key that carries a checkpoint's JSON metadata
META_KEY = "symclone.meta"
_TMP_RE = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")

__all__ = ["atomic_write_bytes", "atomic_write_text", "write_json", "read_json", "save_checkpoint",
           "load_checkpoint", "checkpoint_exists", "remove_checkpoint", "CheckpointError", "update_json", "flatten_optimizer",
           "restore_optimizer", "remove_stale_temporaries"]


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not match the model."""


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would, briefly, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: keep its file
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of :func:`atomic_write_bytes` in ``folder`` whose writer has exited.

    A write in progress (its process alive) is never touched. Returns the removed paths.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); (d / ".x.json.999999999.ab.tmp").write_text("partial")
    7
    >>> [p.name for p in remove_stale_temporaries(d)], os.listdir(d)
    (['.x.json.999999999.ab.tmp'], [])
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        m = _TMP_RE.match(entry.name)
        if m and entry.is_file(follow_symlinks=False) and not _pid_alive(int(m.group(1))):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except FileNotFoundError:
                pass
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted write in %s", len(removed), folder)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file + ``os.replace`` (never a partial file).

    The file gets mode ``0o666 & ~umask``; stale temporaries of killed writers in the same folder are
    removed first (:func:`remove_stale_temporaries`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
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
    """Write ``<stem>.safetensors``: the tensors and ``meta`` (JSON in its header), in one atomic
    replace; then ``<stem>.json``, a readable copy of ``meta`` that loading does not need.

    A kill at any instant leaves the previous checkpoint or this one, complete.
    """
    from safetensors.torch import save

    stem = Path(stem)
    meta = dict(meta or {})
    text = json.dumps(meta, default=_jsonable)
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(stem.with_suffix(".safetensors"), save(flat, metadata={META_KEY: text}))
    write_json(stem.with_suffix(".json"), json.loads(text))


def checkpoint_exists(stem: str | os.PathLike) -> bool:
    """Whether ``<stem>.safetensors`` exists (it holds the whole checkpoint)."""
    return Path(stem).with_suffix(".safetensors").exists()


def _header_meta(data: bytes, path: Path) -> Optional[dict]:
    """The JSON metadata of a safetensors file's header, ``None`` if it carries none (an old checkpoint)."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    text = (header.get("__metadata__") or {}).get(META_KEY)
    if text is None:
        return None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"checkpoint: {path}'s metadata is not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint: {path}'s metadata is not a JSON object")
    return meta


def remove_checkpoint(stem: str | os.PathLike) -> None:
    """Delete ``<stem>.safetensors`` and ``<stem>.json`` where they exist (a missing file is no error).

    Examples
    --------
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
    """Load a checkpoint written by :func:`save_checkpoint`: ``(tensors, meta)``, the metadata from the
    safetensors header (``<stem>.json`` only for checkpoints that predate it); raise
    :class:`CheckpointError` if it is missing or corrupt."""
    from safetensors.torch import load

    stem = Path(stem)
    st = stem.with_suffix(".safetensors")
    if not st.exists():
        raise CheckpointError(f"checkpoint: {st} does not exist")
    data = st.read_bytes()
    try:
        tensors = load(data)
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"checkpoint: {st} is corrupt or not a safetensors file ({err})") from None
    meta = _header_meta(data, st)
    if meta is None:  # written before the metadata moved into the header
        meta = read_json(stem.with_suffix(".json")) if stem.with_suffix(".json").exists() else {}
    return {k: v.to(map_location) for k, v in tensors.items()}, meta


def flatten_optimizer(opt: torch.optim.Optimizer, prefix: str = "opt/") -> tuple[dict[str, torch.Tensor], dict]:
    """Optimiser state as flat tensors ``<prefix><param>/<name>`` (for :func:`save_checkpoint`) plus a
    JSON-able dict (param groups and non-tensor state entries) for the checkpoint's metadata.

    Examples
    --------
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
