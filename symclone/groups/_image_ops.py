"""Batched image operations behind the planar groups' actions (one home: :mod:`._planar` uses them).

``roll_batched`` / ``rot90_batched`` apply one cyclic shift / quarter turn per sample and
``rot_roll_batched`` both (the p4 action), ``rotate_shift`` moves a shift through a rotation (the p4
composition law), and the ``_check_*`` helpers give the groups' early, named errors for non-square
images and regular fields.

The batched actions are pure data movement without per-pixel index tensors: the inputs are grouped by
quarter turn (one ``rot90`` per turn over all inputs that drew it, written into one buffer), and a cyclic
shift of an image is read as ``H`` contiguous row slices of the image stored twice side by side (one
``index_select`` of ``n·C·H`` rows from the buffer's overlapping row windows). Their gradient is the
action of the inverse element (a permutation's adjoint is its inverse), computed the same way.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ._base import check_tensor, positive_int
from ._reps import RepLike, parse_rep

__all__ = ["roll_batched", "rot90_batched", "rot_roll_batched", "rotate_shift"]


def _size2(size: Any, group: str) -> Optional[tuple[int, int]]:
    """``None``, a positive int ``N`` (-> ``(N, N)``) or a pair ``(H, W)`` of positive ints."""
    if size is None:
        return None
    expect = f"size: group {group!r} expects a positive int N or a pair (H, W) of positive ints"
    if isinstance(size, torch.Tensor) and size.ndim == 1:
        size = size.tolist()
    if isinstance(size, (tuple, list, torch.Size)):
        if len(size) != 2:
            raise ValueError(f"{expect}, got {len(size)} entries {tuple(size)}")
        try:
            return tuple(positive_int(s, "size", group) for s in size)  # type: ignore[return-value]
        except ValueError:
            raise ValueError(f"{expect}, got {tuple(size)}") from None
    try:
        n = positive_int(size, "size", group)
    except ValueError:
        raise ValueError(f"{expect}, got {size!r}") from None
    return (n, n)


def roll_batched(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Cyclic shift of the last two axes by ``shift = (dy, dx)``, one shift per sample if batched.

    Examples
    --------
    >>> x = torch.arange(9.).view(1, 1, 3, 3)
    >>> torch.equal(roll_batched(x, torch.tensor([1, 2])), torch.roll(x, (1, 2), dims=(-2, -1)))
    True
    """
    if shift.ndim == 1:
        return torch.roll(x, (int(shift[0]), int(shift[1])), dims=(-2, -1))
    return rot_roll_batched(x, None, shift)


def rot90_batched(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``torch.rot90(x, k, dims=(-2, -1))`` with one ``k`` per sample if ``k`` is batched.

    ``k`` is one integer (shape ``()``, applied to every sample) or one per sample (shape ``(B,)``);
    it is taken mod 4. The last two axes of ``x`` must be square when ``k`` is odd.

    Examples
    --------
    >>> x = torch.arange(8.).view(2, 1, 2, 2)
    >>> rot90_batched(x, torch.tensor([0, 1]))[1].flatten().tolist()
    [5.0, 7.0, 4.0, 6.0]
    """
    if k.ndim == 0:
        return torch.rot90(x, int(k) % 4, dims=(-2, -1))
    return rot_roll_batched(x, k, None)


def rot_roll_batched(x: torch.Tensor, k: Optional[torch.Tensor], shift: Optional[torch.Tensor],
                     fields: bool = False, source: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per sample ``b``: ``roll_{shift_b}(rot90_{k_b}(x_b))`` over the last two axes (the p4 action).

    ``x`` is ``(n, ..., H, W)``, ``k`` ``(n,)`` quarter turns (mod 4; ``None``: none) and ``shift``
    ``(n, 2)`` cyclic shifts ``(dy, dx)`` (``None``: none), so that ``out[b, ..., i, j] =
    rot90(x[b], k_b)[..., (i − dy_b) mod H, (j − dx_b) mod W]``. With ``fields`` axis 1 holds C4 regular
    fields (4 orientations each), which are also rolled by ``+k_b`` (escnn's action of the rotation).
    ``source`` ``(n,)`` (optional) lets sample ``b`` read ``x[source_b]`` instead of ``x[b]`` (e.g. the
    ``k`` draws of the sample-major layout from the ``B`` un-repeated inputs, ``source = arange(k·B) % B``).

    Bit-identical to ``torch.roll(torch.rot90(x[b], k_b, (-2, -1)), tuple(shift_b), (-2, -1))`` per
    sample (the values are only moved); the cost is a few copies of ``x`` and an index of ``n·C·H``
    rows, independent of the group's order. Differentiable: the gradient is the same operation with the
    inverse element ``(−k, −R^{−k} shift)`` (``R(s, t) = (−t, s)``, see :func:`rotate_shift`).

    Examples
    --------
    >>> x = torch.arange(32.).view(2, 1, 4, 4); k = torch.tensor([1, 3]); t = torch.tensor([[1, 0], [2, 3]])
    >>> y = rot_roll_batched(x, k, t)
    >>> torch.equal(y[1], torch.roll(torch.rot90(x[1], 3, (-2, -1)), (2, 3), (-2, -1)))
    True
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return _RotRoll.apply(x, k, shift, bool(fields), source)
    return _rot_roll(x, k, shift, bool(fields), source)


class _RotRoll(torch.autograd.Function):
    """``rot_roll_batched`` with the gradient ``g⁻¹·grad`` (the adjoint of a permutation)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, k: Optional[torch.Tensor], shift: Optional[torch.Tensor],
                fields: bool, source: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.k, ctx.shift, ctx.fields, ctx.source, ctx.n_in = k, shift, fields, source, x.shape[0]
        return _rot_roll(x, k, shift, fields, source)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        k, shift = ctx.k, ctx.shift
        k_inv = None if k is None else (-k.long()) % 4
        shift_inv = None if shift is None else (-shift.long() if k_inv is None else rotate_shift(k_inv, -shift.long()))
        gx = rot_roll_batched(grad, k_inv, shift_inv, ctx.fields)
        if ctx.source is not None:  # inputs read by several samples collect all their gradients
            gx = gx.new_zeros((ctx.n_in,) + tuple(gx.shape[1:])).index_add_(0, ctx.source.to(gx.device), gx)
        return gx, None, None, None, None


def _by_turn(k: Optional[torch.Tensor], n: int, device: torch.device):
    """``(r, indices of the samples with k = r)`` for every quarter turn ``r`` that occurs."""
    if k is None:
        yield 0, torch.arange(n, device=device)
        return
    order = torch.argsort(k, stable=True)
    start = 0
    for r, m in enumerate(torch.bincount(k, minlength=4).tolist()):
        if m:
            yield r, order[start:start + m]
            start += m


def _rot_roll(x: torch.Tensor, k: Optional[torch.Tensor], shift: Optional[torch.Tensor],
              fields: bool, source: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`rot_roll_batched` without autograd."""
    H, W, dev = x.shape[-2], x.shape[-1], x.device
    if source is not None:
        source = source.to(device=dev, dtype=torch.long)
    n = x.shape[0] if source is None else source.shape[0]
    if k is not None:
        k = k.to(device=dev, dtype=torch.long) % 4
        if H != W and bool((k % 2 == 1).any()):
            raise ValueError(f"x: odd quarter turns need square images, got H x W = {H} x {W}")
    if n == 0 or (shift is None and k is None):
        return x.clone() if source is None else x.index_select(0, source)
    if fields:
        _check_regular(x)
    xf = x.reshape(x.shape[0], -1, H, W)
    M = xf.shape[1]
    shape = (n,) + tuple(x.shape[1:])
    if shift is None:  # quarter turns only: one rot90 per turn over all inputs that drew it
        out = xf.new_empty((n, M, H, W))
        for r, idx in _by_turn(k, n, dev):
            sub = xf.index_select(0, idx if source is None else source[idx])
            if r:
                sub = torch.rot90(sub, r, (-2, -1))
                if fields:
                    sub = torch.roll(sub.reshape(len(idx), x.shape[1] // 4, 4, -1), r, 2)
            out.index_copy_(0, idx, sub.reshape(len(idx), M, H, W))
        return out.view(shape)
    shift = shift.to(device=dev, dtype=torch.long)
    # every (turned) image twice side by side: its row i cyclically shifted by dx is one contiguous slice
    row_flip = None
    if k is None or not bool(k.any()):
        buf = torch.cat([xf, xf], -1)
        pos = torch.arange(n, device=dev) if source is None else source
    else:
        # rot90 by r = (transpose if r odd) then flips: rows of rot90(z, 1) are the rows of zᵀ reversed,
        # rot90(z, 2) is z with rows and columns reversed, rot90(z, 3) is zᵀ with columns reversed. The
        # transpose rides on the gather of the turn's inputs, a row reversal on the row index below;
        # only a column reversal costs a copy
        buf = xf.new_empty(n, M, H, 2 * W)
        xt = xf.transpose(-2, -1)
        order, start = [], 0
        for r, idx in _by_turn(k, n, dev):
            sub = (xt if r % 2 else xf).index_select(0, idx if source is None else source[idx])
            if r >= 2:
                sub = sub.flip(-1)
            torch.cat([sub, sub], -1, out=buf[start:start + len(idx)])
            order.append(idx)
            start += len(idx)
        order_t = torch.cat(order)
        pos = torch.empty_like(order_t)  # where sample b sits in buf
        pos[order_t] = torch.arange(n, device=dev)
        row_flip = ((k == 1) | (k == 2))[:, None]
    if fields and k is not None:  # output orientation o of a field reads orientation o − k
        C = x.shape[1]
        o = (torch.arange(4, device=dev)[None, :] - k[:, None]) % 4                       # (n, 4)
        chan = ((torch.arange(C // 4, device=dev)[None, :, None] * 4 + o[:, None, :]).reshape(n, C, 1) * (M // C)
                + torch.arange(M // C, device=dev)).reshape(n, M)
    else:
        chan = torch.arange(M, device=dev).expand(n, M)
    # source row of output row i: (i − dy) mod H, reversed for turns 1 and 2 (int64 % is slow: one per sample)
    src = torch.arange(H, device=dev) - (shift[:, :1] % H)                                  # (n, H)
    src = torch.where(src < 0, src + H, src)
    if row_flip is not None:
        src = torch.where(row_flip, H - 1 - src, src)
    base = (pos * M)[:, None] + chan                                                         # (n, M)
    col = (-shift[:, 1]) % W                                                                 # (n,)
    offset = (base[:, :, None] * H + src[:, None, :]) * (2 * W) + col[:, None, None]        # (n, M, H)
    windows = buf.view(-1).as_strided((buf.numel() - W + 1, W), (1, 1))  # every W-long run of buf
    return windows.index_select(0, offset.reshape(-1)).view(shape)


def _roll_orientations(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Cyclic shift by ``k`` of the 4 orientation channels of every C4 regular field."""
    B, C = x.shape[0], x.shape[1]
    xf = x.reshape(B, C // 4, 4, *x.shape[2:])
    if k.ndim == 0:
        return torch.roll(xf, int(k) % 4, dims=2).reshape(x.shape)
    idx = (torch.arange(4, device=x.device)[None, :] - k[:, None]) % 4  # (B, 4)
    idx = idx.view(B, 1, 4, *([1] * (x.ndim - 2))).expand_as(xf)
    return torch.gather(xf, 2, idx).reshape(x.shape)


def rotate_shift(k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Rotate shift vectors ``t = (..., 2)`` by ``k`` quarter turns: ``R^k t`` with ``R(s, t) = (-t, s)``.

    This is how a rotation moves a shift in p4: ``rot90_k ∘ roll_t = roll_{R^k t} ∘ rot90_k``.
    ``k`` broadcasts against ``t[..., 0]``.

    Examples
    --------
    >>> rotate_shift(torch.tensor(1), torch.tensor([2, 3])).tolist()
    [-3, 2]
    """
    k = k % 4
    s, u = t[..., 0], t[..., 1]
    out_s = torch.where(k == 0, s, torch.where(k == 1, -u, torch.where(k == 2, -s, u)))
    out_u = torch.where(k == 0, u, torch.where(k == 1, s, torch.where(k == 2, -u, -s)))
    return torch.stack([out_s, out_u], dim=-1)


def _check_square(x: torch.Tensor, group: str) -> None:
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"x: group {group!r} rotates by 90 degrees and needs square images, "
                         f"got H x W = {x.shape[-2]} x {x.shape[-1]}")


def _check_regular(x: torch.Tensor) -> None:
    if x.shape[1] % 4 != 0:
        raise ValueError(f"x: rep 'regular' needs channels divisible by 4 (C4 regular fields, "
                         f"4 orientations per field), got {x.shape[1]} channels")


class _PerSample:
    """``act_from``: the batched action of the grid groups reading each sample's input by index."""

    def _turns_shifts(self, g: torch.Tensor) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        raise NotImplementedError  # pragma: no cover

    def act_from(self, g: torch.Tensor, x: torch.Tensor, rep: RepLike = "image",
                 source: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``act(g, x[source])`` without building ``x[source]``: sample ``i`` is ``g_i·x[source_i]``.

        ``g`` is a batch of ``n`` elements and ``source`` ``(n,)`` input indices (default ``arange(n) %
        B``: the sample-major layout of ``n = k·B`` draws over ``B`` inputs). The values are those of
        :meth:`act` on the repeated batch, bit for bit (element values are not checked).

        Examples
        --------
        >>> from symclone.groups import C4
        >>> G = C4(); x = torch.randn(2, 1, 3, 3); g = torch.tensor([0, 1, 2, 3])
        >>> torch.equal(G.act_from(g, x), G.act(g, x.repeat(2, 1, 1, 1)))
        True
        """
        rep = parse_rep(rep)
        x = check_tensor(x, rep)
        g = self._element(g, "g", False)  # type: ignore[attr-defined]
        if g.ndim != self.element_ndim + 1:  # type: ignore[attr-defined]
            raise ValueError(f"g: act_from needs a batch of elements, got shape {tuple(g.shape)}")
        if source is None:
            if x.shape[0] == 0 or g.shape[0] % x.shape[0]:
                raise ValueError(f"g: {g.shape[0]} elements are not a whole number of draws per input for "
                                 f"{x.shape[0]} inputs")
            source = torch.arange(g.shape[0], device=x.device) % x.shape[0]
        g = g.to(x.device).long()
        if rep.kind == "trivial":
            return x.index_select(0, source)
        self._act(g[:0], x[:0], rep)  # type: ignore[attr-defined]  # the group's shape checks, on no samples
        k, shift = self._turns_shifts(g)
        return rot_roll_batched(x, k, shift, fields=rep.kind == "regular" and k is not None, source=source)

