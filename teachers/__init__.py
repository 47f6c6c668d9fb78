"""Teachers: equivariant networks whose per-layer features students clone (docs/design.md §3).

Importing this package registers every teacher (``cnn``, ``gcnn_c4``, ``e3nn``) with
:func:`symclone.registry.create_teacher`; checkpoints via :func:`save_teacher`/:func:`load_teacher`.
"""
from . import cnn, gcnn, point_cloud
from .checkpoint import load_teacher, save_teacher
from .cnn import CNNTeacher
from .gcnn import GCNNC4Teacher
from .point_cloud import E3NNTeacher

__all__ = ["CNNTeacher", "GCNNC4Teacher", "E3NNTeacher", "cnn", "gcnn", "point_cloud", "save_teacher", "load_teacher"]
