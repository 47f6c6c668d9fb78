"""``blocks``: the paper's kernel-conditioned student ("mlp2cnn" / "mlp2gcnn").

For a teacher layer with free parameters (kernel) ``k ∈ R^P``, student layer ``l`` computes

    z_r(k, x) = Σ_{b=1..B} h_b(A_r k̃) (W_b x + c_b),     k̃ = k / s,   h(k) = H k  (H: B × P)

for each orientation ``r`` of the output (``R = 4`` for C4 *regular* output fields, else ``R = 1``),
with dense ``W_b`` of shape ``(out_dim / R, in_dim)`` shared across orientations, learned maps
``A_r: R^P → R^P`` (``A_0 = I``) that produce the rotated filters, block biases ``c_b`` (for
teachers whose bias is part of ``k``) and the parameter scale ``s`` (the teacher's init std).
The feature is ``σ(z)`` with the orientation channels interleaved as ``(field, r, y, x)``.

``B = P = 9`` represents a 3×3 single-channel conv exactly (``W_b`` = the 9 shift matrices of the
unrolled convolution); ``B = 7`` ("7-block") cannot and is the paper's approximate clone. The
student stores a kernel per layer (``kernels``: the teacher's own parameters after ``like``) and
uses it when ``params`` is not given.

Examples
--------
>>> import torch
>>> s = BlocksStudent(feature_shapes=[[1, 5, 5], [1, 3, 3]], reps=["image", "image"], num_params=[9])
>>> k = torch.randn(4, 9)
>>> s.layer_forward(1, torch.randn(2, 1, 5, 5), params=k).shape
torch.Size([4, 2, 1, 3, 3])
>>> s.dense_matrix(1, k[0]).shape, s.block_matrices(1).shape
(torch.Size([9, 25]), torch.Size([9, 9, 25]))

**Storage.** ``W`` is dense ``(B, O, I)`` float32 where that fits the machine: at most
:data:`DENSE_SHARE` of the memory available when the student is built (the run also holds an untrained
copy, optimiser moments and checkpoint buffers). Larger layers (``B = P = 576`` blocks of
``6272 × 6272`` for the default 8-channel 28×28 CNN's layer 2: 90.6 GB) store their blocks as sparse
entries (:class:`SparseBlockLayer`); the closed-form family solution of a convolution is a set of
shift/selection matrices, exactly representable that way. ``storage="dense"``/``"sparse"`` forces a
layout; the resolved layout per layer is part of the student's config, so a saved student reloads as built.

>>> s2 = BlocksStudent(feature_shapes=[[1, 5, 5], [1, 3, 3]], reps=["image", "image"], num_params=[9],
...                    storage="sparse")
>>> s2.config["kwargs"]["storage"], s2.layer_forward(1, torch.randn(2, 1, 5, 5), params=k).shape
(['sparse'], torch.Size([4, 2, 1, 3, 3]))
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from symclone.registry import register_student

from ._base import StudentBase, teacher_layout

__all__ = ["BlocksStudent", "BlockLayer", "SparseBlockLayer", "STORAGES", "DENSE_SHARE"]

#: block layouts: ``"auto"`` resolves to ``"dense"`` or ``"sparse"`` per layer
STORAGES = ("auto", "dense", "sparse")
#: ``"auto"`` stores a layer's blocks densely when they take at most this share of the available memory
DENSE_SHARE = 1 / 8
#: entries of the random sparse initialisation of a sparse layer
SPARSE_INIT_ENTRIES = 1 << 20


class _BlockLayerBase(nn.Module):
    """What the dense and the sparse block layer share: the layout and ``c``, ``H``, ``A``, ``kernel``,
    ``scale`` (the blocks ``W`` themselves are stored by the subclass)."""

    def _layout(self, in_dim: int, out_dim: int, num_params: int, blocks: int, orientations: int) -> int:
        if out_dim % orientations:
            raise ValueError(f"orientations: output size {out_dim} is not divisible by {orientations}")
        O = out_dim // orientations
        self.B, self.P, self.R, self.O, self.I = blocks, num_params, orientations, O, in_dim
        return O

    def _shared_parameters(self, gen: Optional[torch.Generator]) -> None:
        """``c = 0``, ``H`` a random orthonormal ``(B, P)`` slice, ``A_r = I``; drawn after ``W``."""
        B, P = self.B, self.P
        self.c = nn.Parameter(torch.zeros(B, self.O))
        q, _ = torch.linalg.qr(torch.randn(max(B, P), max(B, P), generator=gen))
        self.H = nn.Parameter(q[:B, :P].clone())
        self.A = nn.Parameter(torch.eye(P).repeat(self.R - 1, 1, 1))
        self.register_buffer("kernel", torch.zeros(P))
        self.register_buffer("scale", torch.ones(()))

    def coefficients(self, k: torch.Tensor) -> torch.Tensor:
        """``h(A_r k̃)`` for every orientation: ``(..., R, B)``."""
        kt = k / self.scale
        maps = [kt] + [kt @ self.A[r].T for r in range(self.R - 1)]
        return torch.stack(maps, dim=-2) @ self.H.T


class BlockLayer(_BlockLayerBase):
    """One kernel-conditioned layer: ``W (B, O, I)``, ``c (B, O)``, ``H (B, P)``, ``A (R-1, P, P)``."""

    sparse = False

    def __init__(self, in_dim: int, out_dim: int, num_params: int, blocks: int, orientations: int,
                 gen: Optional[torch.Generator]):
        super().__init__()
        O = self._layout(in_dim, out_dim, num_params, blocks, orientations)
        bound = 1.0 / math.sqrt(in_dim * blocks)
        # U(-bound, bound) in one pass (the same values and generator state as (rand * 2 - 1) * bound)
        self.W = nn.Parameter(torch.empty(blocks, O, in_dim).uniform_(-bound, bound, generator=gen))
        self._shared_parameters(gen)

    def effective(self, z: torch.Tensor) -> torch.Tensor:
        """``Σ_b z_{r,b} W_b`` ``(R, O, I)`` for the coefficients ``z (R, B)`` of one kernel."""
        return torch.einsum("rb,boi->roi", z, self.W)

    @torch.no_grad()
    def assign(self, block: torch.Tensor, row: torch.Tensor, col: torch.Tensor, val: torch.Tensor) -> None:
        """Set ``W`` to the entries ``W[block, row, col] = val`` (zero elsewhere; duplicates add up)."""
        self.W.zero_()
        self.W.index_put_((block, row, col), val.to(self.W), accumulate=True)

    def forward(self, h_flat: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``h_flat (N, I)`` or ``(K, N, I)``, ``k (P,)`` or ``(K, P)`` -> ``(..., N, R, O)``."""
        z = self.coefficients(k)  # (R, B) or (K, R, B)
        B, O = self.B, self.O
        # one GEMM for all blocks: u[n, b, o] = (W_b x_n + c_b)[o]
        u = (h_flat @ self.W.reshape(B * O, -1).T + self.c.reshape(-1)).reshape(*h_flat.shape[:-1], B, O)
        if k.ndim == 1:
            return torch.einsum("rb,...nbo->...nro", z, u)
        if u.ndim == 3:  # shared inputs for every kernel: (K R, B) @ (B, N O)
            N = u.shape[0]
            y = z.reshape(-1, B) @ u.permute(1, 0, 2).reshape(B, N * O)
            return y.reshape(k.shape[0], self.R, N, O).transpose(1, 2)
        return torch.einsum("krb,knbo->knro", z, u)


class SparseBlockLayer(_BlockLayerBase):
    """A :class:`BlockLayer` whose blocks are stored as entries: ``W_index (3, nnz)`` (block, row, column)
    and ``W_values (nnz,)``; ``c``, ``H``, ``A``, ``kernel``, ``scale`` as in the dense layer.

    The forward applies the blocks as index operations (``u_b = W_b x`` from the entries, then
    ``Σ_b h_b(A_r k̃) u_b`` for every kernel: no dense ``(R·O, I)`` map); everything is differentiable in
    ``W_values``. A fresh layer holds a random sparse
    ``W``: ``n = min(B·O·I, SPARSE_INIT_ENTRIES)`` entries at uniformly random ``(b, o, i)``, values
    ``U(−a, a)`` with ``a = sqrt(O / n)`` (so each output's variance matches the dense init's), a
    group-agnostic baseline like the dense one.
    """

    sparse = True

    def __init__(self, in_dim: int, out_dim: int, num_params: int, blocks: int, orientations: int,
                 gen: Optional[torch.Generator]):
        super().__init__()
        O = self._layout(in_dim, out_dim, num_params, blocks, orientations)
        n = min(blocks * O * in_dim, SPARSE_INIT_ENTRIES)
        idx = torch.stack([torch.randint(0, size, (n,), generator=gen) for size in (blocks, O, in_dim)])
        self.register_buffer("W_index", idx)
        self.W_values = nn.Parameter((torch.rand(n, generator=gen) * 2 - 1) * math.sqrt(O / n))
        self._shared_parameters(gen)

    @property
    def W(self) -> torch.Tensor:
        """The blocks as a coalesced sparse COO tensor ``(B, O, I)``."""
        return torch.sparse_coo_tensor(self.W_index, self.W_values, (self.B, self.O, self.I),
                                       check_invariants=True).coalesce()

    @property
    def nnz(self) -> int:
        """The number of stored entries of ``W`` (after :meth:`assign`: its non-zeros)."""
        return int(self.W_values.numel())

    def effective(self, z: torch.Tensor) -> torch.Tensor:
        """``Σ_b z_{r,b} W_b`` ``(R, O, I)`` (dense) for the coefficients ``z (R, B)`` of one kernel."""
        b, o, i = self.W_index
        vals = z[:, b] * self.W_values  # (R, nnz)
        M = torch.zeros(z.shape[0], self.O * self.I, dtype=vals.dtype, device=vals.device)
        return M.index_add(1, o * self.I + i, vals).reshape(z.shape[0], self.O, self.I)

    @torch.no_grad()
    def assign(self, block: torch.Tensor, row: torch.Tensor, col: torch.Tensor, val: torch.Tensor) -> None:
        """Replace ``W`` by the entries ``W[block, row, col] = val`` (duplicates add up; zeros dropped)."""
        dev, dtype = self.W_values.device, self.W_values.dtype
        W = torch.sparse_coo_tensor(torch.stack([block, row, col]).to(dev), val.to(dev, torch.float64),
                                    (self.B, self.O, self.I), check_invariants=True).coalesce()
        keep = W.values() != 0
        self.W_index = W.indices()[:, keep].contiguous()
        self.W_values = nn.Parameter(W.values()[keep].to(dtype).contiguous())

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        ki, kv = prefix + "W_index", prefix + "W_values"
        if ki in state_dict and kv in state_dict:  # another sparsity pattern: take its size
            self.W_index = torch.empty_like(state_dict[ki], device=self.W_index.device)
            self.W_values = nn.Parameter(torch.empty(state_dict[kv].shape, dtype=self.W_values.dtype,
                                                     device=self.W_values.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def blocks_apply(self, x: torch.Tensor) -> torch.Tensor:
        """``u[b, o, n] = (W_b x_n)[o]`` ``(B, O, N)`` for ``x (N, I)`` from the entries: a gather of the
        inputs each entry reads and an index-add into its block row (``nnz · N`` products, no dense map)."""
        b, o, i = self.W_index
        src = x.T[i] * self.W_values.to(x.dtype)[:, None]  # (nnz, N)
        u = torch.zeros(self.B * self.O, x.shape[0], dtype=x.dtype, device=x.device)
        return u.index_add(0, b * self.O + o, src).reshape(self.B, self.O, x.shape[0])

    def forward(self, h_flat: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``h_flat (N, I)`` or ``(K, N, I)``, ``k (P,)`` or ``(K, P)`` -> ``(..., N, R, O)``.

        Inputs are taken in chunks of ``n`` rows with ``B·O·n`` and ``nnz·n`` at most ``max(R·O·I, 2²²)``
        (never more memory than one dense map): ``u = W x`` per block from the entries
        (:meth:`blocks_apply`), then ``z_r = Σ_b h_b(A_r k̃) u_b + c`` for every kernel."""
        z = self.coefficients(k)
        zk = z.unsqueeze(0) if k.ndim == 1 else z  # (K, R, B)
        if h_flat.ndim == 3 and h_flat.shape[0] != zk.shape[0]:
            raise ValueError(f"h: (K, N, I) inputs need K = {zk.shape[0]} kernels, got {tuple(h_flat.shape)}")
        bias = zk @ self.c  # (K, R, O)
        K, N = zk.shape[0], h_flat.shape[-2]
        per_row = max(self.B * self.O, self.nnz, 1)
        n = max(1, min(N, max(self.R * self.O * self.I, 1 << 22) // per_row))
        xs = [h_flat] if h_flat.ndim == 2 else list(h_flat)
        outs = []
        for j, x in enumerate(xs):
            zj = zk if len(xs) == 1 else zk[j:j + 1]  # shared inputs: every kernel at once
            parts = []
            for n0 in range(0, N, n):
                u = self.blocks_apply(x[n0:n0 + n])  # (B, O, n)
                y = (zj.reshape(-1, self.B).to(u.dtype) @ u.reshape(self.B, -1))  # (k R, O n)
                parts.append(y.reshape(zj.shape[0], self.R, self.O, -1))
            y = torch.cat(parts, -1).permute(0, 3, 1, 2)  # (k, N, R, O)
            outs.append(y + (bias if len(xs) == 1 else bias[j:j + 1]).to(y.dtype)[:, None])
        y = torch.cat(outs)
        return y[0] if k.ndim == 1 else y


def _resolve_storage(storage: str, l: int, B: int, O: int, I: int, R: int) -> str:
    """``"dense"`` or ``"sparse"`` for a layer of ``B`` blocks ``(O, I)``; ``ValueError`` naming the sizes
    when the requested (or any) layout does not fit the available memory."""
    from symclone import memory as _memory

    avail = _memory.available_memory_bytes()
    limit = None if avail is None else _memory.MEMORY_FRACTION * avail

    def too_big(need: float, what: str) -> str:
        return (f"blocks: layer {l} would need {_memory.format_bytes(need)} for {what}, but only "
                f"{_memory.format_bytes(limit)} of memory may be used ({_memory.MEMORY_FRACTION:.0%} of the "
                f"{_memory.format_bytes(avail)} available)")

    dense_bytes = 4 * B * O * I
    dense_what = f"its dense blocks (B x O x I = {B} x {O} x {I} float32)"
    if storage == "dense":
        if limit is not None and dense_bytes > limit:
            raise ValueError(too_big(dense_bytes, dense_what) + "; use storage='sparse' (--student.storage=sparse), "
                             "fewer blocks or a smaller teacher")
        return "dense"
    if storage == "auto" and (avail is None or dense_bytes <= DENSE_SHARE * avail):
        return "dense"
    sparse_bytes = 4 * 3 * R * O * I
    if limit is not None and sparse_bytes > limit:
        raise ValueError(too_big(sparse_bytes, f"its sparse blocks (one dense {R * O} x {I} float32 map per kernel "
                                               "in flight)") + f", and {_memory.format_bytes(dense_bytes)} for "
                         "dense ones; the layer does not fit this machine: use a smaller teacher")
    return "sparse"


def _param_scale(teacher: Any, l: int) -> float:
    """The teacher's init std of layer ``l`` (estimated from 4096 draws if not exposed)."""
    std = getattr(teacher, "_init_std", None)
    if callable(std):
        try:
            return float(std(l)) or 1.0
        except (TypeError, ValueError, NotImplementedError):
            pass
    g = torch.Generator().manual_seed(1234)
    return float(teacher.sample_params(l, 4096, generator=g).std()) or 1.0


@register_student("blocks")
class BlocksStudent(StudentBase):
    """Kernel-conditioned dense student (see the module docstring for the math).

    Parameters
    ----------
    feature_shapes, reps, activations : the teacher's layout (input first).
    num_params : ``P_l`` per layer (the teacher's ``num_layer_params``).
    blocks : ``B`` (an int for every layer, or one per layer); default ``P_l`` (exact).
    orientations : per layer ``R`` (default 4 where the output rep is ``"regular"``, else 1).
    param_scale : per layer ``s`` (default 1).
    seed : initialisation seed.
    teacher : take layout, ``num_params``, scales and kernels from this teacher (``like``).
    storage : ``"auto"`` (default), ``"dense"`` or ``"sparse"`` for every layer, or one per layer (see
        *Storage* in the module docstring).
    """

    supports_params = True

    def __init__(self, feature_shapes: Optional[Sequence[Sequence[int]]] = None,
                 reps: Optional[Sequence[str]] = None, activations: Optional[Sequence[str]] = None,
                 num_params: Optional[Sequence[int]] = None, blocks: int | Sequence[int] | None = None,
                 orientations: Optional[Sequence[int]] = None, param_scale: Optional[Sequence[float]] = None,
                 seed: Optional[int] = 0, teacher: Any = None,
                 storage: str | Sequence[str] | None = None):
        super().__init__()
        kernels = None
        if teacher is not None:
            if not callable(getattr(teacher, "kernel", None)):
                name = getattr(teacher, "config", {}).get("name", type(teacher).__name__)
                raise ValueError(f"student blocks: conditions dense blocks on convolution kernels and needs a "
                                 f"convolutional teacher (cnn, gcnn_c4), got {name!r}; use the mlp or "
                                 "transformer student")
            lay = teacher_layout(teacher)
            feature_shapes, reps, activations = lay["feature_shapes"], lay["reps"], lay["activations"]
            L = teacher.num_layers
            num_params = [int(teacher.num_layer_params(l)) for l in range(1, L + 1)]
            param_scale = [_param_scale(teacher, l) for l in range(1, L + 1)]
            kernels = [teacher.layer_params(l).detach().float() for l in range(1, L + 1)]
        if feature_shapes is None or reps is None or num_params is None:
            raise ValueError("feature_shapes, reps, num_params: give all three, or teacher=")
        self._init_layout(feature_shapes, reps, activations)
        L = self.num_layers
        num_params = [int(p) for p in num_params]
        if len(num_params) != L:
            raise ValueError(f"num_params: expected {L} entries (one per layer), got {len(num_params)}")
        blocks = num_params if blocks is None else ([int(blocks)] * L if isinstance(blocks, int) else list(blocks))
        if len(blocks) != L or min(blocks) < 1:
            raise ValueError(f"blocks: expected a positive int or {L} positive ints, got {blocks!r}")
        if orientations is None:
            orientations = [4 if self.reps[l].kind == "regular" else 1 for l in range(1, L + 1)]
        orientations = [int(r) for r in orientations]
        param_scale = [1.0] * L if param_scale is None else [float(s) for s in param_scale]
        storage = ["auto"] * L if storage is None else ([storage] * L if isinstance(storage, str) else list(storage))
        if len(storage) != L or any(s not in STORAGES for s in storage):
            raise ValueError(f"storage: expected one of {STORAGES} or {L} of them, got {storage!r}")
        for l in range(1, L + 1):
            if self.out_dim(l) % orientations[l - 1]:
                raise ValueError(f"orientations: output size {self.out_dim(l)} of layer {l} is not divisible by "
                                 f"{orientations[l - 1]}")
        storage = [_resolve_storage(storage[l - 1], l, blocks[l - 1], self.out_dim(l) // orientations[l - 1],
                                    self.in_dim(l), orientations[l - 1]) for l in range(1, L + 1)]
        self.config = {"name": "blocks", "kwargs": dict(
            feature_shapes=[list(s) for s in self.feature_shapes], reps=[str(r) for r in self.reps],
            activations=list(self.activations), num_params=num_params, blocks=blocks,
            orientations=orientations, param_scale=param_scale, seed=seed, storage=storage)}
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.layers = nn.ModuleList()
        for l in range(1, L + 1):
            cls = SparseBlockLayer if storage[l - 1] == "sparse" else BlockLayer
            layer = cls(self.in_dim(l), self.out_dim(l), num_params[l - 1], blocks[l - 1], orientations[l - 1], gen)
            layer.scale.fill_(param_scale[l - 1])
            if kernels is not None:
                layer.kernel.copy_(kernels[l - 1])
            self.layers.append(layer)

    @classmethod
    def like(cls, teacher: Any, **kwargs: Any) -> "BlocksStudent":
        """A blocks student for ``teacher`` (its layout, parameter counts, scales and kernels)."""
        return cls(teacher=teacher, **kwargs)

    def _params(self, l: int, params: Optional[torch.Tensor]) -> torch.Tensor:
        layer = self.layers[l - 1]
        if params is None:
            return layer.kernel
        return self._check_params(l, params, num_params=layer.P).to(layer.c.dtype)

    def _pre(self, l: int, h: torch.Tensor, params: Optional[torch.Tensor]) -> torch.Tensor:
        layer = self.layers[l - 1]
        k = self._params(l, params)
        nd = len(self.feature_shapes[l - 1])
        lead = h.shape[: h.ndim - nd]
        if k.ndim == 1 and len(lead) != 1:
            raise ValueError(f"h: with one kernel, layer {l} expects (B, ...) inputs, got {tuple(h.shape)}")
        if k.ndim == 2:
            self._check_batch(l, h, k.shape[0])
        y = layer(h.reshape(*lead, -1), k)  # (..., N, R, O)
        out = self.feature_shapes[l]
        if layer.R == 1:
            return y.reshape(*y.shape[:-2], *out)
        fields = out[0] // layer.R
        y = y.reshape(*y.shape[:-2], layer.R, fields, -1).transpose(-3, -2)  # (..., N, F, R, HW)
        return y.reshape(*y.shape[:-3], *out)

    def dense_matrix(self, l: int, params: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The effective matrix ``Σ_b h_b(A_r k̃) W_b`` ``(out_dim, in_dim)`` (rows in the teacher's
        ``(field, r, y, x)`` order; block biases not included)."""
        layer = self.layers[self._check_layer(l) - 1]
        k = self._params(l, params)
        if k.ndim != 1:
            raise ValueError(f"params: dense_matrix takes one kernel of shape ({layer.P},), got {tuple(k.shape)}")
        with torch.no_grad():
            z = layer.coefficients(k)  # (R, B)
            M = layer.effective(z)  # (R, O, I)
            if layer.R > 1:
                fields = self.feature_shapes[l][0] // layer.R
                M = M.reshape(layer.R, fields, -1, layer.I).transpose(0, 1)
            return M.reshape(-1, layer.I)

    def block_matrices(self, l: int) -> torch.Tensor:
        """The blocks ``W_b``: ``(B, out_dim / R, in_dim)`` (``R`` orientations share them); a sparse COO
        tensor for a sparse layer."""
        return self.layers[self._check_layer(l) - 1].W.detach()

    def storage(self, l: int) -> str:
        """``"dense"`` or ``"sparse"``: how layer ``l`` stores its blocks."""
        return "sparse" if getattr(self.layers[self._check_layer(l) - 1], "sparse", False) else "dense"
