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

This module is the single table of representation kinds: :data:`REP_KINDS` (every kind),
:data:`IMAGE_KINDS` (kinds on a spatial grid, last two axes ``H, W``) and :data:`OBJECT_KINDS` (kinds
whose axis 1 indexes objects: points, set elements, graph nodes), and for each kind its layout and
minimum number of dimensions (:attr:`Rep.layout`, :attr:`Rep.min_ndim`).

Examples
--------
>>> IMAGE_KINDS, parse_rep("regular").is_image, parse_rep("points").has_object_axis
(('image', 'regular'), True, True)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Union

__all__ = ["Rep", "parse_rep", "RepLike", "REP_KINDS", "IMAGE_KINDS", "OBJECT_KINDS"]


class _Kind(NamedTuple):
    layout: str          #: tensor layout, for error messages
    min_ndim: int        #: fewest dimensions a tensor of this kind has (batch included)
    image: bool          #: laid out on a spatial grid, the last two axes ``H, W``
    objects: bool        #: axis 1 indexes objects (points, set elements, graph nodes)


#: the one table of representation kinds (order: as listed in error messages)
_KINDS: dict[str, _Kind] = {
    "image": _Kind("(B, C, H, W)", 4, image=True, objects=False),
    "regular": _Kind("(B, F*4, H, W)", 4, image=True, objects=False),
    "irreps": _Kind("(B, N, dim)", 3, image=False, objects=True),
    "points": _Kind("(B, N, 3)", 3, image=False, objects=True),
    "set": _Kind("(B, N, ...)", 2, image=False, objects=True),
    "graph": _Kind("(B, N, N + d)", 3, image=False, objects=True),
    "trivial": _Kind("(B, ...)", 1, image=False, objects=False),
}

#: every representation kind
REP_KINDS: tuple[str, ...] = tuple(_KINDS)
#: kinds laid out on a spatial grid ``(B, C, H, W)``: the planar groups (t2, c4, p4, so2) act on them
IMAGE_KINDS: tuple[str, ...] = tuple(k for k, v in _KINDS.items() if v.image)
#: kinds whose axis 1 indexes ``N`` objects (points, set elements, graph nodes): ``sn`` permutes it
OBJECT_KINDS: tuple[str, ...] = tuple(k for k, v in _KINDS.items() if v.objects)


@dataclass(frozen=True)
class Rep:
    """A named representation.

    Parameters
    ----------
    kind : one of ``REP_KINDS``.
    irreps : e3nn irreps string, only for ``kind == "irreps"``.

    Examples
    --------
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
        """Fewest dimensions (batch axis included) a tensor laid out as this rep has.

        Examples
        --------
        >>> parse_rep("image").min_ndim, parse_rep("set").min_ndim
        (4, 2)
        """
        return _KINDS[self.kind].min_ndim

    @property
    def layout(self) -> str:
        """The tensor layout in words, e.g. ``"(B, C, H, W)"`` (used in error messages)."""
        return _KINDS[self.kind].layout

    @property
    def is_image(self) -> bool:
        """Whether the rep lives on a spatial grid (``image``, ``regular``: last two axes ``H, W``)."""
        return _KINDS[self.kind].image

    @property
    def has_object_axis(self) -> bool:
        """Whether axis 1 indexes objects that ``sn`` permutes (``irreps``, ``points``, ``set``, ``graph``)."""
        return _KINDS[self.kind].objects


RepLike = Union[str, Rep]


def parse_rep(rep: RepLike) -> Rep:
    """Turn ``"image"``, ``"irreps:8x0e+4x1o"``, ... or a :class:`Rep` into a :class:`Rep`.

    Raises ``ValueError`` for an unknown kind or an ``irreps`` rep without an irreps string.
    """
    if isinstance(rep, Rep):
        return rep
    if not isinstance(rep, str):
        raise ValueError(f"rep: expected a string or Rep, got {type(rep).__name__}")
    if rep.startswith("irreps:"):
        return Rep("irreps", rep[len("irreps:"):].strip())
    return Rep(rep.strip())
