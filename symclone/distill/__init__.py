"""symclone.distill: clone equivariant teachers into group-agnostic students (docs/design.md §4).

``distill(student, teacher, data, cfg)`` runs layer-by-layer function or family cloning and
returns per-layer metrics; ``DistillConfig`` holds every setting. The module itself is callable,
so ``symclone.distill(student, teacher, data, cfg)`` works whether ``symclone.distill`` resolves
to this package or to the function.

>>> from symclone.distill import DistillConfig
>>> DistillConfig(mode="family").mode
'family'
"""
from __future__ import annotations

import sys
import types

from ._closed_form import RidgeAccumulator, family_svd_solve, teacher_affine_maps
from ._config import DistillConfig
from ._engine import check_compatible, distill, untrained_copy
from ._metrics import rel_error
from ._run import clone_run, build_pair

__all__ = ["distill", "DistillConfig", "RidgeAccumulator", "family_svd_solve", "teacher_affine_maps",
           "rel_error", "check_compatible", "untrained_copy", "clone_run", "build_pair"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return distill(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
