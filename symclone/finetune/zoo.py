"""Build the downstream models of the comparison from a task (and cloned students).

``build_model(kind, task, ...)`` with ``kind`` one of :data:`KINDS`:

* ``"mlp"`` — :class:`~.models.MLPBaseline`; ``"cnn"`` — :class:`~.models.CNNBaseline`;
* ``"equivariant"`` — the group teacher trained from scratch with the invariant head: ``gcnn_c4``
  (``fields`` regular fields, ``depth`` layers, ``"c4"`` head) for C4 tasks, a circular ``cnn``
  (``fields`` channels, ``"t2"`` head) for the T(2) task;
* ``"cloned-blocks"`` — the cloned one-field / one-channel blocks layer applied with ``fields``
  learnable kernels (:class:`~.models.ClonedNet` with ``kernels``): the GCNN-shaped (C4 tasks) or
  CNN-shaped (T(2) task) network built from cloned block layers;
* ``"cloned-mlp"`` — a cloned dense (``mlp``) student of the ``fields``-wide teacher + head;
* ``"cloned-mlp-sym"`` — ``cloned-mlp`` wrapped in ``Symmetrized(..., sampler="uniform")`` (exact
  C4 group average of the logits; C4 tasks only).

Cloned students come from :func:`clone_student` (``symclone.distill``: family cloning of the
blocks student, function cloning of the mlp student, both in closed form).
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import torch
from torch import nn

from .models import CNNBaseline, ClonedNet, FeatureClassifier, MLPBaseline
from .tasks import Task

__all__ = ["KINDS", "teacher_spec", "clone_student", "build_model"]

log = logging.getLogger(__name__)
KINDS = ("mlp", "cnn", "equivariant", "cloned-blocks", "cloned-mlp", "cloned-mlp-sym")


def teacher_spec(task: Task, fields: int, depth: int = 1) -> tuple[str, dict, str]:
    """``(teacher name, kwargs, head pool)`` of the equivariant architecture for ``task``."""
    size = task.input_shape[-1]
    if task.group.name == "c4":
        return "gcnn_c4", {"fields": fields, "depth": depth, "size": size}, "c4"
    return "cnn", {"channels": fields, "depth": depth, "size": size, "padding": "circular",
                   "bias": False}, "t2"


def clone_student(kind: str, teacher: nn.Module, data: Any = None, seed: int = 0,
                  n_train: int = 512) -> nn.Module:
    """Clone ``teacher`` into a ``"blocks"`` (family mode) or ``"mlp"`` (function mode) student,
    with ``symclone.distill`` (closed-form solvers)."""
    from ..distill import DistillConfig, distill
    from ..registry import create_student

    import math

    student = create_student(kind, teacher=teacher, seed=seed)
    mode = "family" if kind == "blocks" else "function"
    if mode == "function":  # a determined ridge fit needs more samples than input dimensions
        n_train = max(n_train, math.prod(teacher.feature_shapes[0]) + 64)
    cfg = DistillConfig(mode=mode, solver="closed_form", n_train=n_train, n_eval=64, seed=seed, progress=False)
    distill(student, teacher, data=data, cfg=cfg)
    return student


def build_model(kind: str, task: Task, fields: int = 8, depth: int = 1, seed: int = 0,
                students: Optional[dict] = None, hidden: int = 64) -> nn.Module:
    """The model ``kind`` for ``task`` (see the module docstring). ``students`` caches cloned
    students by ``(kind, teacher name, kwargs)`` across calls; a clone is deep-copied per model."""
    import copy

    from ..registry import create_teacher

    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    torch.manual_seed(seed)
    if kind == "mlp":
        return MLPBaseline(task.input_shape, task.num_classes)
    if kind == "cnn":
        return CNNBaseline(task.input_shape, task.num_classes)
    name, kw, pool = teacher_spec(task, fields, depth)
    if kind == "equivariant":
        return FeatureClassifier(create_teacher(name, seed=seed, **kw), task.num_classes, pool, hidden)
    if kind == "cloned-mlp-sym" and task.group.name != "c4":
        raise ValueError("kind: 'cloned-mlp-sym' is only built for C4 tasks (a T(2) group average "
                         f"over {task.group.order} shifts is too costly here)")
    students = {} if students is None else students
    if kind == "cloned-blocks":
        kw = {**kw, ("fields" if name == "gcnn_c4" else "channels"): 1, "depth": 1}
    skey = ("blocks" if kind == "cloned-blocks" else "mlp", name, tuple(sorted(kw.items())))
    if skey not in students:
        teacher = create_teacher(name, seed=seed, **kw)
        students[skey] = (teacher, clone_student(skey[0], teacher, seed=seed))
    teacher, student = students[skey]
    student = copy.deepcopy(student)
    # the head's initialisation depends on the seed alone: cloning a student (above, only when it is not
    # cached) draws from the global generator, so re-seed; a fresh and a cached clone give the same model
    torch.manual_seed(seed)
    if kind == "cloned-blocks":
        gen = torch.Generator().manual_seed(seed)
        kernels = teacher.sample_params(1, fields, generator=gen)
        return ClonedNet(student, task.num_classes, kernels=kernels, pool=pool, hidden=hidden,
                         structure_group=teacher.group)
    net = ClonedNet(student, task.num_classes, pool=pool, hidden=hidden, structure_group=teacher.group)
    if kind == "cloned-mlp-sym":
        from ..symmetrize import Symmetrized
        return Symmetrized(net, task.group, "image", "trivial", sampler="uniform")
    return net
