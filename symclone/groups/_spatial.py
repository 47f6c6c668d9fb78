"""3D rotations SO(3) / O(3) and permutations S_n.

* ``so3`` / ``o3`` element: a 3×3 orthogonal matrix ``Q`` (det +1 for ``so3``). On ``points``
  ``(B, N, 3)``: ``x ↦ x Qᵀ``; on ``irreps:<s>`` ``(B, N, dim)``: ``x ↦ x D(Q)ᵀ`` with
  ``D = e3nn.o3.Irreps(s).D_from_matrix(Q)`` (parity included for ``o3``).
* ``sn`` element: a permutation ``p`` of ``range(n)``; ``(g·x)_i = x_{p⁻¹(i)}`` along axis 1, so
  ``compose(p, q) = p[q]``.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch

from ..dtypes import default_dtype
from ._base import Group, describe, orthogonality_tol, positive_int

__all__ = ["SO3", "O3", "Sn", "random_rotation"]


def random_rotation(n: int, generator: Optional[torch.Generator] = None,
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` Haar-random rotation matrices (QR of a Gaussian with sign fix), shape ``(n, 3, 3)``."""
    a = torch.randn(n, 3, 3, generator=generator, dtype=dtype)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    det = torch.linalg.det(q)
    q[:, :, 0] = q[:, :, 0] * det.sign().unsqueeze(-1)
    return q


@functools.lru_cache(maxsize=64)
def _irreps(s: str):
    from e3nn import o3
    try:
        return o3.Irreps(s)
    except Exception as err:  # e3nn raises ValueError/AssertionError on bad strings
        raise ValueError(f"rep: invalid e3nn irreps string {s!r} ({err})") from None


def _d_from_matrix(irreps, Q: torch.Tensor) -> torch.Tensor:
    """e3nn's ``Irreps.D_from_matrix`` evaluated in ``Q``'s precision.

    e3nn builds its so(3) generators in the *default* dtype, so float64 inputs would still carry
    float32 rounding (~1e-6); we switch the default dtype for the duration of the call.
    """
    dtype = Q.dtype if Q.dtype in (torch.float32, torch.float64) else torch.get_default_dtype()
    with default_dtype(dtype):
        return irreps.D_from_matrix(Q)


def _det3(Q: torch.Tensor) -> torch.Tensor:
    """Determinant of ``(..., 3, 3)`` matrices as a triple product (cheaper than an LU)."""
    return (Q[..., 0, :] * torch.linalg.cross(Q[..., 1, :], Q[..., 2, :], dim=-1)).sum(-1)


class SO3(Group):
    """Proper 3D rotations.

    Parameters
    ----------
    tol : bound on ``max |QᵀQ - I|`` when validating elements; default by dtype
        (:func:`~symclone.groups.orthogonality_tol`: 1e-4 for float32, 1e-10 for float64).

    >>> g = SO3(); Q = g.sample(1)[0]; x = torch.randn(2, 5, 3, dtype=torch.float64)
    >>> torch.allclose(g.act(Q, x, "points"), x @ Q.T)
    True
    >>> g.act(torch.diag(torch.tensor([1., 1., -1.])), x.float(), "points")
    Traceback (most recent call last):
    ...
    ValueError: g: so3 elements are rotation matrices (orthogonal, det +1), ...; got det = -1 (a reflection; ...)
    """

    name = "so3"
    element_ndim = 2
    supported_reps = ("points", "irreps")
    _proper = True

    def __init__(self, tol: Optional[float] = None):
        if tol is not None and not (isinstance(tol, (int, float)) and 0 < tol < 1):
            raise ValueError(f"tol: group {self.name!r} expects an orthogonality tolerance in (0, 1), got {tol!r}")
        self.tol = None if tol is None else float(tol)

    @property
    def identity(self):
        return torch.eye(3, dtype=torch.float64)

    @property
    def element_form(self) -> str:
        kind = "rotation matrices (orthogonal, det +1)" if self._proper else "orthogonal matrices (det ±1)"
        return f"{kind}, floating point, of shape (3, 3) or a batch (B, 3, 3)"

    def _check_dtype(self, g, name):
        self._require_float(g, name)

    def _check_shape(self, g, name):
        if tuple(g.shape[-2:]) != (3, 3):
            raise self._error(name, f"shape {tuple(g.shape)}")

    def _check_values(self, g, name):
        if g.numel() == 0:
            return
        tol = self.tol if self.tol is not None else orthogonality_tol(g.dtype)
        Q = g.reshape(-1, 3, 3)
        if Q.dtype in (torch.float16, torch.bfloat16):  # not every device has half bmm
            Q = Q.float()
        eye = torch.eye(3, dtype=Q.dtype, device=Q.device)
        # fast path: 2 scalars, one host sync; NaN/inf make err NaN, which fails ``<=``
        err = torch.baddbmm(-eye, Q.transpose(-1, -2), Q).abs()
        det = _det3(Q) if self._proper else None
        if det is None:
            worst_err, worst_det = err.max().item(), 1.0
        else:
            worst_err, worst_det = torch.stack([err.max(), det.min()]).tolist()
        if not worst_err <= tol:
            per = err.amax(dim=(-2, -1))
            i = int((~(per <= tol)).nonzero()[0])
            raise self._error(name, f"{self._where(g, i)}max |QᵀQ - I| = {float(per[i]):.3g} > tol "
                                    f"{tol:.0e} for {str(g.dtype).replace('torch.', '')} (not orthogonal)")
        if det is not None and worst_det < 0:
            i = int((det < 0).nonzero()[0])
            raise self._error(name, f"{self._where(g, i)}det = {float(det[i]):.3g} "
                                    "(a reflection; use o3 for improper rotations)")

    def _compose(self, a, b):
        if a.dtype != b.dtype:
            dt = torch.promote_types(a.dtype, b.dtype)
            a, b = a.to(dt), b.to(dt)
        return a @ b

    def _inverse(self, a):
        return a.transpose(-1, -2)

    def sample(self, n, generator=None):
        return random_rotation(n, generator)

    def _act(self, g, x, rep):
        g = g.to(x.dtype)
        if rep.kind == "points":
            if x.shape[-1] != 3:
                raise ValueError(f"x: rep 'points' for {self.name} needs 3D points (B, N, 3), "
                                 f"got shape {tuple(x.shape)}")
            M = g
        else:
            irreps = _irreps(rep.irreps)
            if x.shape[-1] != irreps.dim:
                raise ValueError(f"x: rep {rep} has dim {irreps.dim}, got last axis {x.shape[-1]} "
                                 f"(shape {tuple(x.shape)})")
            M = _d_from_matrix(irreps, g)
        if M.ndim == 3:  # one element per sample
            M = M.view(M.shape[0], *([1] * (x.ndim - 3)), *M.shape[-2:])
        return x @ M.transpose(-1, -2)


class O3(SO3):
    """3D rotations with reflections (parity acts on e3nn irreps by their ``p``).

    >>> O3().act(-torch.eye(3), torch.ones(1, 2, 3), "points")
    tensor([[[-1., -1., -1.],
             [-1., -1., -1.]]])
    """

    name = "o3"
    _proper = False

    def sample(self, n, generator=None):
        q = random_rotation(n, generator)
        flip = torch.randint(0, 2, (n,), generator=generator) * 2 - 1
        return q * flip.to(q.dtype).view(n, 1, 1)


class Sn(Group):
    """Permutations of ``n`` objects, acting on axis 1 (and on the adjacency columns of ``graph``).

    >>> g = Sn(4); p = torch.tensor([2, 0, 1, 3]); x = torch.arange(4.).view(1, 4)
    >>> g.act(p, x, "set")
    tensor([[1., 2., 0., 3.]])
    """

    name = "sn"
    element_ndim = 1
    supported_reps = ("set", "points", "irreps", "graph")

    def __init__(self, n: Optional[int] = None):
        self.n = None if n is None else positive_int(n, "n", self.name)

    @property
    def order(self):
        return None if self.n is None else math.factorial(self.n)

    @property
    def is_finite(self):
        return True

    def _need_n(self):
        if self.n is None:
            raise ValueError("n: group 'sn' needs the number of objects, e.g. get_group('sn', n=5)")
        return self.n

    @property
    def identity(self):
        return torch.arange(self._need_n())

    @property
    def element_form(self) -> str:
        if self.n is None:
            return "permutations of 0..n-1 (integers) of shape (n,) or a batch (B, n)"
        return (f"permutations of 0..{self.n - 1} (integers) of shape ({self.n},) "
                f"or a batch (B, {self.n})")

    def _check_dtype(self, g, name):
        self._require_integer(g, name)

    def _check_shape(self, g, name):
        if g.shape[-1] < 1 or (self.n is not None and g.shape[-1] != self.n):
            raise self._error(name, f"shape {tuple(g.shape)}")

    def _check_values(self, g, name):
        n = g.shape[-1]
        rows = g.reshape(-1, n)
        if rows.shape[0] == 0:
            return
        bad = (rows.sort(dim=-1).values != torch.arange(n, device=g.device)).any(-1)   # (B,)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            what = f"{rows[i].tolist()}" if n <= 16 else describe(rows[i])
            where = f"element {i} of the batch = " if g.ndim > 1 else ""
            raise self._error(name, f"{where}{what} (not a permutation of 0..{n - 1})")

    def _compose(self, a, b):
        if a.ndim < b.ndim:
            a = a.expand_as(b)
        elif b.ndim < a.ndim:
            b = b.expand_as(a)
        return torch.gather(a, -1, b.to(a.device, torch.long))

    def _inverse(self, a):
        return torch.argsort(a, dim=-1)

    def sample(self, n, generator=None):
        m = self._need_n()
        return torch.argsort(torch.rand(n, m, generator=generator), dim=-1)

    def elements(self):
        m = self._need_n()
        if m > 8:
            raise ValueError(f"n: listing all {math.factorial(m)} permutations of {m} objects is "
                             "too large (n <= 8); use sample()")
        import itertools
        return torch.tensor(list(itertools.permutations(range(m))), dtype=torch.long)

    def _act(self, g, x, rep):
        g = g.long()
        if g.shape[-1] != x.shape[1]:
            raise ValueError(f"g: permutation of {g.shape[-1]} objects does not match axis 1 of x "
                             f"with {x.shape[1]} entries (shape {tuple(x.shape)})")
        inv = torch.argsort(g, dim=-1)
        if rep.kind == "graph":
            n = x.shape[1]
            if x.shape[2] < n:
                raise ValueError(f"x: rep 'graph' is [A | X] of shape (B, N, N + d), got {tuple(x.shape)}")
            x = self._permute_axis(x, inv, 1)
            feats = torch.arange(n, x.shape[2], device=x.device)
            if inv.ndim == 1:
                return x.index_select(2, torch.cat([inv, feats]))
            cols = torch.cat([inv, feats.expand(len(inv), -1)], 1)   # permute A's columns, keep X
            return torch.gather(x, 2, cols[:, None, :].expand(x.shape))
        return self._permute_axis(x, inv, 1)

    @staticmethod
    def _permute_axis(x: torch.Tensor, inv: torch.Tensor, axis: int) -> torch.Tensor:
        if inv.ndim == 1:
            return x.index_select(axis, inv)
        if axis == 1 and len(inv) == len(x):   # one row gather on the flattened batch
            B, N = inv.shape
            rows = (torch.arange(B, device=inv.device)[:, None] * N + inv).reshape(-1)
            return x.reshape(B * N, -1).index_select(0, rows).view(x.shape)
        shape = [inv.shape[0]] + [1] * (x.ndim - 1)
        shape[axis] = inv.shape[1]
        idx = inv.view(shape).expand(*x.shape[:axis], inv.shape[1], *x.shape[axis + 1:])
        return torch.gather(x, axis, idx)

    def __repr__(self):
        return f"Sn(n={self.n})"
