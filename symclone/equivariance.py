"""The shared equivariance checker (docs/design.md §8.1).

``equivariance_error(f, group, rep_in, rep_out, x)`` measures, for group elements g,

    err(g) = ‖f(g·x) − g·f(x)‖ / ‖f(x)‖        (norms over the whole batch)

over all elements of a small finite group, or ``n`` sampled elements otherwise. The default
precision is float64 (the model and input are cast, then restored). ``assert_equivariant`` raises
when the largest error exceeds the tolerance of the dtype.

Examples
--------
>>> import torch
>>> f = lambda x: torch.relu(x) * 2
>>> r = equivariance_error(f, "c4", "image", "image", input_shape=(2, 1, 5, 5))
>>> r["max"] < 1e-12
True
>>> w = torch.randn(25, 25, dtype=torch.float64)
>>> mlp = lambda x: (x.flatten(1) @ w).view_as(x)
>>> equivariance_error(mlp, "c4", "image", "image", input_shape=(2, 1, 5, 5))["max"] > 0.1
True
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Optional, Sequence

import torch

from .groups import Group, RepLike, get_group, parse_rep

__all__ = ["equivariance_error", "assert_equivariant", "TOLERANCES", "cast_module"]

log = logging.getLogger(__name__)

#: relative-error tolerances per dtype. float64 is 1e-6 rather than ~1e-12 because escnn samples
#: its steerable kernel basis in float32 (docs/design.md §10: ~1e-7 even after ``.double()``).
TOLERANCES = {torch.float64: 1e-6, torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}

_MAX_ENUMERATED = 64


@contextlib.contextmanager
def cast_module(f: Any, dtype: Optional[torch.dtype]):
    """Temporarily cast an ``nn.Module``'s floating parameters/buffers to ``dtype``."""
    if dtype is None or not isinstance(f, torch.nn.Module):
        yield f
        return
    saved = {k: v.detach().clone() for k, v in f.state_dict().items()}
    old = next((p.dtype for p in f.parameters() if p.is_floating_point()), None)
    f.to(dtype)
    try:
        yield f
    finally:
        if old is not None:
            f.to(old)
        f.load_state_dict(saved)


def _elements(group: Group, n: int, generator: torch.Generator) -> list:
    order = group.order
    if order is not None and order <= _MAX_ENUMERATED:
        els = group.elements()
    else:
        els = group.sample(n, generator)
    size = len(els[0]) if isinstance(els, tuple) else len(els)
    return [group.index(els, i) for i in range(size)]


def _norm(t: Any) -> torch.Tensor:
    if isinstance(t, (list, tuple)):
        return torch.sqrt(sum(_norm(u) ** 2 for u in t))
    return t.double().norm()


def equivariance_error(f: Callable, group: str | Group, rep_in: RepLike, rep_out: RepLike,
                       x: Optional[torch.Tensor] = None, input_shape: Optional[Sequence[int]] = None,
                       n: int = 8, dtype: Optional[torch.dtype] = torch.float64,
                       elements: Optional[list] = None, seed: int = 0) -> dict:
    """Relative equivariance error of ``f`` per group element.

    Parameters
    ----------
    f : callable or ``nn.Module`` mapping a tensor laid out as ``rep_in`` to one laid out as ``rep_out``.
    group : a :class:`~symclone.groups.Group` or a name for :func:`~symclone.groups.get_group`.
    x : input batch; if omitted, a standard Gaussian of ``input_shape``.
    n : number of sampled elements for infinite or large groups (finite groups with at most 64
        elements are enumerated).
    dtype : precision of the check (model and input are cast; ``None`` keeps them as they are).
    elements : explicit list of elements to test (overrides enumeration/sampling).

    Returns
    -------
    dict with ``errors`` (list of floats, one per element), ``max``, ``mean``, ``dtype``, ``n``.
    """
    rep_in, rep_out = parse_rep(rep_in), parse_rep(rep_out)
    gen = torch.Generator().manual_seed(seed)
    if x is None:
        if input_shape is None:
            raise ValueError("x: give an input batch x or input_shape")
        x = torch.randn(*input_shape, generator=gen)
    if isinstance(group, str):
        size = tuple(x.shape[-2:]) if rep_in.is_image else None
        npts = x.shape[1] if rep_in.kind in ("points", "set", "irreps") else None
        group = get_group(group, size=size, n=npts)
    if not group.acts_on(rep_in):
        raise ValueError(f"rep_in: group {group.name!r} does not act on {rep_in}")
    if not group.acts_on(rep_out):
        raise ValueError(f"rep_out: group {group.name!r} does not act on {rep_out}")
    if dtype is not None and x.is_floating_point():
        x = x.to(dtype)
    els = elements if elements is not None else _elements(group, n, gen)
    errors = []
    with cast_module(f, dtype), torch.no_grad():
        fx = f(x)
        denom = float(_norm(fx)) or 1.0
        for g in els:
            lhs = f(group.act(g, x, rep_in))
            rhs = group.act(g, fx, rep_out)
            errors.append(float(_norm(lhs - rhs)) / denom)
    out = {"errors": errors, "max": max(errors), "mean": sum(errors) / len(errors),
           "dtype": str(x.dtype).replace("torch.", ""), "n": len(errors), "group": group.name}
    log.debug("equivariance error of %s under %s: max %.3e", type(f).__name__, group.name, out["max"])
    return out


def assert_equivariant(f: Callable, group: str | Group, rep_in: RepLike, rep_out: RepLike,
                       x: Optional[torch.Tensor] = None, input_shape: Optional[Sequence[int]] = None,
                       atol: Optional[float] = None, dtype: Optional[torch.dtype] = torch.float64,
                       **kwargs) -> dict:
    """Raise ``AssertionError`` if ``equivariance_error(...)["max"]`` exceeds ``atol`` (default:
    :data:`TOLERANCES` of the checked dtype). Returns the error dict otherwise."""
    res = equivariance_error(f, group, rep_in, rep_out, x=x, input_shape=input_shape, dtype=dtype, **kwargs)
    checked = dtype or (x.dtype if x is not None else torch.get_default_dtype())
    tol = atol if atol is not None else TOLERANCES.get(checked, 1e-4)
    if not res["max"] <= tol:
        raise AssertionError(f"not equivariant under {res['group']}: max relative error "
                             f"{res['max']:.3e} > tolerance {tol:.1e} ({res['dtype']}); errors={res['errors']}")
    return res
