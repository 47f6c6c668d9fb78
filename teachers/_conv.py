"""Shared machinery of the convolutional teachers (``cnn``, ``gcnn_c4``).

A conv teacher is a stack of ``L`` layers ``f_l(h) = σ(k_l ⋆ h + b_l)`` where ``⋆`` is a 2D
cross-correlation (``F.conv2d``) with circular ("same", exact for cyclic shifts) or valid padding.
Subclasses only say how the flat free parameters ``θ_l`` of a layer become the filter bank
``k_l = K_l(θ_l)`` (identity reshape for ``cnn``; escnn basis expansion for ``gcnn_c4``) and the bias.

The unrolled matrix of a layer (``as_dense``) is built here directly from the kernel by index
arithmetic, independently of ``F.conv2d`` and of ``symclone.analysis``:

    W[(o, y, x), (c, (y + a − p) mod H, (x + b − p) mod W)] += k[o, c, a, b]   (circular)
    W[(o, y, x), (c, y + a, x + b)] = k[o, c, a, b]                             (valid)

Examples
--------
>>> import torch
>>> from symclone.teachers.cnn import CNNTeacher
>>> t = CNNTeacher(channels=2, depth=1, size=5)
>>> x = torch.randn(3, 1, 5, 5)
>>> W = t.as_dense(1)
>>> torch.allclose((x.flatten(1) @ W.T).view(3, 2, 5, 5), t.layer_forward(1, x, pre_activation=True), atol=1e-5)
True
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from symclone.groups import Group, Rep, parse_rep
from symclone.layered import LayeredModule

__all__ = ["ConvTeacher", "conv2d_padded", "unrolled_conv_matrix", "check_size", "check_padding", "check_widths", "reps_of",
           "PADDINGS"]

PADDINGS = ("circular", "valid")


def conv2d_padded(h: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                  padding: str, groups: int = 1) -> torch.Tensor:
    """``F.conv2d`` with circular ("same" size, wrap-around) or valid padding."""
    if padding == "circular":
        kh, kw = weight.shape[-2:]
        h = F.pad(h, (kw // 2, (kw - 1) // 2, kh // 2, (kh - 1) // 2), mode="circular")
    return F.conv2d(h, weight, bias, groups=groups)


def unrolled_conv_matrix(kernel: torch.Tensor, size: tuple[int, int], padding: str) -> torch.Tensor:
    """The dense matrix ``(C_out·H'·W', C_in·H·W)`` of a cross-correlation with ``kernel``.

    Rows/columns flatten ``(C, H, W)`` row-major (PyTorch ``Linear`` convention ``y = W x``).
    """
    co, ci, kh, kw = kernel.shape
    H, W = size
    if padding == "circular":
        Ho, Wo, py, px = H, W, kh // 2, kw // 2
    else:
        Ho, Wo, py, px = H - kh + 1, W - kw + 1, 0, 0
    o, c, a, b, y, x = torch.meshgrid(*(torch.arange(n, device=kernel.device)
                                        for n in (co, ci, kh, kw, Ho, Wo)), indexing="ij")
    iy, ix = y + a - py, x + b - px
    if padding == "circular":
        iy, ix = iy % H, ix % W
    rows = (o * Ho + y) * Wo + x
    cols = (c * H + iy) * W + ix
    vals = kernel[o, c, a, b]
    out = torch.zeros(co * Ho * Wo, ci * H * W, dtype=kernel.dtype, device=kernel.device)
    return out.index_put_((rows.reshape(-1), cols.reshape(-1)), vals.reshape(-1), accumulate=True)


class ConvTeacher(LayeredModule):
    """Base class of the convolutional teachers (see the module docstring for the layer map).

    Subclasses set ``group``, ``reps``, ``feature_shapes`` (``(C, H, W)`` per feature, input first),
    ``padding``, ``_ksizes`` (filter size per layer), ``config`` and optionally ``head``, and
    implement ``layer_params``, ``_param_tensors``, ``_kernel_from_params``, ``_init_std`` and
    ``_pool`` (``_bias_from_params`` when they have biases). Layer indices, inputs and parameter
    tensors are checked by :class:`~symclone.layered.LayeredModule`.
    """

    activation = "relu"
    group: Group
    reps: list[Rep]
    feature_shapes: list[tuple[int, ...]]
    padding: str
    config: dict

    # ---- subclass hooks --------------------------------------------------------------------
    def layer_params(self, l: int) -> torch.Tensor:  # pragma: no cover - abstract
        """The free parameters ``θ_l`` of layer ``l`` as one flat tensor ``(P_l,)`` (differentiable
        w.r.t. the module's parameters)."""
        raise NotImplementedError

    def _kernel_from_params(self, l: int, params: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """(P_l,) -> (C_out, C_in, k, k)."""
        raise NotImplementedError

    def _bias_from_params(self, l: int, params: torch.Tensor) -> Optional[torch.Tensor]:
        return None

    def _init_std(self, l: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _pool(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Group-invariant pooling of the last feature for the classification head."""
        raise NotImplementedError

    # ---- contract (argument checks: symclone.layered.LayeredModule) --------------------------
    def kernel_size(self, l: int) -> int:
        """``k``, the (square) filter size of layer ``l``."""
        return self._ksizes[self._check_layer(l) - 1]

    def num_layer_params(self, l: int) -> int:
        """``P_l``, the number of free parameters of layer ``l`` (the length of ``layer_params(l)``)."""
        return int(self.layer_params(l).numel())

    def sample_params(self, l: int, k: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``k`` draws of layer ``l``'s free parameters from the init ``N(0, init_std²)``."""
        p = self.layer_params(l)
        return torch.randn(k, p.numel(), generator=generator, dtype=p.dtype) * self._init_std(l)

    def kernel(self, l: int, params: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The expanded filter bank ``(C_out, C_in, k, k)`` (``(K, C_out, C_in, k, k)`` for batched
        ``params``) that layer ``l`` convolves with."""
        self._check_layer(l)
        if params is None:
            return self._kernel_from_params(l, self.layer_params(l))
        params = self._check_params(l, params)
        if params.ndim == 1:
            return self._kernel_from_params(l, params)
        return self._batched_kernels(l, params)

    def _batched_kernels(self, l: int, params: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._kernel_from_params(l, p) for p in params])

    def layer_forward(self, l: int, h: torch.Tensor, params: Optional[torch.Tensor] = None,
                      pre_activation: bool = False) -> torch.Tensor:
        """Layer ``l`` (1-based) applied to feature ``l-1``: ``σ(K_l(θ) ⋆ h + b)``.

        With batched ``params`` ``(K, P_l)``, ``h`` is ``(K, B, ...)`` or ``(B, ...)`` (broadcast)
        and the output is ``(K, B, ...)``: for a shared ``(B, ...)`` input one convolution with
        ``K·C_out`` output channels, for ``(K, B, ...)`` one grouped convolution. The result is a
        ``transpose(0, 1)`` view of a contiguous ``(B, K, ...)`` tensor.
        """
        self._check_layer(l)
        if params is not None:
            params = self._check_params(l, params)
        batched = params is not None and params.ndim == 2
        self._check_feature(l, h, lead_dims=2 if batched else 1)
        if params is None:
            weight, bias = self._cached_kernel(l), self._bias_from_params(l, self.layer_params(l))
            if h.is_floating_point() and weight.dtype != h.dtype:  # e.g. a float64 check of a float32 teacher
                weight, bias = weight.to(h.dtype), None if bias is None else bias.to(h.dtype)
            out = conv2d_padded(h, weight, bias, self.padding)
        elif not batched:
            out = conv2d_padded(h, self._kernel_from_params(l, params), self._bias_from_params(l, params),
                                self.padding)
        else:
            K = params.shape[0]
            w = self._batched_kernels(l, params)  # (K, Co, Ci, k, k)
            b = self._bias_from_params(l, params[0])
            bias = None if b is None else torch.stack([self._bias_from_params(l, p) for p in params]).reshape(-1)
            w = w.reshape(-1, *w.shape[2:])  # (K·Co, Ci, k, k)
            if h.ndim == len(self.feature_shapes[l - 1]) + 1:
                # shared input: ONE conv with K·Co output channels (no K-times expanded input)
                out = conv2d_padded(h, w, bias, self.padding)  # (B, K·Co, H', W')
            else:  # one input per parameter vector: grouped conv over the K inputs
                self._check_batch(l, h, K)
                B = h.shape[1]
                hk = h.transpose(0, 1).reshape(B, K * h.shape[2], *h.shape[3:])
                out = conv2d_padded(hk, w, bias, self.padding, groups=K)
            # (B, K·Co, H', W') -> (K, B, Co, H', W'), a view (contiguous after transpose(0, 1))
            out = out.reshape(out.shape[0], K, -1, *out.shape[-2:]).transpose(0, 1)
        return out if pre_activation else torch.relu(out)

    def _cached_kernel(self, l: int) -> torch.Tensor:
        return self.kernel(l)

    def set_layer_params(self, l: int, params: torch.Tensor) -> None:
        """Copy a flat parameter vector ``(P_l,)`` into layer ``l`` (in place, no grad)."""
        params = self._check_params(self._check_layer(l), params, batched=False)
        with torch.no_grad():
            for dst, src in zip(self._param_tensors(l), self._split_params(l, params)):
                dst.copy_(src.reshape(dst.shape))
        if hasattr(self, "invalidate_cache"):
            self.invalidate_cache()

    def _param_tensors(self, l: int) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _split_params(self, l: int, params: torch.Tensor) -> list[torch.Tensor]:
        sizes = [t.numel() for t in self._param_tensors(l)]
        return list(torch.split(params, sizes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature, or the class logits ``head(pool(f_L))`` when a head is attached."""
        h = self.forward_features(x)[-1]
        if getattr(self, "head", None) is None:
            return h
        return self.head(self._pool(h))

    def as_dense(self, l: int, params: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unrolled linear map of layer ``l`` (pre-activation, without bias): ``(out_dim, in_dim)``
        (``(K, out_dim, in_dim)`` for batched params)."""
        k = self.kernel(l, params)
        size = tuple(self.feature_shapes[l - 1][-2:])
        if k.ndim == 5:
            return torch.stack([unrolled_conv_matrix(kk, size, self.padding) for kk in k])
        return unrolled_conv_matrix(k, size, self.padding)


def check_size(size: int | Sequence[int], square: bool, name: str) -> tuple[int, int]:
    """Validate a teacher's ``size`` argument (``N`` or ``(H, W)``, positive ints) and return ``(H, W)``.

    ``square`` requires ``H == W`` (teachers that rotate by 90°; ``name`` names the teacher in the error).

    Examples
    --------
    >>> check_size(8, square=True, name="gcnn_c4"), check_size([6, 4], square=False, name="cnn")
    ((8, 8), (6, 4))
    """
    import numbers

    def _is_int(v) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    if _is_int(size):
        size = (size, size)
    if not isinstance(size, (tuple, list)) or len(size) != 2 or not all(_is_int(s) and s >= 1 for s in size):
        raise ValueError(f"size: expected a positive int or (H, W) of positive ints, got {size!r}")
    size = tuple(int(s) for s in size)
    if square and size[0] != size[1]:
        raise ValueError(f"size: teacher {name!r} rotates by 90 degrees and needs square images, got {size}")
    return size


def check_widths(widths: int | Sequence[int], depth: int, name: str) -> list[int]:
    """Per-layer widths from one int (repeated ``depth`` times) or a sequence of positive ints."""
    from symclone.validation import check_int

    check_int(depth, "depth", minimum=1)
    if isinstance(widths, (list, tuple)):
        out = [check_int(w, name, minimum=1) for w in widths]
        if not out:
            raise ValueError(f"{name}: expected at least one layer, got {widths!r}")
        return out
    return [check_int(widths, name, minimum=1)] * depth


def check_padding(padding: str, kernel_size: int) -> str:
    """Return ``padding`` if it is one of :data:`PADDINGS` and fits ``kernel_size`` (circular
    "same" padding centres the filter, so it needs an odd size); ``ValueError`` otherwise."""
    if padding not in PADDINGS:
        raise ValueError(f"padding: expected one of {PADDINGS}, got {padding!r}")
    if padding == "circular" and kernel_size % 2 == 0:
        raise ValueError(f"kernel_size: circular ('same') padding needs an odd kernel size, got {kernel_size}")
    return padding


def reps_of(kinds: Sequence[str]) -> list[Rep]:
    """The parsed :class:`~symclone.groups.Rep` of each name in ``kinds`` (input first)."""
    return [parse_rep(k) for k in kinds]
