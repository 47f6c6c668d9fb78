"""One checkpoint of a training loop's whole state (part of the training core, :mod:`symclone.trainer`).

A training loop's state is its modules, its optimiser (and learning-rate scheduler), its random
generators, any extra tensors (an anchor, an EMA copy, the best model so far) and a JSON record
(step/epoch, history, settings). :class:`TrainingCheckpoint` writes all of it as **one** safetensors file
(see :mod:`symclone.io`: the metadata rides in its header, the write is one atomic replace), so a SIGKILL
at any instant leaves the previous complete state or the new one; it restores every piece or raises a
:class:`~symclone.io.CheckpointError` naming the file and the piece that does not fit. In a
multi-process run rank 0 writes and every rank waits for it.

Tensor names inside the file: ``<module>/<key>`` for each module, ``opt/...`` for the optimiser
(:func:`symclone.io.flatten_optimizer`), ``rng/<name>`` for generators, ``x/<name>`` for extras.

Examples
--------
>>> import tempfile, torch
>>> d = tempfile.mkdtemp(); m = torch.nn.Linear(2, 1); opt = torch.optim.AdamW(m.parameters())
>>> m(torch.ones(1, 2)).sum().backward(); opt.step()
>>> ck = TrainingCheckpoint(d + "/state")
>>> ck.save({"step": 1}, modules={"model": m}, optimizer=opt, generators={"data": torch.Generator()})
>>> m2 = torch.nn.Linear(2, 1); opt2 = torch.optim.AdamW(m2.parameters())
>>> meta, extra = ck.load(modules={"model": m2}, optimizer=opt2)
>>> meta["step"], torch.equal(m2.weight, m.weight)
(1, True)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from ..io import (CheckpointError, checkpoint_exists, flatten_optimizer, load_checkpoint, remove_checkpoint,
                 restore_optimizer, save_checkpoint)

__all__ = ["TrainingCheckpoint"]

log = logging.getLogger(__name__)


class TrainingCheckpoint:
    """Save and restore a training loop's state at ``<stem>.safetensors`` (+ a readable ``<stem>.json``).

    Parameters
    ----------
    stem : file path without suffix (no dots in the last component: suffixes are appended).
    ctx : a :class:`symclone.distributed.DistributedContext`; only its rank 0 writes, all ranks wait.
    """

    def __init__(self, stem: str | Path, ctx: Any = None):
        self.stem = Path(stem)
        self.ctx = ctx

    @property
    def path(self) -> Path:
        return self.stem.with_suffix(".safetensors")

    def exists(self) -> bool:
        return checkpoint_exists(self.stem)

    def save(self, meta: Mapping[str, Any], modules: Optional[Mapping[str, nn.Module]] = None,
             optimizer: Optional[torch.optim.Optimizer] = None, scheduler: Any = None,
             generators: Optional[Mapping[str, torch.Generator]] = None,
             tensors: Optional[Mapping[str, torch.Tensor]] = None) -> None:
        """Write the whole state in one atomic file (rank 0; every rank waits at a barrier)."""
        is_main = self.ctx is None or self.ctx.is_main
        if is_main:
            flat: dict[str, torch.Tensor] = {}
            record = dict(meta)
            for name, module in (modules or {}).items():
                flat.update({f"{name}/{k}": v.detach() for k, v in module.state_dict().items()})
            if optimizer is not None:
                t, record["optimizer"] = flatten_optimizer(optimizer)
                flat.update(t)
            if scheduler is not None:
                record["scheduler"] = scheduler.state_dict()
            for name, gen in (generators or {}).items():
                flat[f"rng/{name}"] = gen.get_state()
            flat.update({f"x/{k}": v.detach() for k, v in (tensors or {}).items()})
            save_checkpoint(self.stem, {k: v.cpu().contiguous() for k, v in flat.items()}, record)
        if self.ctx is not None:
            self.ctx.barrier()

    def read(self) -> Optional[tuple[dict, dict[str, torch.Tensor]]]:
        """``(meta, all tensors)`` without restoring anything (``None`` if there is no checkpoint), for loops
        that build some objects later (e.g. one optimiser per layer): see :meth:`restore_optimizer`."""
        if not self.exists():
            return None
        tensors, meta = load_checkpoint(self.stem)
        return meta, tensors

    def restore_modules(self, modules: Mapping[str, nn.Module], tensors: Mapping[str, torch.Tensor]) -> None:
        """Load each module's ``<name>/...`` tensors (strict); :class:`CheckpointError` if one does not fit."""
        for name, module in modules.items():
            prefix = f"{name}/"
            sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            try:
                module.load_state_dict(sd, strict=True)
            except RuntimeError as err:
                raise CheckpointError(f"checkpoint: {self.path} does not match {name}: "
                                      f"{' '.join(str(err).split())[:300]}") from None

    def restore_optimizer(self, optimizer: torch.optim.Optimizer, meta: Mapping[str, Any],
                          tensors: Mapping[str, torch.Tensor]) -> None:
        """Restore ``optimizer`` from what :meth:`read` returned."""
        if "optimizer" not in meta:
            raise CheckpointError(f"checkpoint: {self.path} holds no optimiser state")
        restore_optimizer(optimizer, tensors, meta["optimizer"])

    def load(self, modules: Optional[Mapping[str, nn.Module]] = None,
             optimizer: Optional[torch.optim.Optimizer] = None, scheduler: Any = None,
             generators: Optional[Mapping[str, torch.Generator]] = None, map_location: str | torch.device = "cpu"
             ) -> Optional[tuple[dict, dict[str, torch.Tensor]]]:
        """Restore into the given objects; return ``(meta, extra tensors)``, or ``None`` if there is no
        checkpoint. A piece that is missing or does not fit raises :class:`CheckpointError`."""
        loaded = self.read()
        if loaded is None:
            return None
        meta, tensors = loaded
        self.restore_modules(modules or {}, tensors)
        if optimizer is not None:
            self.restore_optimizer(optimizer, meta, tensors)
        if scheduler is not None:
            if "scheduler" not in meta:
                raise CheckpointError(f"checkpoint: {self.path} holds no learning-rate schedule state")
            scheduler.load_state_dict(meta["scheduler"])
        for name, gen in (generators or {}).items():
            if f"rng/{name}" not in tensors:
                raise CheckpointError(f"checkpoint: {self.path} holds no state of generator {name!r}")
            gen.set_state(tensors[f"rng/{name}"])
        extra = {k[2:]: v.to(map_location) for k, v in tensors.items() if k.startswith("x/")}
        log.info("resumed from %s", self.path)
        return meta, extra

    def remove(self) -> None:
        """Delete the checkpoint (rank 0), e.g. once the run it belongs to has finished."""
        if self.ctx is None or self.ctx.is_main:
            remove_checkpoint(self.stem)
        if self.ctx is not None:
            self.ctx.barrier()
