"""Family closed form at scale: a layer's basis maps as sparse entries, Gram matrices from index joins.

A teacher layer that is affine in its parameters computes ``z = Σ_p k̃_p T_p x̃`` with ``x̃ = [1; vec h]``,
``k̃ = k / s`` and the *basis maps* ``T_p = [m_p M_p]`` ``(out, I+1)``. For a convolution each ``T_p`` is a
shift/selection matrix (one entry per output pixel), so the ``P`` maps hold ``O(P · out)`` entries while
a dense ``(P, out, I+1)`` tensor holds ``P · out · (I+1)`` (181 GB for the default 8-channel 28×28 CNN's
layer 2). Everything below works on the entries.

**Probing** (:func:`probe_affine_maps`, Curtis–Powell–Reid compression). The union sparsity pattern of
all ``M_p`` is the pattern of ``M(k)`` for a random ``k`` (two draws), found by probing ``M(k)`` with the
``I`` basis inputs. Inputs ``i, j`` may share a probe when no output row depends on both (a greedy
colouring of the column-intersection graph ``AᵀA``); one probe ``x_g = Σ_{i∈g} e_i`` per colour ``g``
and kernel ``e_p`` then recovers every entry of ``M_p`` in those columns, because each output row sees at
most one of them. A 3×3 conv needs ~25·C_in probes instead of ``I``. Outputs outside the pattern are
checked to vanish (else every input gets its own probe), and the result is verified on random
``(k, x)`` against the teacher. For image layers the pattern is first guessed from ``C`` probes (the
outputs the centre pixel's inputs reach, shifted to every pixel: :func:`_shift_pattern`), which costs
``C`` forwards instead of ``I``; the guess is kept only if the grouped probe and the verification pass.

Gram matrices and the solution from these entries: :mod:`._family_solve`.

Examples
--------
>>> import torch
>>> T = torch.zeros(2, 3, 4, dtype=torch.float64); T[0, :, 1] = 1.0; T[1, 0, 0] = 2.0
>>> maps = SparseAffineMaps.from_dense(T)
>>> maps.nnz, torch.equal(maps.to_dense(), T)
(4, True)
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import numpy as np
import torch

__all__ = ["SparseAffineMaps", "Entries", "probe_affine_maps", "probe_bytes"]

log = logging.getLogger(__name__)

#: bytes of one probe output chunk (teacher forwards are batched up to this size)
PROBE_CHUNK_BYTES = 64 * 2 ** 20
#: colour the inputs only while the intersection graph has at most this many edges (else one probe each)
MAX_COLOURING_EDGES = 60_000_000


class Entries(NamedTuple):
    """COO entries joined by :func:`._family_solve.pair_gram`: parameter index, join key (output row), column, value."""

    p: torch.Tensor
    key: torch.Tensor
    col: torch.Tensor
    val: torch.Tensor


@dataclass(frozen=True)
class SparseAffineMaps:
    """The basis maps ``T_p = [m_p M_p]`` ``(out_dim, in_dim + 1)`` of one layer as COO entries.

    ``row`` indexes the flattened output, ``col`` the augmented input (``0``: the bias column, ``1 + i``:
    input ``i``); ``val`` is float64. Entries are unique per ``(p, row, col)``.
    """

    p: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    val: torch.Tensor
    num_params: int
    out_dim: int
    in_dim: int

    @property
    def nnz(self) -> int:
        return int(self.val.numel())

    @property
    def nbytes(self) -> int:
        return self.nnz * (3 * 8 + 8)

    def entries(self, rows: Optional[torch.Tensor] = None, key: Optional[torch.Tensor] = None) -> Entries:
        """The entries (optionally only those whose row is in the boolean mask ``rows``), keyed by
        ``key[row]`` (default: the row itself)."""
        sel = slice(None) if rows is None else rows[self.row]
        r = self.row[sel]
        return Entries(self.p[sel], r if key is None else key[r], self.col[sel], self.val[sel])

    def to_dense(self) -> torch.Tensor:
        """``(P, out_dim, in_dim + 1)`` float64 (small layers and tests only)."""
        T = torch.zeros(self.num_params, self.out_dim, self.in_dim + 1, dtype=torch.float64,
                        device=self.val.device)
        T.index_put_((self.p, self.row, self.col), self.val, accumulate=True)
        return T

    @classmethod
    def from_dense(cls, T: torch.Tensor) -> "SparseAffineMaps":
        """From a dense ``(P, out, I + 1)`` tensor (its nonzero entries)."""
        if T.ndim != 3 or T.shape[2] < 1:
            raise ValueError(f"T: expected a (P, out, I + 1) tensor, got shape {tuple(T.shape)}")
        p, row, col = torch.nonzero(T, as_tuple=True)
        return cls(p, row, col, T[p, row, col].double(), T.shape[0], T.shape[1], T.shape[2] - 1)

    def apply(self, k_tilde: torch.Tensor, h_flat: torch.Tensor) -> torch.Tensor:
        """``Σ_p k̃_p T_p [1; h]`` for kernels ``k̃ (K, P)`` and inputs ``h (N, I)`` -> ``(K, N, out)`` (float64)."""
        xt = torch.cat([torch.ones(h_flat.shape[0], 1, dtype=torch.float64, device=h_flat.device),
                        h_flat.double()], 1)
        out = torch.zeros(k_tilde.shape[0], h_flat.shape[0], self.out_dim, dtype=torch.float64,
                          device=h_flat.device)
        for j, kk in enumerate(k_tilde.double()):
            contrib = xt[:, self.col] * (kk[self.p] * self.val)  # (N, nnz)
            out[j].index_add_(1, self.row, contrib)
        return out


# ---- probing ---------------------------------------------------------------------------------------------
def _probe_teacher(teacher: Any, l: int) -> tuple[Any, torch.dtype]:
    """The teacher to probe layer ``l`` on, and its dtype: the teacher itself when its layer runs in
    float64 for float64 inputs and parameters, else a float64 copy of it (exact zeros off the sparsity
    pattern), else the teacher in its own dtype."""
    own = teacher.layer_params(l)

    def runs_float64(t: Any) -> bool:
        try:
            h = torch.zeros(1, *t.feature_shapes[l - 1], dtype=torch.float64, device=own.device)
            p = torch.zeros(1, own.numel(), dtype=torch.float64, device=own.device)
            return t.layer_forward(l, h, params=p, pre_activation=True).dtype == torch.float64
        except (RuntimeError, TypeError, ValueError):
            return False

    if runs_float64(teacher):
        return teacher, torch.float64
    try:
        copy64 = copy.deepcopy(teacher).double()
    except (RuntimeError, TypeError, ValueError, AttributeError):  # pragma: no cover - exotic teachers
        copy64 = None
    if copy64 is not None and runs_float64(copy64):
        return copy64, torch.float64
    log.debug("probe of layer %d in the teacher's dtype %s", l, own.dtype)
    return teacher, own.dtype


def _teacher_z(teacher: Any, l: int, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Pre-activations ``(K, N, out)`` (float64) of ``x (N, ...)`` for the kernels ``params (K, P)``."""
    z = teacher.layer_forward(l, x, params=params, pre_activation=True)
    return z.reshape(params.shape[0], x.shape[0], -1).double()


def _union_pattern(teacher: Any, l: int, scale: float, dtype: torch.dtype, device: torch.device,
                   tol: float) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` (input index ``i`` without the bias column) where ``M(k) ≠ 0`` for two random kernels."""
    shape_in = tuple(teacher.feature_shapes[l - 1])
    I = math.prod(shape_in)
    P = int(teacher.num_layer_params(l))
    gen = torch.Generator().manual_seed(12_345)
    ks = (torch.randn(2, P, generator=gen, dtype=torch.float64) * scale).to(dtype=dtype, device=device)
    zero = torch.zeros(1, *shape_in, dtype=dtype, device=device)
    z0 = _teacher_z(teacher, l, zero, ks)  # (2, 1, out)
    out = z0.shape[-1]
    chunk = max(1, PROBE_CHUNK_BYTES // (2 * out * 8))
    rows, cols = [], []
    for j in range(0, I, chunk):
        n = min(chunk, I - j)
        basis = torch.zeros(n, I, dtype=dtype, device=device)
        basis[torch.arange(n), torch.arange(j, j + n)] = 1.0
        z = (_teacher_z(teacher, l, basis.reshape(n, *shape_in), ks) - z0).abs().amax(0)  # (n, out)
        i, o = torch.nonzero(z > tol, as_tuple=True)
        rows.append(o.cpu().numpy())
        cols.append((i + j).cpu().numpy())
    return np.concatenate(rows), np.concatenate(cols)


def _shift_pattern(teacher: Any, l: int, scale: float, dtype: torch.dtype, device: torch.device,
                   tol: float) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """A guessed union pattern for image layers ``(C, H, W) -> (C', H', W')`` from ``C`` probes: the outputs
    that the inputs at the centre pixel reach, shifted to every pixel (offsets wrapped modulo ``H', W'``, a
    superset of the pattern of a zero-padded, valid or circular convolution). ``None`` for other layouts.
    A wrong guess is caught by :func:`_probe_grouped` or :func:`_verify` (then the exhaustive pattern is used)."""
    shape_in, shape_out = tuple(teacher.feature_shapes[l - 1]), tuple(teacher.feature_shapes[l])
    if len(shape_in) != 3 or len(shape_out) != 3 or shape_in[1] * shape_in[2] < 16:
        return None
    (C, H, W), (_, Ho, Wo) = shape_in, shape_out
    P = int(teacher.num_layer_params(l))
    gen = torch.Generator().manual_seed(12_345)
    ks = (torch.randn(2, P, generator=gen, dtype=torch.float64) * scale).to(dtype=dtype, device=device)
    yc, xc = H // 2, W // 2
    basis = torch.zeros(C + 1, C, H, W, dtype=dtype, device=device)
    basis[torch.arange(1, C + 1), torch.arange(C), yc, xc] = 1.0
    z = _teacher_z(teacher, l, basis, ks)
    c, o = torch.nonzero((z[:, 1:] - z[:, :1]).abs().amax(0) > tol, as_tuple=True)
    c, o = c.cpu().numpy(), o.cpu().numpy()
    co, dy, dx = o // (Ho * Wo), (o // Wo) % Ho - yc, o % Wo - xc
    yy, xx = np.divmod(np.arange(H * W), W)
    rows = co[:, None] * (Ho * Wo) + ((yy[None] + dy[:, None]) % Ho) * Wo + (xx[None] + dx[:, None]) % Wo
    cols = c[:, None] * (H * W) + np.arange(H * W)[None]
    flat = np.unique(rows.reshape(-1).astype(np.int64) * (C * H * W) + cols.reshape(-1))
    return flat // (C * H * W), flat % (C * H * W)


def _colour_columns(rows: np.ndarray, cols: np.ndarray, out: int, I: int) -> Optional[np.ndarray]:
    """Greedy colouring of the inputs such that no output row depends on two inputs of one colour
    (``None`` when the intersection graph is too dense to be worth it)."""
    import scipy.sparse as sp

    per_row = np.bincount(rows, minlength=out).astype(np.int64)
    if int((per_row ** 2).sum()) > MAX_COLOURING_EDGES:
        return None
    A = sp.csr_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(out, I))
    C = (A.T.astype(np.int32) @ A.astype(np.int32)).tocsr()
    colours = np.full(I, -1, dtype=np.int64)
    for j in range(I):
        nb = colours[C.indices[C.indptr[j]:C.indptr[j + 1]]]
        used = np.zeros(nb.size + 2, dtype=bool)
        used[nb[(nb >= 0) & (nb < used.size)]] = True
        colours[j] = int(np.argmin(used))
    return colours


def probe_bytes(out_dim: int, in_dim: int, num_params: int, nnz_estimate: Optional[int] = None) -> int:
    """Peak bytes of :func:`probe_affine_maps` (probe chunks, pattern, entries) for an estimated ``nnz``."""
    nnz = nnz_estimate if nnz_estimate is not None else num_params * out_dim
    return 4 * PROBE_CHUNK_BYTES + 48 * nnz + 40 * out_dim * 9


@torch.no_grad()
def probe_affine_maps(teacher: Any, l: int, scale: float, verify_on: Optional[torch.Tensor] = None
                      ) -> SparseAffineMaps:
    """The basis maps of layer ``l`` for the parameter vectors ``scale · e_p`` as sparse entries.

    Parameters
    ----------
    teacher : a teacher whose pre-activation of layer ``l`` is affine in its parameters and its input.
    l : 1-based layer.
    scale : ``s``; the maps are those of ``k̃ = k / s`` (the blocks student's parametrisation).
    verify_on : inputs ``(N, ...)`` of the layer to verify ``Σ_p k̃_p T_p x̃`` against the teacher on
        (two random kernels; default 4 Gaussian inputs).

    Raises
    ------
    RuntimeError
        When the sparse maps do not reproduce the teacher (the layer is not affine as assumed).
    """
    shape_in = tuple(teacher.feature_shapes[l - 1])
    I = math.prod(shape_in)
    P = int(teacher.num_layer_params(l))
    device = teacher.layer_params(l).device
    teacher, dtype = _probe_teacher(teacher, l)
    tol = (1e-12 if dtype == torch.float64 else 1e-5) * max(abs(scale), 1e-30)
    eye = torch.eye(P, dtype=dtype, device=device) * scale
    zero = torch.zeros(1, *shape_in, dtype=dtype, device=device)
    m = torch.cat([_teacher_z(teacher, l, zero, eye[i:i + 256]) for i in range(0, P, 256)])[:, 0]  # (P, out)
    out = m.shape[1]
    bias_p, bias_row = torch.nonzero(m.abs() > tol, as_tuple=True)

    def assemble(found: tuple[torch.Tensor, ...]) -> SparseAffineMaps:
        return SparseAffineMaps(torch.cat([bias_p, found[0]]), torch.cat([bias_row, found[1]]),
                                torch.cat([torch.zeros_like(bias_p), found[2]]),
                                torch.cat([m[bias_p, bias_row], found[3]]), P, out, I)

    res, probes = None, I
    guess = _shift_pattern(teacher, l, scale, dtype, device, tol)
    colours = None if guess is None else _colour_columns(guess[0], guess[1], out, I)
    if colours is not None:  # the cheap guess (C probes); kept only if exact
        found = _probe_grouped(teacher, l, eye, m, guess[0], guess[1], colours, shape_in, tol)
        if found is not None and _verify_error(teacher, l, assemble(found), scale, dtype, verify_on) <= \
                _verify_tol(dtype):
            res, probes = assemble(found), int(colours.max()) + 1
        else:
            log.debug("probe of layer %d: the shifted pattern does not hold; probing every input once", l)
    if res is None:
        rows, cols = _union_pattern(teacher, l, scale, dtype, device, tol)
        colours = _colour_columns(rows, cols, out, I)
        found = None
        if colours is not None:
            found = _probe_grouped(teacher, l, eye, m, rows, cols, colours, shape_in, tol)
            probes = int(colours.max()) + 1
            if found is None:
                log.warning("probe of layer %d: outputs outside the detected sparsity pattern; probing every "
                            "input separately", l)
        if found is None:
            found, probes = _probe_grouped(teacher, l, eye, m, None, None, np.arange(I), shape_in, tol), I
        res = assemble(found)
        err = _verify_error(teacher, l, res, scale, dtype, verify_on)
        if err > _verify_tol(dtype):
            raise RuntimeError(f"probe: the sparse basis maps of layer {l} reproduce the teacher only to relative "
                               f"error {err:.2e}; is the layer affine in its parameters and its input?")
    log.info("probe of layer %d: %d basis maps, %d entries (%.2g%% of dense), %d probes per kernel", l, P,
             res.nnz, 100.0 * res.nnz / max(1, P * out * (I + 1)), probes)
    return res


def _probe_grouped(teacher: Any, l: int, eye: torch.Tensor, m: torch.Tensor, rows: Optional[np.ndarray],
                   cols: Optional[np.ndarray], colours: np.ndarray, shape_in: tuple, tol: float
                   ) -> Optional[tuple[torch.Tensor, ...]]:
    """Entries ``(p, row, 1 + i, value)`` from one probe per colour and kernel; ``None`` if an output
    outside the pattern is nonzero (``rows is None``: no pattern, one input per colour, all rows read)."""
    device, dtype = eye.device, eye.dtype
    P, out = m.shape
    I = colours.size
    G = int(colours.max()) + 1
    if rows is None:  # every (row, input) is a candidate; colours are singletons
        rows = np.tile(np.arange(out), I)
        cols = np.repeat(np.arange(I), out)
    order = np.argsort(colours[cols], kind="stable")  # pattern entries grouped by colour
    g_of = colours[cols][order]
    bounds = np.searchsorted(g_of, np.arange(G + 1))
    ent_rows = torch.as_tensor(rows[order], device=device)
    ent_cols = torch.as_tensor(cols[order], device=device)
    ent_g = torch.as_tensor(g_of, device=device)
    members = np.argsort(colours, kind="stable")
    mbounds = np.searchsorted(colours[members], np.arange(G + 1))
    per = max(1, PROBE_CHUNK_BYTES // (out * 8))
    gc = max(1, min(G, per // min(P, 64)))
    pc = max(1, min(P, per // gc))
    out_p, out_r, out_c, out_v = [], [], [], []
    for g0 in range(0, G, gc):
        g1 = min(G, g0 + gc)
        x = torch.zeros(g1 - g0, I, dtype=dtype, device=device)
        mem = torch.as_tensor(members[mbounds[g0]:mbounds[g1]], device=device)
        x[torch.as_tensor(colours[members[mbounds[g0]:mbounds[g1]]], device=device) - g0, mem] = 1.0
        x = x.reshape(g1 - g0, *shape_in)
        e0, e1 = int(bounds[g0]), int(bounds[g1])
        er, ec = ent_rows[e0:e1], ent_cols[e0:e1]
        flat = (ent_g[e0:e1] - g0) * out + er  # index into the flattened (colour, row) axis
        for p0 in range(0, P, pc):
            z = _teacher_z(teacher, l, x, eye[p0:p0 + pc])  # (pc, gc, out)
            z -= m[p0:p0 + pc, None, :]
            z = z.reshape(z.shape[0], -1)
            vals = z.index_select(1, flat)  # (pc, entries): one per (colour, row) by the colouring
            z.index_fill_(1, flat, 0.0)
            lo, hi = torch.aminmax(z)
            if max(-float(lo), float(hi)) > tol:  # an output the pattern says is zero is not
                return None
            pp, jj = torch.nonzero(vals.abs() > tol, as_tuple=True)
            out_p.append(pp + p0), out_r.append(er[jj]), out_c.append(ec[jj] + 1), out_v.append(vals[pp, jj])
    cat = lambda xs, dt: torch.cat(xs) if xs else torch.zeros(0, dtype=dt, device=device)  # noqa: E731
    return (cat(out_p, torch.long), cat(out_r, torch.long), cat(out_c, torch.long), cat(out_v, torch.float64))


def _verify_tol(dtype: torch.dtype) -> float:
    return 1e-8 if dtype == torch.float64 else 1e-4


def _verify_error(teacher: Any, l: int, maps: SparseAffineMaps, scale: float, dtype: torch.dtype,
                  h: Optional[torch.Tensor]) -> float:
    """Relative error of ``Σ_p k̃_p T_p x̃`` against the teacher for 2 random kernels on 4 inputs ``h``."""
    gen = torch.Generator().manual_seed(54_321)
    if h is None:
        h = torch.randn(4, *teacher.feature_shapes[l - 1], generator=gen)
    h = h[:4].to(device=maps.val.device, dtype=dtype)
    kt = torch.randn(2, maps.num_params, generator=gen, dtype=torch.float64).to(maps.val.device)
    ref = _teacher_z(teacher, l, h, (kt * scale).to(dtype))
    pred = maps.apply(kt, h.reshape(h.shape[0], -1))
    return float((pred - ref).norm() / ref.norm().clamp_min(1e-300))


# ---- Gram matrices ------------------------------------------------------------------------------------------
