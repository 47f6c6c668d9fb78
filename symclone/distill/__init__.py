"""symclone.distill: clone equivariant teachers into group-agnostic students (docs/design.md §4).

``distill(student, teacher, data, cfg)`` runs layer-by-layer function or family cloning and
returns per-layer metrics; ``DistillConfig`` holds every setting. ``symclone.distill`` is always
this package; the top-level shortcut for the function is ``symclone.clone``.

Examples
--------
>>> from symclone.distill import DistillConfig
>>> DistillConfig(mode="family").mode
'family'
"""
from __future__ import annotations

from ._closed_form import RidgeAccumulator, family_svd_solve, teacher_affine_maps
from ._config import DistillConfig
from ._engine import check_compatible, distill, untrained_copy
from ._metrics import rel_error
from ._clone_run import build_pair, clone_run

__all__ = ["distill", "DistillConfig", "RidgeAccumulator", "family_svd_solve", "teacher_affine_maps",
           "rel_error", "check_compatible", "untrained_copy", "clone_run", "build_pair"]

