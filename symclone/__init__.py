"""symclone: symmetry cloning — distil equivariant teachers into group-agnostic students.

Public API (imported lazily, so ``import symclone`` is cheap):

>>> import symclone
>>> G = symclone.get_group("c4")
>>> G.order
4
"""
from __future__ import annotations

import importlib
from pathlib import Path

__version__ = "0.1.0"

_LAZY = {
    # groups and data
    "get_group": "symclone.groups", "list_groups": "symclone.groups", "Group": "symclone.groups",
    "Rep": "symclone.groups", "parse_rep": "symclone.groups",
    "OrbitDataset": "symclone.data", "GaussianImages": "symclone.data",
    "load_fashion_mnist": "symclone.data",
    # checker
    "equivariance_error": "symclone.testing", "assert_equivariant": "symclone.testing",
    # registries
    "create_teacher": "symclone.registry", "list_teachers": "symclone.registry",
    "register_teacher": "symclone.registry", "create_student": "symclone.registry",
    "list_students": "symclone.registry", "register_student": "symclone.registry",
    # later layers
    "distill": "symclone.distill", "DistillConfig": "symclone.distill",
    "Symmetrized": "symclone.symmetrize",
    "finetune": "symclone.finetune",
    # runtime and scale
    "resolve_device": "symclone.runtime", "DistributedContext": "symclone.distributed",
}

__all__ = sorted(_LAZY) + ["__version__"]


def _check_layout() -> None:
    here = Path(__file__).resolve().parent
    if not (here / "commands").is_dir():  # pragma: no cover
        raise ImportError("symclone: package layout is broken; reinstall with 'pip install -e .'")


def __getattr__(name: str):
    if name in _LAZY:
        mod = importlib.import_module(_LAZY[name])
        return getattr(mod, name)
    if name in ("teachers", "students", "analysis"):
        try:
            return importlib.import_module(f"symclone.{name}")
        except ModuleNotFoundError:
            raise ImportError(
                f"symclone.{name} is not importable: the sibling folders teachers/, students/ and "
                "analysis/ are mapped into the package by the install. Install with "
                "'pip install -e .' (or run 'make test'), and do not run from a copy of symclone/ "
                "alone.") from None
    raise AttributeError(f"module 'symclone' has no attribute {name!r}")
