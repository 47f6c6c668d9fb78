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

How ``J_f(x)·v`` is evaluated (``method``):

* ``"jvp"``: forward-mode AD. Fused attention kernels (flash / memory-efficient scaled dot-product
  attention) have no forward-mode derivative, so on failure the product is retried with the
  ``MATH`` attention backend (``torch.nn.attention.sdpa_kernel``), which has one;
* ``"fd"``: a central finite difference ``(f(x + h v) − f(x − h v)) / 2h`` in float64 (``x`` and
  ``f`` must be float64), for functions forward-mode AD cannot differentiate at all;
* ``"auto"``: ``"jvp"``, then ``"fd"`` when the jvp is impossible and ``x`` is float64.

:func:`relative_lie_derivative` returns ``‖L f(x)‖ / ‖f(x)‖`` together with the method that was used.
When ``f`` maps to a smaller grid (valid convolutions), the measure is taken on the output's
interior (a 1-pixel border dropped): there a valid convolution commutes with central differences,
while the border would need input pixels outside the image.

Examples
--------
>>> import torch
>>> conv = torch.nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular").double()
>>> x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
>>> float(lie_derivative(conv, "translation_x", x).abs().max()) < 1e-12
True
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable, ContextManager, Union

import torch

__all__ = ["lie_derivative", "lie_generator", "relative_lie_derivative", "GENERATORS", "METHODS"]

log = logging.getLogger(__name__)

GENERATORS = ("translation_x", "translation_y", "rotation")
METHODS = ("auto", "jvp", "fd")

Generator = Union[str, Callable[[torch.Tensor], torch.Tensor]]


def _d(x: torch.Tensor, dim: int) -> torch.Tensor:
    return (torch.roll(x, -1, dims=dim) - torch.roll(x, 1, dims=dim)) / 2


def lie_generator(name: str, x: torch.Tensor) -> torch.Tensor:
    """The infinitesimal action ``Â x`` of a named generator on images ``(..., H, W)``.

    A bump at column 3 moving right (+x) decreases at column 2 and grows at column 4:

    Examples
    --------
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


def _math_attention() -> ContextManager:
    """Context selecting the MATH scaled-dot-product-attention backend (forward-mode AD capable)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # older torch: nothing to select
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _jvp(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, v: torch.Tensor
         ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(f(x), J_f(x)·v, method)``; retried with the MATH attention backend if forward AD fails."""
    try:
        fx, jv = torch.func.jvp(f, (x,), (v,))
        return fx, jv, "jvp"
    except (NotImplementedError, RuntimeError) as err:
        first = err
    log.debug("jvp failed (%s); retrying with the math attention backend", _first_line(first))
    try:
        with _math_attention():
            fx, jv = torch.func.jvp(f, (x,), (v,))
    except (NotImplementedError, RuntimeError) as err:
        raise NotImplementedError(f"forward-mode AD is not available for this function: {_first_line(first)}; "
                                  f"with the math attention backend: {_first_line(err)}") from err
    return fx, jv, "jvp (math attention backend)"


def _fd(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, v: torch.Tensor, eps: float | None
        ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(f(x), (f(x + h v) − f(x − h v)) / 2h, method)`` in float64, ``h = eps·‖x‖/‖v‖``."""
    if x.dtype != torch.float64:
        raise ValueError(f"method: finite differences need float64 inputs (and a float64 f), got {x.dtype}")
    vn = float(v.norm())
    if vn == 0.0:
        with torch.no_grad():
            fx = f(x)
        return fx, torch.zeros_like(fx), "finite difference (float64)"
    rel = 1e-5 if eps is None else float(eps)  # ≈ (float64 eps)^(1/3): balances truncation and rounding
    h = rel * max(float(x.norm()), 1e-12) / vn
    with torch.no_grad():
        fx, fp, fm = f(x), f(x + h * v), f(x - h * v)
    if fx.dtype != torch.float64:
        raise ValueError(f"method: finite differences need a float64 f, got outputs of {fx.dtype}")
    return fx, (fp - fm) / (2 * h), f"finite difference (float64, h={h:.2g})"


def _lie(f: Callable[[torch.Tensor], torch.Tensor], generator: Generator, x: torch.Tensor, out_rep: str,
         method: str, eps: float | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(L f(x), f(x), method used)``; see :func:`lie_derivative`."""
    if out_rep not in ("image", "trivial"):
        raise ValueError(f"out_rep: expected 'image' or 'trivial', got {out_rep!r}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"x: expected a floating image batch (B, C, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    gen = (lambda t: lie_generator(generator, t)) if isinstance(generator, str) else generator
    if not callable(gen):
        raise ValueError(f"generator: expected a name in {GENERATORS} or a callable, got {generator!r}")
    tangent = gen(x)
    if tangent.shape != x.shape:
        raise ValueError(f"generator: Âx must have x's shape {tuple(x.shape)}, got {tuple(tangent.shape)}")
    if method == "fd":
        fx, jv, used = _fd(f, x, tangent, eps)
    else:
        try:
            fx, jv, used = _jvp(f, x, tangent)
        except NotImplementedError as err:
            if method == "jvp" or x.dtype != torch.float64:
                raise NotImplementedError(f"{err}; method='fd' with float64 x and f computes a central "
                                          "finite difference instead") from err
            log.info("Lie derivative by finite differences: %s", err)
            fx, jv, used = _fd(f, x, tangent, eps)
    if out_rep == "trivial":
        return jv, fx, used
    if fx.ndim < 2:
        raise ValueError(f"out_rep: 'image' needs image-like outputs (..., H, W), got shape {tuple(fx.shape)}")
    return jv - gen(fx), fx, used


def lie_derivative(f: Callable[[torch.Tensor], torch.Tensor], generator: Generator, x: torch.Tensor,
                   out_rep: str = "image", method: str = "auto", eps: float | None = None) -> torch.Tensor:
    """``L f(x) = J_f(x)·(Â x) − Â_out f(x)`` (see the module docstring).

    Parameters
    ----------
    f : a differentiable function / module of images ``(B, C, H, W)``.
    generator : ``"translation_x"``, ``"translation_y"``, ``"rotation"`` or a callable ``x -> Âx``
        (used for both input and, with ``out_rep="image"``, output).
    x : input batch ``(B, C, H, W)``.
    out_rep : ``"image"`` (outputs are images transformed by the same generator) or
        ``"trivial"`` (invariant outputs, e.g. logits).
    method : ``"auto"``, ``"jvp"`` (forward-mode AD, with the MATH attention backend as a retry) or
        ``"fd"`` (central finite difference; float64 ``x`` and ``f`` only).
    eps : finite-difference step relative to ``‖x‖`` (default ``1e-5``); unused by the jvp.

    Returns
    -------
    Tensor shaped like ``f(x)``; ``‖L f(x)‖ / ‖f(x)‖`` is a scale-free equivariance measure.

    Raises
    ------
    NotImplementedError
        ``method="jvp"`` (or ``"auto"`` with a non-float64 ``x``) and forward-mode AD is unavailable.

    Examples
    --------
    >>> f = lambda x: x.sum(dim=(-2, -1))
    >>> x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    >>> float(lie_derivative(f, "translation_y", x, out_rep="trivial").abs().max()) < 1e-12
    True
    >>> conv = torch.nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular").double()
    >>> float(lie_derivative(conv, "translation_x", x, method="fd").abs().max()) < 1e-8
    True
    """
    return _lie(f, generator, x, out_rep, method, eps)[0]


def relative_lie_derivative(f: Callable[[torch.Tensor], torch.Tensor], generator: Generator, x: torch.Tensor,
                            out_rep: str = "image", method: str = "auto", eps: float | None = None) -> dict:
    """``‖L f(x)‖ / ‖f(x)‖`` and how it was computed.

    Parameters are those of :func:`lie_derivative`. With ``out_rep="image"`` and an output grid
    smaller than the input's (valid convolutions), both norms are taken on the output's interior
    (1-pixel border dropped; see the module docstring).

    Returns
    -------
    ``{"value": float, "method": str, "region": "full" | "interior"}``; ``method`` is ``"jvp"``,
    ``"jvp (math attention backend)"`` or ``"finite difference (float64, h=...)"``.

    A 3×3 valid convolution (8×8 → 6×6) is translation equivariant on the interior:

    Examples
    --------
    >>> conv = torch.nn.Conv2d(1, 1, 3).double()
    >>> r = relative_lie_derivative(conv, "translation_x", torch.randn(1, 1, 8, 8, dtype=torch.float64))
    >>> r["value"] < 1e-12, r["method"], r["region"]
    (True, 'jvp', 'interior')
    """
    L, fx, used = _lie(f, generator, x, out_rep, method, eps)
    L, fx = L.detach(), fx.detach()
    region = "full"
    if out_rep == "image" and tuple(fx.shape[-2:]) != tuple(x.shape[-2:]):
        if min(fx.shape[-2:]) < 3:
            raise ValueError(f"f: output grid {tuple(fx.shape[-2:])} differs from the input grid "
                             f"{tuple(x.shape[-2:])} and has no interior to measure on")
        L, fx, region = L[..., 1:-1, 1:-1], fx[..., 1:-1, 1:-1], "interior"
    den = float(fx.double().norm())
    num = float(L.double().norm())
    if den == 0.0:
        raise ValueError("f: f(x) is zero, the relative Lie derivative is undefined")
    return {"value": num / den, "method": used, "region": region}
