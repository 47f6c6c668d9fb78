"""Retain or break the symmetry: fine-tune cloned students on downstream tasks (docs/design.md §6).

>>> from symclone.finetune import finetune, make_task, MODES
>>> MODES
('frozen', 'anchored', 'free')
>>> import symclone
>>> callable(symclone.finetune)   # the function, or this package (callable, forwards to it)
True
"""
import sys as _sys
import types as _types

from ._anchor import ANCHORS, AnchorPenalty, select_cloned
from ._loop import MODES, FinetuneConfig, FinetuneResult, finetune
from ._metrics import accuracy, evaluate, invariance_error, structure_residuals
from .models import CNNBaseline, ClonedNet, FeatureClassifier, InvariantHead, MLPBaseline, count_parameters
from .tasks import TASKS, Task, TaskSplit, load_base, make_task, place_on_canvas, task_from_tensors

__all__ = ["finetune", "FinetuneConfig", "FinetuneResult", "MODES", "ANCHORS", "AnchorPenalty",
           "select_cloned", "accuracy", "evaluate", "invariance_error", "structure_residuals",
           "MLPBaseline", "CNNBaseline", "InvariantHead", "FeatureClassifier", "ClonedNet",
           "count_parameters", "TASKS", "Task", "TaskSplit", "make_task", "task_from_tensors",
           "load_base", "place_on_canvas"]


class _CallableModule(_types.ModuleType):
    """``symclone.finetune(...)`` works whether it resolves to this package or to the function."""

    def __call__(self, *args, **kwargs):
        return finetune(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
