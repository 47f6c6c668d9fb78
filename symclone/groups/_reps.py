"""Representations: how a group element acts on a tensor.

A representation is named by a string or a :class:`Rep`:

========================  ===========================  =======================================
string                    tensor layout                action
========================  ===========================  =======================================
``"image"``               ``(B, C, H, W)``             roll / rot90 / interpolated rotation
``"regular"``             ``(B, F*4, H, W)``           C4 regular fields (escnn layout: field-
                                                       major, 4 orientation channels per field)
``"irreps:1x0e+1x1o"``    ``(B, N, dim)``              e3nn ``Irreps.D_from_matrix`` per point
``"points"``              ``(B, N, 3)`` (or ``N, 2``)  rotation of coordinates, permutation of N
``"set"``                 ``(B, N, ...)``              permutation of axis 1 only
``"graph"``               ``(B, N, N + d)``            ``[A | X]``: rows and the first N columns
                                                       permuted (``Pᵀ A P``, ``Pᵀ X``)
``"trivial"``             any                          identity (invariant outputs)
========================  ===========================  =======================================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

__all__ = ["Rep", "parse_rep", "RepLike", "REP_KINDS"]

REP_KINDS = ("image", "regular", "irreps", "points", "set", "graph", "trivial")


@dataclass(frozen=True)
class Rep:
    """A named representation.

    Parameters
    ----------
    kind : one of ``REP_KINDS``.
    irreps : e3nn irreps string, only for ``kind == "irreps"``.

    >>> parse_rep("irreps:2x0e+1x1o")
    Rep(kind='irreps', irreps='2x0e+1x1o')
    >>> str(parse_rep("regular"))
    'regular'
    """

    kind: str
    irreps: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in REP_KINDS:
            raise ValueError(f"rep: unknown representation {self.kind!r}; expected one of {REP_KINDS} "
                             "(irreps as 'irreps:<e3nn irreps string>')")
        if self.kind == "irreps" and not self.irreps:
            raise ValueError("rep: 'irreps' needs an e3nn irreps string, e.g. 'irreps:8x0e+4x1o'")

    def __str__(self) -> str:
        return f"irreps:{self.irreps}" if self.kind == "irreps" else self.kind

    @property
    def min_ndim(self) -> int:
        return {"image": 4, "regular": 4, "irreps": 3, "points": 3, "set": 2, "graph": 3, "trivial": 1}[self.kind]


RepLike = Union[str, Rep]


def parse_rep(rep: RepLike) -> Rep:
    """Turn ``"image"``, ``"irreps:8x0e+4x1o"``, ... or a :class:`Rep` into a :class:`Rep`."""
    if isinstance(rep, Rep):
        return rep
    if not isinstance(rep, str):
        raise ValueError(f"rep: expected a string or Rep, got {type(rep).__name__}")
    if rep.startswith("irreps:"):
        return Rep("irreps", rep[len("irreps:"):].strip())
    return Rep(rep.strip())
