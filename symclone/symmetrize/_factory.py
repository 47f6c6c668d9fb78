"""``make_sampler(name, group, rep_in, ...)``: the default sampler for a group and representation."""
from __future__ import annotations

from typing import Any, Optional

from ..groups import C4, P4, SO2, DirectProduct, Group, OrthogonalGroup3, RepLike, Sn, parse_rep
from ._base import Sampler

__all__ = ["make_sampler", "SAMPLER_NAMES"]

SAMPLER_NAMES = ("uniform", "canonical", "learned")


def make_sampler(name: str, group: Group, rep_in: RepLike, noise: Optional[float] = None,
                 **kw: Any) -> Sampler:
    """Build the default sampler.

    ``uniform``: :class:`UniformSampler` (``k`` uniform samples per input, or the exact average over a
    finite group for ``k="all"`` or ``|G| <= k``; see :class:`Symmetrized`). ``canonical`` /
    ``learned``: the group's equivariant network (``canonical`` = deterministic argmax / frame, k = 1):
    c4/p4 → :class:`C4Sampler` (canonical c4: the orbit scores
    :class:`C4OrbitScores`; learned c4 and p4: the escnn network, ``net=`` chooses); so2 (2D points) → :class:`SO2Sampler`; o3/so3 and
    ``sn x o3``/``sn x so3`` → :class:`FrameSampler`; sn → :class:`SnSampler` with a DeepSets or
    graph score network.

    Examples
    --------
    >>> from symclone.groups import get_group
    >>> type(make_sampler("learned", get_group("sn x o3", n=5), "points")).__name__
    'FrameSampler'
    """
    rep = parse_rep(rep_in)
    if name not in SAMPLER_NAMES:
        raise ValueError(f"sampler: expected one of {SAMPLER_NAMES} or a Sampler instance, got {name!r}")
    if name == "uniform":
        from ._uniform import UniformSampler
        if noise:
            raise ValueError("noise: the uniform sampler takes no input noise")
        return UniformSampler(group, **kw)
    det = name == "canonical"
    if det and noise:
        raise ValueError(f"noise: the canonical sampler is deterministic (noise 0), got noise={noise}")
    if isinstance(group, (C4, P4)):
        from ._finite import C4Sampler
        if not rep.is_image:
            raise ValueError(f"rep_in: {group.name} samplers act on 'image' or 'regular', got {rep}")
        kw.setdefault("regular_input", rep.kind == "regular")
        kw.setdefault("in_channels", 4 if rep.kind == "regular" else 1)
        return C4Sampler(group, noise=0.05 if noise is None else noise, deterministic=det, **kw)
    if isinstance(group, SO2):
        from ._frames import SO2Sampler
        if rep.kind != "points":
            raise ValueError(f"rep_in: the learned so2 sampler supports 2D 'points' (B, N, 2), got {rep}")
        return SO2Sampler(noise=0.1 if noise is None else noise, deterministic=det, **kw)
    factors = group.factors if isinstance(group, DirectProduct) else (group,)
    if any(isinstance(f, OrthogonalGroup3) for f in factors):
        from ._frames import FrameSampler
        return FrameSampler(group, rep, noise=0.1 if noise is None else noise, deterministic=det, **kw)
    if isinstance(group, Sn):
        from ._scorenets import DeepSetScores, GraphScores
        from ._sn import SnSampler
        hidden = kw.pop("hidden", 32)
        if rep.kind == "graph":
            if "d" not in kw and "score_net" not in kw:
                raise ValueError("d: the default graph score network needs the node-feature size d "
                                 "(pass d=..., or score_net=...)")
            net = kw.pop("score_net", None) or GraphScores(kw.pop("d"), hidden)
        else:
            if "in_features" not in kw and "score_net" not in kw:
                raise ValueError("in_features: the default S_n score network needs the number of features "
                                 "per element (pass in_features=..., or score_net=...)")
            net = kw.pop("score_net", None) or DeepSetScores(kw.pop("in_features"), hidden)
        return SnSampler(net, n=group.n, noise=0.1 if noise is None else noise, deterministic=det,
                         group=group, **kw)
    raise ValueError(f"group: no default {name} sampler for {group.name!r}; supported: c4, p4, so2, "
                     "so3, o3, sn, sn x o3, sn x so3 (or pass a Sampler)")
