"""Input validation shared by the analysis functions: ``W`` against its shapes, groups against reps.

Every function here raises ``ValueError`` naming the argument and the expected shape/group.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from symclone.groups import Group, Rep, RepLike, get_group, parse_rep

__all__ = ["Layout", "check_matrix", "resolve", "check_padding", "TRANSLATION_PADDINGS"]

#: paddings accepted for translation structure: "circular" = cyclic shifts (a group, t2), the
#: others = the non-cyclic shift basis (Toeplitz: constant along the diagonals y - y')
TRANSLATION_PADDINGS = ("circular", "valid", "zeros")


@dataclass(frozen=True)
class Layout:
    """A validated problem: ``W`` is ``(prod(out_shape), prod(in_shape))`` and ``group`` acts on
    ``in_rep``/``out_rep``; ``fast`` says whether the strided t2/c4/p4 path applies."""

    group: Group
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    in_rep: Rep
    out_rep: Rep
    padding: str
    fast: bool

    @property
    def cyclic(self) -> bool:
        """Whether translations are cyclic shifts (``padding == "circular"``) rather than Toeplitz."""
        return self.padding == "circular"


def _shape(shape: Sequence[int], name: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"{name}: expected a tuple of positive ints, got {shape!r}") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"{name}: expected a tuple of positive ints, got {shape}")
    return shape


def check_matrix(W: torch.Tensor, in_shape: Sequence[int], out_shape: Sequence[int]
                 ) -> tuple[torch.Tensor, tuple[int, ...], tuple[int, ...]]:
    """Check that ``W`` is a floating ``(prod(out_shape), prod(in_shape))`` matrix.

    Examples
    --------
    >>> check_matrix(torch.zeros(6, 4), (1, 2, 2), (6,))[1]
    (1, 2, 2)
    """
    in_shape, out_shape = _shape(in_shape, "in_shape"), _shape(out_shape, "out_shape")
    if not isinstance(W, torch.Tensor) or W.ndim != 2:
        got = tuple(W.shape) if isinstance(W, torch.Tensor) else type(W).__name__
        raise ValueError(f"W: expected a 2D matrix (prod(out_shape), prod(in_shape)), got {got}")
    want = (math.prod(out_shape), math.prod(in_shape))
    if tuple(W.shape) != want:
        raise ValueError(f"W: expected shape {want} = (prod(out_shape={out_shape}), prod(in_shape={in_shape})) "
                         f"in PyTorch Linear convention, got {tuple(W.shape)}")
    W = W.detach().contiguous()
    if not W.is_floating_point():
        W = W.double()
    elif W.dtype in (torch.float16, torch.bfloat16):
        W = W.float()
    return W, in_shape, out_shape


def check_padding(padding: str) -> str:
    """Return ``padding`` if it is one of :data:`TRANSLATION_PADDINGS`; ``ValueError`` otherwise."""
    if padding not in TRANSLATION_PADDINGS:
        raise ValueError(f"padding: expected one of {TRANSLATION_PADDINGS}, got {padding!r}")
    return padding


def _spatial(shape: tuple[int, ...], rep: Rep, name: str) -> None:
    if len(shape) != 3:
        raise ValueError(f"{name}: rep {rep} needs a per-sample shape (C, H, W), got {shape}")
    if rep.kind == "regular" and shape[0] % 4:
        raise ValueError(f"{name}: rep 'regular' needs channels divisible by 4 (C4 fields), got {shape}")


def resolve(W: torch.Tensor, group: str | Group, in_shape: Sequence[int], out_shape: Sequence[int],
            in_rep: RepLike = "image", out_rep: RepLike = "image", padding: str | None = None,
            method: str = "auto") -> tuple[torch.Tensor, Layout]:
    """Validate everything and decide between the strided fast path and the generic path."""
    W, in_shape, out_shape = check_matrix(W, in_shape, out_shape)
    in_rep, out_rep = parse_rep(in_rep), parse_rep(out_rep)
    if method not in ("auto", "fast", "generic"):
        raise ValueError(f"method: expected 'auto', 'fast' or 'generic', got {method!r}")
    spatial = in_rep.is_image
    if isinstance(group, str):
        size = in_shape[-2:] if spatial and len(in_shape) == 3 else None
        n = in_shape[0] if in_rep.has_object_axis else None
        G = get_group(group, size=size, n=n)
    elif isinstance(group, Group):
        G = group
    else:
        raise ValueError(f"group: expected a name or Group, got {type(group).__name__}")
    for rep, name in ((in_rep, "in_rep"), (out_rep, "out_rep")):
        if not G.acts_on(rep):
            raise ValueError(f"{name}: group {G.name!r} does not act on rep {rep} "
                             f"(in_shape {in_shape} -> out_shape {out_shape})")
    if not G.is_finite:
        raise ValueError(f"group: the Reynolds projection needs a finite group, {G.name!r} is continuous "
                         "(use lie_derivative for continuous symmetries)")
    fast = G.name in ("t2", "c4", "p4") and in_rep.is_image and out_rep.is_image
    if fast:
        _spatial(in_shape, in_rep, "in_shape")
        _spatial(out_shape, out_rep, "out_shape")
        same = in_shape[1:] == out_shape[1:]
        padding = check_padding(padding or ("circular" if same else "valid"))
        if padding == "circular" and not same and G.name != "c4":
            raise ValueError(f"padding: circular translations need equal input/output grids, got "
                             f"in_shape {in_shape} and out_shape {out_shape} (use padding='valid')")
        if G.name in ("c4", "p4"):
            for shp, name in ((in_shape, "in_shape"), (out_shape, "out_shape")):
                if shp[1] != shp[2]:
                    raise ValueError(f"{name}: group {G.name!r} rotates by 90 degrees and needs square "
                                     f"grids, got {shp}")
        size = getattr(G, "size", None)
        if size is not None and tuple(size) != tuple(in_shape[1:]):
            raise ValueError(f"group: {G!r} was built for {tuple(size)} grids, in_shape is {in_shape}")
    else:
        padding = padding or "circular"
    if method == "fast" and not fast:
        raise ValueError(f"method: no fast path for group {G.name!r} on {in_rep} -> {out_rep}; "
                         "use method='generic'")
    if method == "generic":
        if fast and padding != "circular" and G.name != "c4":
            raise ValueError("method: the generic path applies group elements; non-cyclic (Toeplitz) "
                             f"translation structure ({in_shape} -> {out_shape}) has no group action")
        fast = False
    return W, Layout(G, in_shape, out_shape, in_rep, out_rep, padding, fast)
