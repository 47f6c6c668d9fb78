"""symclone: symmetry cloning — distil equivariant teachers into group-agnostic students.

The top-level names are shortcuts, imported lazily (``import symclone`` stays cheap); each lives in
the package that owns it:

| name | home |
|---|---|
| ``clone`` | cloning (``symclone.distill.distill``) |
| ``get_group``, ``list_groups``, ``Group``, ``Rep``, ``parse_rep`` | ``symclone.groups`` |
| ``OrbitDataset``, ``GaussianImages``, ``load_fashion_mnist`` | ``symclone.data`` |
| ``equivariance_error``, ``assert_equivariant`` | ``symclone.equivariance`` |
| ``create_teacher``, ``list_teachers``, ``register_teacher`` | ``symclone.registry`` |
| ``create_student``, ``list_students``, ``register_student`` | ``symclone.registry`` |
| ``DistillConfig`` | ``symclone.distill`` |
| ``Symmetrized`` | ``symclone.symmetrize`` |
| ``resolve_device`` | ``symclone.runtime`` |
| ``DistributedContext`` | ``symclone.distributed`` |

Subpackages are attributes too (``symclone.distill``, ``symclone.finetune``, ``symclone.teachers``,
...): always the package, never a function.

Examples
--------
>>> import symclone
>>> G = symclone.get_group("c4")
>>> G.order
4
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"  # the one source of the version (pyproject.toml reads it)

_LAZY = {
    # groups and data
    "get_group": "symclone.groups", "list_groups": "symclone.groups", "Group": "symclone.groups",
    "Rep": "symclone.groups", "parse_rep": "symclone.groups",
    "OrbitDataset": "symclone.data", "GaussianImages": "symclone.data",
    "load_fashion_mnist": "symclone.data",
    # checker
    "equivariance_error": "symclone.equivariance", "assert_equivariant": "symclone.equivariance",
    # registries
    "create_teacher": "symclone.registry", "list_teachers": "symclone.registry",
    "register_teacher": "symclone.registry", "create_student": "symclone.registry",
    "list_students": "symclone.registry", "register_student": "symclone.registry",
    # later layers
    "DistillConfig": "symclone.distill", "Symmetrized": "symclone.symmetrize",
    # runtime and scale
    "resolve_device": "symclone.runtime", "DistributedContext": "symclone.distributed",
}

__all__ = sorted(_LAZY) + ["clone", "__version__"]

#: subpackages reachable as attributes without an explicit import (``symclone.distill`` is always the
#: package; the cloning function is :func:`clone` / ``symclone.distill.distill``).
_SUBPACKAGES = ("groups", "data", "distill", "symmetrize", "finetune", "graphs", "trainer",
                "teachers", "students", "analysis")


def clone(student: Any, teacher: Any, data: Any = None, cfg: Any = None, **kwargs: Any) -> dict:
    """Clone ``teacher`` into ``student`` in place and return the metrics (``symclone.distill.distill``).

    Layer by layer, the student's layer ``l`` is fitted so that its features match the teacher's,
    ``min ‖f_l^S(h) − f_l^T(h)‖²`` over inputs ``h`` (function cloning) or, for the kernel-conditioned
    blocks student, over the teacher's kernels as well (family cloning); see
    :class:`symclone.distill.DistillConfig` for every setting and ``docs/cloning.md`` for the modes.

    Parameters
    ----------
    student, teacher : a registered student built for ``teacher``, and the teacher.
    data : ``None`` / ``"gaussian"`` (i.i.d. N(0, 1) inputs), ``"fashion-mnist"``, a dataset or a tensor.
    cfg : a :class:`~symclone.distill.DistillConfig` (default settings when ``None``).
    **kwargs : ``out`` (run directory), ``resume``, ``ctx`` — as in ``symclone.distill.distill``.

    Returns
    -------
    dict
        ``layers`` (per layer ``feature_rel_error``, ``equivariance_error``, ``seconds``, ...), ``mode``,
        ``config``, ``seconds``.

    Examples
    --------
    >>> import symclone
    >>> from symclone.distill import DistillConfig
    >>> t = symclone.create_teacher("cnn", channels=1, depth=1, size=5)
    >>> s = symclone.create_student("mlp", teacher=t)
    >>> m = symclone.clone(s, t, None, DistillConfig(n_train=64, n_eval=8, progress=False))
    >>> m["layers"][0]["feature_rel_error"] < 1e-4
    True
    """
    from symclone.distill import distill

    return distill(student, teacher, data, cfg, **kwargs)


def __getattr__(name: str):
    if name in _LAZY:
        mod = importlib.import_module(_LAZY[name])
        return getattr(mod, name)
    if name in _SUBPACKAGES:
        try:
            return importlib.import_module(f"symclone.{name}")
        except ModuleNotFoundError:
            raise ImportError(
                f"symclone.{name} is not importable: the sibling folders teachers/, students/ and "
                "analysis/ are mapped into the package by the install. Install with "
                "'pip install -e .' (or run 'make test'), and do not run from a copy of symclone/ "
                "alone.") from None
    raise AttributeError(f"module 'symclone' has no attribute {name!r}")
