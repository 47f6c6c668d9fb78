"""The training core: what every symclone training loop shares.

* :class:`TrainingCheckpoint` — a loop's whole state (modules, optimiser, schedule, generators, extra
  tensors, a JSON record) in one crash-safe file; rank 0 writes, every rank restores.
* :func:`train_steps` — ``steps`` optimiser steps of ``loss_fn(step)`` (cloning, polish): cosine
  learning rate, clipping, periodic checkpoints, progress, early stop, DDP with a multi-process context.
* :func:`fit` — epochs over a ``Dataset`` for any ``nn.Module`` (a symmetrized model, a classifier):
  a ``DistributedSampler`` so one process sees the global batches of N, AdamW + exponential decay,
  per-epoch checkpoints and resume, DDP.
* :func:`make_optimizer` — SGD with momentum or (fused) AdamW.

Progress goes through :mod:`symclone.progress` (a bar on a terminal, log lines otherwise) and the
distributed pieces through :mod:`symclone.distributed`; a loop keeps only its loss and its data.
"""
from ._checkpoint import TrainingCheckpoint
from ._fit import fit
from ._optim import fused_adamw_supported, make_optimizer
from ._steps import train_steps

__all__ = ["TrainingCheckpoint", "train_steps", "fit", "make_optimizer", "fused_adamw_supported"]
