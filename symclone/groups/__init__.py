"""Groups and representations (docs/design.md §2).

``get_group(name, **kw)`` builds a group; ``group.act(g, x, rep)`` applies an element. Every group
action lives here (the symmetrization wrappers apply elements through it), and so does the table of
representation kinds (:data:`REP_KINDS`, :data:`IMAGE_KINDS`, :data:`OBJECT_KINDS`).
Elements passed to ``act``/``compose``/``inverse`` are validated (``group.validate(g)``); hot loops
that produce elements themselves can skip the value checks with ``validate=False`` or
``with unchecked():``.

Examples
--------
>>> G = get_group("c4"); x = torch.randn(1, 8, 6, 6)
>>> y = G.act(G.elements()[1], x, "regular")
>>> y.shape
torch.Size([1, 8, 6, 6])
"""
from __future__ import annotations

import torch

from ._base import Group, check_tensor, orthogonality_tol, unchecked, validation_enabled
from ._image_ops import roll_batched, rot90_batched, rotate_shift
from ._planar import C4, P4, SO2, T2
from ._product import DirectProduct
from ._reps import IMAGE_KINDS, OBJECT_KINDS, REP_KINDS, Rep, RepLike, parse_rep
from ._permutation import Sn
from ._spatial import O3, SO3, OrthogonalGroup3, act_o3, irreps_blocks, random_rotation

__all__ = ["Group", "get_group", "list_groups", "Rep", "RepLike", "parse_rep", "REP_KINDS",
           "IMAGE_KINDS", "OBJECT_KINDS",
           "T2", "C4", "P4", "SO2", "OrthogonalGroup3", "SO3", "O3", "Sn", "DirectProduct", "check_tensor",
           "roll_batched", "rot90_batched", "rotate_shift", "random_rotation", "act_o3", "irreps_blocks",
           "unchecked", "validation_enabled", "orthogonality_tol"]

_FACTORIES = {"t2": T2, "c4": C4, "p4": P4, "so2": SO2, "so3": SO3, "o3": O3, "sn": Sn}
_SIZE_KW = {"t2": "size", "p4": "size", "sn": "n"}


def list_groups() -> list[str]:
    """Names accepted by :func:`get_group` (products are written ``"sn x o3"``)."""
    return sorted(_FACTORIES)


def get_group(name: str | Group, size=None, n: int | None = None) -> Group:
    """Build a group by name.

    Parameters
    ----------
    name : ``"t2" | "c4" | "p4" | "so2" | "so3" | "o3" | "sn"`` or a product ``"sn x o3"``.
    size : grid size ``H`` or ``(H, W)`` (positive ints) for ``t2``/``p4`` (needed to sample/list
        elements and to range-check shifts); ignored by the other groups.
    n : number of objects for ``sn`` (a positive int); ignored by the other groups.

    Raises
    ------
    ValueError
        for an unknown name, or a ``size``/``n`` that is not a positive int (pair), naming the
        argument and the group.

    Examples
    --------
    >>> get_group("p4", size=28).order
    3136
    >>> get_group("sn x o3", n=5).name
    'sn x o3'
    """
    if isinstance(name, Group):
        return name
    if not isinstance(name, str):
        raise ValueError(f"group: expected a name or Group, got {type(name).__name__}")
    parts = [p.strip().lower() for p in name.replace("×", "x").split(" x ")]
    groups = []
    for p in parts:
        if p not in _FACTORIES:
            raise ValueError(f"group: unknown group {p!r}; expected one of {list_groups()} "
                             "or a product such as 'sn x o3'")
        kw = {}
        if _SIZE_KW.get(p) == "size":
            kw["size"] = size
        elif _SIZE_KW.get(p) == "n":
            kw["n"] = n
        groups.append(_FACTORIES[p](**kw))
    return groups[0] if len(groups) == 1 else DirectProduct(*groups)
