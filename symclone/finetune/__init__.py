"""Retain or break the symmetry: fine-tune cloned students on downstream tasks (docs/design.md §6).

Examples
--------
>>> from symclone.finetune import finetune, make_task, MODES
>>> MODES
('frozen', 'anchored', 'free', 'head-only')

``symclone.finetune`` is always this package; the function is ``symclone.finetune.finetune``.
"""
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

