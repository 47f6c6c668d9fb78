"""Planar groups acting on images: cyclic translations T(2), rotations C4, p4 = C4 ⋉ T(2), SO(2).

Conventions (checked against ``torch.rot90``/``torch.roll`` and escnn in the tests):

* ``t2`` element ``(dy, dx)``: ``g·x = torch.roll(x, (dy, dx), dims=(-2, -1))``.
* ``c4`` element ``k`` in ``{0,1,2,3}``: ``g·x = torch.rot90(x, k, dims=(-2, -1))`` on images; on
  regular fields additionally ``roll(+k)`` of the 4 orientation channels of every field
  (identical to escnn's ``GeometricTensor.transform(C4.element(k))``).
* ``p4`` element ``(k, dy, dx)``: ``g·x = roll_{dy,dx}(rot90_k(x))``. Since
  ``rot90 ∘ roll_{(s,t)} = roll_{(-t,s)} ∘ rot90``, composition is
  ``(k1,t1)(k2,t2) = (k1+k2, t1 + R^{k1} t2)`` with ``R(s,t) = (-t,s)``.
* ``so2`` element ``θ`` (radians, counter-clockwise like ``rot90``): bilinear interpolation about
  the image centre (approximate; ``θ = π/2`` equals ``rot90`` on square images).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ._base import Group
from ._image_ops import (_check_regular, _check_square, _PerSample, _roll_orientations, _size2, roll_batched,
                         rot90_batched, rot_roll_batched, rotate_shift)
from ._reps import IMAGE_KINDS

__all__ = ["T2", "C4", "P4", "SO2", "roll_batched", "rot90_batched", "rotate_shift"]


class T2(_PerSample, Group):
    """Cyclic translations Z_H × Z_W of an H×W grid.

    Examples
    --------
    >>> g = T2((4, 4)); x = torch.randn(2, 1, 4, 4)
    >>> torch.equal(g.act(torch.tensor([1, 3]), x), torch.roll(x, (1, 3), dims=(-2, -1)))
    True
    >>> g.order
    16
    """

    name = "t2"
    element_ndim = 1
    supported_reps = IMAGE_KINDS

    def __init__(self, size: Any = None):
        self.size = _size2(size, self.name)

    @property
    def order(self) -> Optional[int]:
        """``H·W``, or ``None`` when built without ``size``."""
        return None if self.size is None else self.size[0] * self.size[1]

    @property
    def element_form(self) -> str:
        rng = ("integers" if self.size is None
               else f"integers with 0 <= dy <= {self.size[0] - 1}, 0 <= dx <= {self.size[1] - 1}")
        return f"shifts (dy, dx), {rng}, of shape (2,) or a batch (B, 2)"

    def _check_dtype(self, g, name):
        self._require_integer(g, name)

    def _check_shape(self, g, name):
        if g.shape[-1] != 2:
            raise self._error(name, f"shape {tuple(g.shape)}")

    def _check_values(self, g, name):
        if self.size is not None:
            self._check_int_columns(g, name, [("dy", self.size[0]), ("dx", self.size[1])])

    @property
    def is_finite(self) -> bool:
        """Always ``True`` (a torus of any size has finitely many shifts, even if unknown)."""
        return True

    def _need_size(self) -> tuple[int, int]:
        if self.size is None:
            raise ValueError("size: group 't2' needs the grid size, e.g. get_group('t2', size=(28, 28))")
        return self.size

    def _mod(self, t: torch.Tensor) -> torch.Tensor:
        if self.size is None:
            return t
        return t % torch.tensor(self.size, device=t.device)

    @property
    def identity(self) -> torch.Tensor:
        """The zero shift ``(0, 0)`` (long)."""
        return torch.zeros(2, dtype=torch.long)

    def _compose(self, a, b):
        return self._mod(a + b)

    def _inverse(self, a):
        return self._mod(-a)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` uniform shifts ``(n, 2)`` (long); needs ``size``."""
        H, W = self._need_size()
        return torch.stack([torch.randint(0, H, (n,), generator=generator),
                            torch.randint(0, W, (n,), generator=generator)], dim=-1)

    def elements(self) -> torch.Tensor:
        """All ``H·W`` shifts ``(H·W, 2)``, row-major (``dy`` slowest); needs ``size``."""
        H, W = self._need_size()
        yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        return torch.stack([yy.reshape(-1), xx.reshape(-1)], dim=-1)

    def _turns_shifts(self, g):
        return None, g

    def _act(self, g, x, rep):
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            raise ValueError(f"x: group t2 was built for {self.size[0]}x{self.size[1]} grids, "
                             f"got spatial shape {tuple(x.shape[-2:])}")
        if rep.kind == "regular":
            _check_regular(x)
        return roll_batched(x, g.long())

    def __repr__(self):
        return f"T2(size={self.size})"


class C4(_PerSample, Group):
    """Rotations by multiples of 90 degrees.

    Examples
    --------
    >>> g = C4(); x = torch.randn(1, 1, 5, 5)
    >>> torch.equal(g.act(torch.tensor(1), x), torch.rot90(x, 1, dims=(-2, -1)))
    True
    """

    name = "c4"
    element_ndim = 0
    supported_reps = IMAGE_KINDS

    element_form = "integers 0..3 of shape () or a batch (B,)"

    @property
    def order(self) -> int:
        """4."""
        return 4

    @property
    def identity(self) -> torch.Tensor:
        """``k = 0`` (a long scalar)."""
        return torch.tensor(0)

    def _check_dtype(self, g, name):
        self._require_integer(g, name)

    def _check_values(self, g, name):
        self._check_int_columns(g, name, [("k", 4)])

    def _compose(self, a, b):
        return (a + b) % 4

    def _inverse(self, a):
        return (-a) % 4

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` uniform quarter-turn counts ``(n,)`` in ``0..3`` (long)."""
        return torch.randint(0, 4, (n,), generator=generator)

    def elements(self) -> torch.Tensor:
        """``tensor([0, 1, 2, 3])``."""
        return torch.arange(4)

    def _turns_shifts(self, g):
        return g, None

    def _act(self, g, x, rep):
        _check_square(x, self.name)
        g = g.long()
        if rep.kind == "regular":
            _check_regular(x)
            if g.ndim:  # one pass: the orientation roll is folded into the per-turn blocks
                return rot_roll_batched(x, g, None, fields=True)
            x = _roll_orientations(x, g)
        return rot90_batched(x, g)


class P4(_PerSample, Group):
    """p4 = C4 ⋉ T(2) on an N×N torus; element ``(k, dy, dx)`` acts as ``roll ∘ rot90``.

    Examples
    --------
    >>> g = P4(4); a, b = g.sample(1)[0], g.sample(1)[0]; x = torch.randn(1, 4, 4, 4)
    >>> torch.allclose(g.act(a, g.act(b, x, "regular"), "regular"), g.act(g.compose(a, b), x, "regular"))
    True
    """

    name = "p4"
    element_ndim = 1
    supported_reps = IMAGE_KINDS

    def __init__(self, size: Any = None):
        size = _size2(size, self.name)
        if size is not None and size[0] != size[1]:
            raise ValueError(f"size: group 'p4' needs a square grid, got {size}")
        self.size = size

    @property
    def order(self) -> Optional[int]:
        """``4·N²``, or ``None`` when built without ``size``."""
        return None if self.size is None else 4 * self.size[0] * self.size[1]

    @property
    def element_form(self) -> str:
        shifts = "integer shifts dy, dx" if self.size is None else f"0 <= dy, dx <= {self.size[0] - 1}"
        return f"integer triples (k, dy, dx) with 0 <= k <= 3 and {shifts}, of shape (3,) or a batch (B, 3)"

    def _check_dtype(self, g, name):
        self._require_integer(g, name)

    def _check_shape(self, g, name):
        if g.shape[-1] != 3:
            raise self._error(name, f"shape {tuple(g.shape)}")

    def _check_values(self, g, name):
        N = None if self.size is None else self.size[0]
        self._check_int_columns(g, name, [("k", 4), ("dy", N), ("dx", N)])

    @property
    def is_finite(self) -> bool:
        """Always ``True`` (finite for any grid size, even if unknown)."""
        return True

    def _mod(self, t):
        return t if self.size is None else t % self.size[0]

    @property
    def identity(self) -> torch.Tensor:
        """``(k, dy, dx) = (0, 0, 0)`` (long)."""
        return torch.zeros(3, dtype=torch.long)

    def _compose(self, a, b):
        k = (a[..., 0] + b[..., 0]) % 4
        t = self._mod(a[..., 1:] + rotate_shift(a[..., 0], b[..., 1:]))
        return torch.cat([k[..., None], t], dim=-1)

    def _inverse(self, a):
        k = (-a[..., 0]) % 4
        t = self._mod(-rotate_shift(k, a[..., 1:]))
        return torch.cat([k[..., None], t], dim=-1)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` uniform elements ``(n, 3)`` = ``(k, dy, dx)`` (long); needs ``size``."""
        if self.size is None:
            raise ValueError("size: group 'p4' needs the grid size, e.g. get_group('p4', size=28)")
        N = self.size[0]
        return torch.stack([torch.randint(0, 4, (n,), generator=generator),
                            torch.randint(0, N, (n,), generator=generator),
                            torch.randint(0, N, (n,), generator=generator)], dim=-1)

    def elements(self) -> torch.Tensor:
        """All ``4·N²`` elements ``(4·N², 3)``, ``k`` slowest then ``dy``, ``dx``; needs ``size``."""
        if self.size is None:
            raise ValueError("size: group 'p4' needs the grid size to list its elements")
        N = self.size[0]
        k, y, x = torch.meshgrid(torch.arange(4), torch.arange(N), torch.arange(N), indexing="ij")
        return torch.stack([k.reshape(-1), y.reshape(-1), x.reshape(-1)], dim=-1)

    def _turns_shifts(self, g):
        return g[:, 0], g[:, 1:]

    def _act(self, g, x, rep):
        _check_square(x, self.name)
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            raise ValueError(f"x: group p4 was built for {self.size[0]}x{self.size[1]} grids, "
                             f"got spatial shape {tuple(x.shape[-2:])}")
        g = g.long()
        if g.ndim == 2:  # one element per sample: quarter turns by block, the shifts as row slices
            if rep.kind == "regular":
                _check_regular(x)
            return rot_roll_batched(x, g[:, 0], g[:, 1:], fields=rep.kind == "regular")
        x = C4()._act(g[..., 0], x, rep)
        return roll_batched(x, g[..., 1:])

    def __repr__(self):
        return f"P4(size={self.size})"


class SO2(Group):
    """Continuous planar rotations, acting on images by bilinear interpolation (approximate) and
    exactly on 2D point clouds ``(B, N, 2)``.

    Examples
    --------
    >>> g = SO2(); x = torch.randn(1, 1, 5, 5)
    >>> torch.allclose(g.act(torch.tensor(math.pi / 2), x), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5)
    True
    """

    name = "so2"
    element_ndim = 0
    supported_reps = ("image", "points")

    #: integers are rejected so that a c4 index ``k`` is never silently read as ``k`` radians
    element_form = "finite angles in radians (floating point) of shape () or a batch (B,)"

    @property
    def identity(self) -> torch.Tensor:
        """The angle ``0.0``."""
        return torch.tensor(0.0)

    def _check_dtype(self, g, name):
        self._require_float(g, name)

    def _check_values(self, g, name):
        finite = torch.isfinite(g)
        if not bool(finite.all()):
            i = int((~finite).reshape(-1).nonzero()[0])
            raise self._error(name, f"{self._where(g, i)}angle {float(g.reshape(-1)[i])}")

    def _compose(self, a, b):
        return torch.remainder(a + b, 2 * math.pi)

    def _inverse(self, a):
        return torch.remainder(-a, 2 * math.pi)

    def equal(self, a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6) -> bool:
        """Whether the angles agree mod ``2π`` within ``atol`` (so ``0`` equals ``2π``).

        Examples
        --------
        >>> SO2().equal(torch.tensor(0.0), torch.tensor(2 * math.pi))
        True
        """
        d = torch.remainder(torch.as_tensor(a) - torch.as_tensor(b) + math.pi, 2 * math.pi) - math.pi
        return bool((d.abs() < atol).all())

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` uniform angles ``(n,)`` in ``[0, 2π)`` (float64)."""
        return torch.rand(n, generator=generator, dtype=torch.float64) * 2 * math.pi

    @staticmethod
    def matrix(theta: torch.Tensor) -> torch.Tensor:
        """Rotation matrices ``[[cos θ, −sin θ], [sin θ, cos θ]]``, shape ``(*θ.shape, 2, 2)``.

        They act on ``(x, y)`` coordinates counter-clockwise; on points ``(B, N, 2)`` the action is
        ``x ↦ x Rᵀ``.

        Examples
        --------
        >>> SO2.matrix(torch.tensor(math.pi / 2, dtype=torch.float64)).round().tolist()
        [[0.0, -1.0], [1.0, 0.0]]
        """
        c, s = torch.cos(theta), torch.sin(theta)
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)

    def _act(self, g, x, rep):
        theta = g.to(x.dtype if x.dtype.is_floating_point else torch.float32)
        if rep.kind == "points":
            if x.shape[-1] != 2:
                raise ValueError(f"x: so2 acts on 2D points (B, N, 2), got shape {tuple(x.shape)}")
            R = self.matrix(theta)
            return x @ R.transpose(-1, -2)
        B = x.shape[0]
        theta = theta.expand(B) if theta.ndim == 0 else theta
        c, s = torch.cos(theta), torch.sin(theta)
        # output pixel (u, v) in normalised (x=col, y=row) coords samples input at R^{-1}(u, v);
        # rows grow downwards, so counter-clockwise on screen is clockwise in (col, row).
        zero = torch.zeros_like(c)
        aff = torch.stack([torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1)], -2)
        shape = x.shape
        xi = x.reshape(B, -1, shape[-2], shape[-1])
        grid = F.affine_grid(aff, list(xi.shape), align_corners=False)
        out = F.grid_sample(xi, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.reshape(shape)
