"""Input noise ``ε`` of learned samplers: ``g = post(q(x + ε))`` (docs/design.md §5).

The noise distribution must be invariant under the group (i.i.d. Gaussian is invariant under
permutations and orthogonal maps; i.i.d. uniform under permutations) so that ``p(g | x)`` stays
equivariant.
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["add_noise", "NOISE_KINDS"]

NOISE_KINDS = ("gaussian", "uniform")


def add_noise(x: torch.Tensor, scale: float, kind: str = "gaussian",
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``x + ε`` with ``ε ~ N(0, scale²)`` or ``U[0, scale]`` i.i.d.; ``x`` itself if ``scale == 0``.

    Examples
    --------
    >>> add_noise(torch.zeros(2), 0.0).tolist()
    [0.0, 0.0]
    >>> bool((add_noise(torch.zeros(100), 0.5, "uniform") <= 0.5).all())
    True
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise_kind: expected one of {NOISE_KINDS}, got {kind!r}")
    if scale < 0:
        raise ValueError(f"noise: expected a scale >= 0, got {scale}")
    if scale == 0:
        return x
    if kind == "gaussian":
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    else:
        eps = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + scale * eps
