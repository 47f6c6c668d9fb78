"""3D rotations SO(3) / O(3) (the permutation group :class:`Sn` lives in :mod:`._permutation`).

* ``so3`` / ``o3`` element: a 3×3 orthogonal matrix ``Q`` (det +1 for ``so3``). On ``points``
  ``(B, N, 3)``: ``x ↦ x Qᵀ``; on ``irreps:<s>`` ``(B, N, dim)``: ``x ↦ x D(Q)ᵀ`` with
  ``D = e3nn.o3.Irreps(s).D_from_matrix(Q)`` (parity included for ``o3``). :func:`act_o3` is that
  action, the one implementation both groups use: a closed form for irreps with ``l <= 1``
  (differentiable in ``Q``), e3nn's ``D_from_matrix`` for higher ``l``. :class:`SO3` and :class:`O3`
  share everything but the determinant through :class:`OrthogonalGroup3`.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from ..dtypes import default_dtype
from ._base import Group, orthogonality_tol
from ._reps import Rep, RepLike, parse_rep

__all__ = ["OrthogonalGroup3", "SO3", "O3", "random_rotation", "act_o3", "irreps_blocks"]


def random_rotation(n: int, generator: Optional[torch.Generator] = None,
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` Haar-random rotation matrices (QR of a Gaussian with sign fix), shape ``(n, 3, 3)``.

    The QR factor of a standard Gaussian matrix, with the signs of ``R``'s diagonal moved into
    ``Q``, is Haar-distributed on O(3); flipping the first column where ``det Q = -1`` maps it onto
    SO(3) (still Haar).

    Examples
    --------
    >>> Q = random_rotation(2, torch.Generator().manual_seed(0))
    >>> Q.shape, torch.allclose(torch.linalg.det(Q), torch.ones(2, dtype=torch.float64))
    (torch.Size([2, 3, 3]), True)
    """
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


@functools.lru_cache(maxsize=64)
def irreps_blocks(irreps: str) -> tuple[tuple[int, int, int, int], ...]:
    """The blocks of an e3nn irreps string along the last axis: ``(start, mul, l, p)`` per entry.

    Block ``mul x l(p)`` occupies ``mul·(2l + 1)`` entries from ``start``, as ``mul`` consecutive
    copies of the ``2l + 1`` components; ``p = 1`` for even (``e``), ``-1`` for odd (``o``) parity.
    Raises ``ValueError`` for a string e3nn rejects.

    Examples
    --------
    >>> irreps_blocks("1x1o+1x1o+1x0e")
    ((0, 1, 1, -1), (3, 1, 1, -1), (6, 1, 0, 1))
    >>> irreps_blocks("2x0e+1x2e")
    ((0, 2, 0, 1), (2, 1, 2, 1))
    """
    out, start = [], 0
    for mul, ir in _irreps(irreps):
        out.append((start, int(mul), int(ir.l), int(ir.p)))
        start += mul * ir.dim
    return tuple(out)


def _d_from_matrix(irreps, Q: torch.Tensor) -> torch.Tensor:
    """e3nn's ``Irreps.D_from_matrix`` evaluated in ``Q``'s precision.

    e3nn builds its so(3) generators in the *default* dtype, so float64 inputs would still carry
    float32 rounding (~1e-6); we switch the default dtype for the duration of the call.
    """
    dtype = Q.dtype if Q.dtype in (torch.float32, torch.float64) else torch.get_default_dtype()
    with default_dtype(dtype):
        return irreps.D_from_matrix(Q)


@functools.lru_cache(maxsize=64)
def _merged_blocks(irreps: str) -> tuple[tuple[int, int, int, int], ...]:
    """:func:`irreps_blocks` with adjacent blocks of the same ``(l, p)`` merged into one (``1x1o+1x1o`` →
    ``2x1o``): the same action, one matmul per run of equal irreps instead of one per block."""
    out: list[tuple[int, int, int, int]] = []
    for start, mul, l, p in irreps_blocks(irreps):
        if out and out[-1][2:] == (l, p):
            out[-1] = (out[-1][0], out[-1][1] + mul, l, p)
        else:
            out.append((start, mul, l, p))
    return tuple(out)


def _det3(Q: torch.Tensor) -> torch.Tensor:
    """Determinant of ``(..., 3, 3)`` matrices as a triple product (cheaper than an LU)."""
    return (Q[..., 0, :] * torch.linalg.cross(Q[..., 1, :], Q[..., 2, :], dim=-1)).sum(-1)


def _per_sample(M: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A batch of matrices ``(B, a, b)`` viewed to broadcast against ``x`` ``(B, ..., b)``."""
    if M.ndim == 3:
        return M.view(M.shape[0], *([1] * (x.ndim - 3)), *M.shape[-2:])
    return M


def act_o3(Q: torch.Tensor, x: torch.Tensor, rep: RepLike) -> torch.Tensor:
    """Apply orthogonal matrices ``Q`` to points or e3nn irreps: ``x ↦ x D(Q)ᵀ``.

    The action of :class:`O3` and :class:`SO3` (their :meth:`~symclone.groups.Group.act` calls it
    after validating ``Q``; call it directly on elements known to be valid, e.g. in a sampler's
    differentiable path).

    * ``points`` ``(B, ..., 3)``: ``D(Q) = Q``.
    * ``irreps:<s>`` ``(B, ..., dim)``: ``D(Q) = ⊕ D_l(Q)`` block-diagonal, equal to e3nn's
      ``Irreps(s).D_from_matrix(Q)``. For ``l <= 1`` in closed form from ``Q`` itself (e3nn's ``l = 1``
      basis is the Cartesian one): ``0e: 1``, ``0o: det Q``, ``1o: Q``, ``1e: det Q · Q`` —
      differentiable in ``Q`` and exact to rounding; higher ``l`` through e3nn (Euler angles, in
      ``Q``'s precision).

    Parameters
    ----------
    Q : ``(3, 3)`` (applied to every sample) or ``(B, 3, 3)`` (one per sample) orthogonal matrices;
        cast to ``x.dtype``. Not validated.
    x : tensor laid out as ``rep``.
    rep : ``"points"``, ``"irreps:<e3nn irreps string>"`` or a :class:`Rep` of those kinds.

    Returns
    -------
    ``g·x``, same shape and dtype as ``x``.

    Examples
    --------
    >>> Q = torch.diag(torch.tensor([1., 1., -1.]))       # a reflection: det Q = -1
    >>> act_o3(Q, torch.ones(1, 1, 8), "irreps:1x1o+1x1e+1x0o+1x0e").tolist()
    [[[1.0, 1.0, -1.0, -1.0, -1.0, 1.0, -1.0, 1.0]]]
    """
    return _act_o3(Q, x, parse_rep(rep), "o3")


def _act_o3(Q: torch.Tensor, x: torch.Tensor, rep: Rep, group: str) -> torch.Tensor:
    """:func:`act_o3` with ``group`` named in error messages."""
    Q = Q.to(x.dtype)
    if rep.kind == "points":
        if x.shape[-1] != 3:
            raise ValueError(f"x: rep 'points' for {group} needs 3D points (B, N, 3), "
                             f"got shape {tuple(x.shape)}")
        return x @ _per_sample(Q, x).transpose(-1, -2)
    if rep.kind != "irreps":
        raise ValueError(f"rep: {group} acts on 'points' and 'irreps:...', got {rep}")
    irreps = _irreps(rep.irreps)
    if x.shape[-1] != irreps.dim:
        raise ValueError(f"x: rep {rep} has dim {irreps.dim}, got last axis {x.shape[-1]} "
                         f"(shape {tuple(x.shape)})")
    blocks = _merged_blocks(rep.irreps)
    if any(l > 1 for _, _, l, _ in blocks):
        return x @ _per_sample(_d_from_matrix(irreps, Q), x).transpose(-1, -2)
    Qt = _per_sample(Q, x).transpose(-1, -2).unsqueeze(-3)     # (B, 1.., 1, 3, 3): per copy of a block
    det = None
    if any((l == 0) == (p == -1) for _, _, l, p in blocks):    # 0o or 1e: the determinant is needed
        det = _det3(Q)
        det = det.view(-1, *([1] * (x.ndim - 1))) if det.ndim == 1 else det
    if len(blocks) == 1 and blocks[0][2] == 1 and det is None:  # only 1o copies: one matmul
        return (x.unflatten(-1, (blocks[0][1], 3)) @ Qt).flatten(-2)
    parts = []
    for start, mul, l, p in blocks:
        if l == 0:
            seg = x[..., start:start + mul]
            parts.append(seg * det if p == -1 else seg)
            continue
        rot = x[..., start:start + 3 * mul].unflatten(-1, (mul, 3)) @ Qt
        if p == 1:                                              # pseudovector: det Q · Q
            rot = rot * det.unsqueeze(-1)
        parts.append(rot.flatten(-2))
    return torch.cat(parts, dim=-1)


class OrthogonalGroup3(Group):
    """Base class of the groups of 3×3 orthogonal matrices: :class:`O3` and its subgroup :class:`SO3`.

    Holds what both share: elements are float ``(3, 3)`` matrices (a batch ``(B, 3, 3)``), composed by
    matrix product, inverted by transposition, validated for orthogonality (``max |QᵀQ - I| <= tol``),
    and acting on ``points`` and ``irreps`` through :func:`act_o3`. Subclasses define ``sample``
    (and SO3 the det check). ``isinstance(G, OrthogonalGroup3)`` asks "is G a group of 3D rotations,
    with or without reflections?".

    Parameters
    ----------
    tol : bound on ``max |QᵀQ - I|`` when validating elements; default by dtype
        (:func:`~symclone.groups.orthogonality_tol`: 1e-4 for float32, 1e-10 for float64).

    Examples
    --------
    >>> isinstance(O3(), OrthogonalGroup3), isinstance(SO3(), OrthogonalGroup3), isinstance(O3(), SO3)
    (True, True, False)
    """

    element_ndim = 2
    supported_reps = ("points", "irreps")

    def __init__(self, tol: Optional[float] = None):
        if tol is not None and not (isinstance(tol, (int, float)) and 0 < tol < 1):
            raise ValueError(f"tol: group {self.name!r} expects an orthogonality tolerance in (0, 1), got {tol!r}")
        self.tol = None if tol is None else float(tol)

    @property
    def identity(self) -> torch.Tensor:
        """The 3×3 identity matrix (float64)."""
        return torch.eye(3, dtype=torch.float64)

    def _check_dtype(self, g, name):
        self._require_float(g, name)

    def _check_shape(self, g, name):
        if tuple(g.shape[-2:]) != (3, 3):
            raise self._error(name, f"shape {tuple(g.shape)}")

    def _orthogonality_error(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``(Q (M, 3, 3), |QᵀQ - I| (M, 3, 3), tol)`` for the elements of ``g`` (no host sync)."""
        tol = self.tol if self.tol is not None else orthogonality_tol(g.dtype)
        Q = g.reshape(-1, 3, 3)
        if Q.dtype in (torch.float16, torch.bfloat16):  # not every device has half bmm
            Q = Q.float()
        eye = torch.eye(3, dtype=Q.dtype, device=Q.device)
        return Q, torch.baddbmm(-eye, Q.transpose(-1, -2), Q).abs(), tol

    def _raise_not_orthogonal(self, g: torch.Tensor, name: str, err: torch.Tensor, tol: float) -> None:
        per = err.amax(dim=(-2, -1))
        i = int((~(per <= tol)).nonzero()[0])
        raise self._error(name, f"{self._where(g, i)}max |QᵀQ - I| = {float(per[i]):.3g} > tol "
                                f"{tol:.0e} for {str(g.dtype).replace('torch.', '')} (not orthogonal)")

    def _check_values(self, g, name):
        if g.numel() == 0:
            return
        _, err, tol = self._orthogonality_error(g)
        # one host sync; NaN/inf make err NaN, which fails ``<=``
        if not err.max().item() <= tol:
            self._raise_not_orthogonal(g, name, err, tol)

    def _compose(self, a, b):
        if a.dtype != b.dtype:
            dt = torch.promote_types(a.dtype, b.dtype)
            a, b = a.to(dt), b.to(dt)
        return a @ b

    def _inverse(self, a):
        return a.transpose(-1, -2)

    def _act(self, g, x, rep):
        return _act_o3(g, x, rep, self.name)


class SO3(OrthogonalGroup3):
    """Proper 3D rotations (det +1); ``tol`` as in :class:`OrthogonalGroup3`, plus a check of ``det Q = 1``.

    Examples
    --------
    >>> g = SO3(); Q = g.sample(1)[0]; x = torch.randn(2, 5, 3, dtype=torch.float64)
    >>> torch.allclose(g.act(Q, x, "points"), x @ Q.T)
    True
    >>> g.act(torch.diag(torch.tensor([1., 1., -1.])), x.float(), "points")
    Traceback (most recent call last):
    ...
    ValueError: g: so3 elements are rotation matrices (orthogonal, det +1), ...; got det = -1 (a reflection; ...)
    """

    name = "so3"
    element_form = "rotation matrices (orthogonal, det +1), floating point, of shape (3, 3) or a batch (B, 3, 3)"

    def _check_values(self, g, name):
        if g.numel() == 0:
            return
        Q, err, tol = self._orthogonality_error(g)
        det = _det3(Q)
        # fast path: 2 scalars, one host sync; NaN/inf make err NaN, which fails ``<=``
        worst_err, worst_det = torch.stack([err.max(), det.min()]).tolist()
        if not worst_err <= tol:
            self._raise_not_orthogonal(g, name, err, tol)
        if worst_det < 0:
            i = int((det < 0).nonzero()[0])
            raise self._error(name, f"{self._where(g, i)}det = {float(det[i]):.3g} "
                                    "(a reflection; use o3 for improper rotations)")

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` Haar-random rotations ``(n, 3, 3)`` (float64; :func:`random_rotation`)."""
        return random_rotation(n, generator)


class O3(OrthogonalGroup3):
    """3D rotations with reflections (det ±1; parity acts on e3nn irreps by their ``p``).

    Examples
    --------
    >>> O3().act(-torch.eye(3), torch.ones(1, 2, 3), "points")
    tensor([[[-1., -1., -1.],
             [-1., -1., -1.]]])
    """

    name = "o3"
    element_form = "orthogonal matrices (det ±1), floating point, of shape (3, 3) or a batch (B, 3, 3)"

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` Haar-random orthogonal matrices ``(n, 3, 3)`` (float64): a Haar rotation times ``±1``
        with equal probability."""
        q = random_rotation(n, generator)
        flip = torch.randint(0, 2, (n,), generator=generator) * 2 - 1
        return q * flip.to(q.dtype).view(n, 1, 1)
