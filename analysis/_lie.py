"""Lie derivative of a function under continuous image transformations (Gruver et al. 2023).

For a one-parameter group g_t = exp(t A) acting on images by ρ_in and on outputs by ρ_out,

    L_A f(x) = d/dt [ρ_out(g_t)⁻¹ f(ρ_in(g_t) x)] |_{t=0} = J_f(x) · (Â x) − Â_out f(x),

where Â x = d/dt ρ(g_t) x |_{t=0} is the infinitesimal generator. ``J_f(x) · v`` is one forward-mode
product, ``torch.func.jvp``. L_A f = 0 for every x iff f is equivariant to the whole continuous
group (invariant when ``out_rep="trivial"``, then Â_out = 0).

Generators on images ``(B, C, H, W)``, with the image as a function of the continuous position
(row r, column c), derivatives by circular central differences:

* ``"translation_x"``: (g_t x)(r, c) = x(r, c − t)  ⇒  Âx = −∂_c x   (t in pixels);
* ``"translation_y"``: (g_t x)(r, c) = x(r − t, c)  ⇒  Âx = −∂_r x;
* ``"rotation"``: counter-clockwise like ``torch.rot90`` and the ``so2`` group, about the centre,
  (r, c) ↦ (−c, r) per quarter turn  ⇒  Âx = c̃ ∂_r x − r̃ ∂_c x   (centred coordinates r̃, c̃; t in radians).

Circular differences commute exactly with circular convolutions, so a circular CNN has
``L_translation f = 0`` to rounding; rotations are only approximately captured on a pixel grid.

>>> import torch
>>> conv = torch.nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular").double()
>>> x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
>>> float(lie_derivative(conv, "translation_x", x).abs().max()) < 1e-12
True
"""
from __future__ import annotations

from typing import Callable, Union

import torch

__all__ = ["lie_derivative", "lie_generator", "GENERATORS"]

GENERATORS = ("translation_x", "translation_y", "rotation")


def _d(x: torch.Tensor, dim: int) -> torch.Tensor:
    return (torch.roll(x, -1, dims=dim) - torch.roll(x, 1, dims=dim)) / 2


def lie_generator(name: str, x: torch.Tensor) -> torch.Tensor:
    """The infinitesimal action ``Â x`` of a named generator on images ``(..., H, W)``.

    A bump at column 3 moving right (+x) decreases at column 2 and grows at column 4:

    >>> x = torch.zeros(1, 1, 5, 5); x[0, 0, 2, 3] = 1.0
    >>> (lie_generator("translation_x", x)[0, 0, 2] + 0.0).tolist()
    [0.0, 0.0, -0.5, 0.0, 0.5]
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError(f"x: expected an image tensor (..., H, W), got {getattr(x, 'shape', type(x))}")
    if name == "translation_x":
        return -_d(x, -1)
    if name == "translation_y":
        return -_d(x, -2)
    if name == "rotation":
        H, W = x.shape[-2:]
        r = (torch.arange(H, dtype=x.dtype, device=x.device) - (H - 1) / 2)[:, None]
        c = (torch.arange(W, dtype=x.dtype, device=x.device) - (W - 1) / 2)[None, :]
        return c * _d(x, -2) - r * _d(x, -1)
    raise ValueError(f"generator: expected one of {GENERATORS} or a callable x -> Âx, got {name!r}")


def lie_derivative(f: Callable[[torch.Tensor], torch.Tensor],
                   generator: Union[str, Callable[[torch.Tensor], torch.Tensor]],
                   x: torch.Tensor, out_rep: str = "image") -> torch.Tensor:
    """``L f(x) = J_f(x)·(Â x) − Â_out f(x)`` via ``torch.func.jvp`` (see the module docstring).

    Parameters
    ----------
    f : a differentiable function / module of images ``(B, C, H, W)``.
    generator : ``"translation_x"``, ``"translation_y"``, ``"rotation"`` or a callable ``x -> Âx``
        (used for both input and, with ``out_rep="image"``, output).
    x : input batch ``(B, C, H, W)``.
    out_rep : ``"image"`` (outputs are images transformed by the same generator) or
        ``"trivial"`` (invariant outputs, e.g. logits).

    Returns
    -------
    Tensor shaped like ``f(x)``; ``‖L f(x)‖ / ‖f(x)‖`` is a scale-free equivariance measure.

    >>> f = lambda x: x.sum(dim=(-2, -1))
    >>> x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    >>> float(lie_derivative(f, "translation_y", x, out_rep="trivial").abs().max()) < 1e-12
    True
    """
    if out_rep not in ("image", "trivial"):
        raise ValueError(f"out_rep: expected 'image' or 'trivial', got {out_rep!r}")
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"x: expected a floating image batch (B, C, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    gen = (lambda t: lie_generator(generator, t)) if isinstance(generator, str) else generator
    if not callable(gen):
        raise ValueError(f"generator: expected a name in {GENERATORS} or a callable, got {generator!r}")
    tangent = gen(x)
    if tangent.shape != x.shape:
        raise ValueError(f"generator: Âx must have x's shape {tuple(x.shape)}, got {tuple(tangent.shape)}")
    fx, jv = torch.func.jvp(f, (x,), (tangent,))
    if out_rep == "trivial":
        return jv
    if fx.ndim < 2:
        raise ValueError(f"out_rep: 'image' needs image-like outputs (..., H, W), got shape {tuple(fx.shape)}")
    return jv - gen(fx)
