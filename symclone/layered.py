"""The per-layer feature API shared by teachers and students, and the checks of its arguments.

A *layered* model has features ``f_0 = x, f_1, …, f_L`` with per-sample shapes ``feature_shapes``
(input first, ``L + 1`` entries) and defines ``layer_forward(l, h)``: layer ``l`` (1-based) applied
to feature ``l-1``. :class:`LayeredModule` derives the rest from them:

    f_l = layer_l(f_{l-1}),   forward_features(x) = [f_1, …, f_L],   forward(x) = f_L

and owns the argument checks every teacher and student runs (layer index in ``1..L``; a feature's
shape ``(B, *feature_shapes[l-1])``, or ``(K, B, …)`` with ``K`` parameter vectors; a flat
parameter tensor ``(P_l,)`` or ``(K, P_l)``), so that they raise the same ``ValueError``, naming
the argument and the expected range or shape. The contract itself is docs/design.md §3 and
docs/teachers.md.

Examples
--------
>>> class Twice(LayeredModule):
...     feature_shapes = [(3,), (3,), (3,)]
...     def layer_forward(self, l, h):
...         self._check_layer(l)
...         self._check_feature(l, h)
...         return 2 * h
>>> m = Twice()
>>> m.num_layers, [f[0, 0].item() for f in m.forward_features(torch.ones(1, 3))]
(2, [2.0, 4.0])
>>> m.layer_forward(3, torch.ones(1, 3))
Traceback (most recent call last):
...
ValueError: l: layer index must be an int in 1..2, got 3
>>> m.layer_forward(2, torch.ones(1, 4))
Traceback (most recent call last):
...
ValueError: h: layer 2 takes feature 1 and expects shape (B, 3), got (1, 4)
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn

__all__ = ["LayeredModule"]


class LayeredModule(nn.Module):
    """``nn.Module`` whose ``forward_features(x)`` runs ``layer_forward(1..L)`` in order.

    Subclasses set ``feature_shapes`` (per-sample shapes, input first) and implement
    ``layer_forward(l, h, ...)``; ``num_layers`` defaults to ``len(feature_shapes) - 1``.
    The ``_check_*`` methods validate the arguments of the per-layer API; each raises
    ``ValueError("<argument>: …")`` with the expected range or shape:

    * :meth:`_check_layer` — ``l`` is an int in ``1..L``;
    * :meth:`_check_feature` — ``h`` has shape ``(B, *feature_shapes[l-1])`` (or more leading dims);
    * :meth:`_check_params` — a flat parameter tensor ``(P_l,)`` or ``(K, P_l)``;
    * :meth:`_check_batch` — a ``(K, B, …)`` input holds one batch per parameter vector.
    """

    feature_shapes: list[tuple[int, ...]]

    @property
    def num_layers(self) -> int:
        """``L``, the number of layers: one less than the number of feature shapes (input first)."""
        return len(self.feature_shapes) - 1

    def layer_forward(self, l: int, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Layer ``l`` (1-based) applied to feature ``l-1`` ``(B, *feature_shapes[l-1])``; returns
        feature ``l`` ``(B, *feature_shapes[l])``."""
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of layers ``1..L`` (after each layer's nonlinearity), in order."""
        feats, h = [], x
        for l in range(1, self.num_layers + 1):
            h = self.layer_forward(l, h)
            feats.append(h)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature ``f_L``."""
        return self.forward_features(x)[-1]

    # ---- argument checks -------------------------------------------------------------------
    def _check_layer(self, l: int) -> int:
        """Return ``l`` if it is an int in ``1..num_layers``; ``ValueError`` otherwise."""
        if not isinstance(l, int) or not 1 <= l <= self.num_layers:
            raise ValueError(f"l: layer index must be an int in 1..{self.num_layers}, got {l!r}")
        return l

    @staticmethod
    def _feature_arg(l: int) -> str:
        """The name of layer ``l``'s input in error messages: ``x`` (the model input) or ``h``."""
        return "x" if l == 1 else "h"

    def _feature_description(self, l: int) -> str:
        """What layer ``l`` takes, for error messages (``"the input"``, ``"feature 2"``); subclasses
        may name the input's layout (e.g. ``"points (B, N, 3)"``)."""
        return "the input" if l == 1 else f"feature {l - 1}"

    def _check_feature(self, l: int, h: Any, lead_dims: Optional[int] = 1) -> None:
        """Check that ``h`` is a tensor ``(B, *feature_shapes[l-1])``, the input of layer ``l``.

        ``lead_dims`` is the most leading batch dimensions ``h`` may have: ``1`` only ``(B, …)``;
        ``2`` also ``(K, B, …)`` (one batch per parameter vector); ``None`` any number ``≥ 1``.
        """
        want = tuple(self.feature_shapes[l - 1])
        dims = ", ".join(map(str, want))
        if isinstance(h, torch.Tensor):
            lead = h.ndim - len(want)
            if lead >= 1 and (lead_dims is None or lead <= lead_dims) and tuple(h.shape[lead:]) == want:
                return
            got = str(tuple(h.shape))
        else:
            got = type(h).__name__
        forms = f"(B, {dims})"
        if lead_dims is None:
            forms += f" or (..., B, {dims})"
        elif lead_dims >= 2:
            forms += f" or (K, B, {dims})"
        raise ValueError(f"{self._feature_arg(l)}: layer {l} takes {self._feature_description(l)} and expects "
                         f"shape {forms}, got {got}")

    def _check_params(self, l: int, params: Any, num_params: Optional[int] = None,
                      batched: bool = True) -> torch.Tensor:
        """Return ``params`` if it is a flat parameter tensor of layer ``l``: ``(P,)``, or with
        ``batched`` also ``(K, P)`` (``K`` parameter vectors); ``ValueError`` otherwise.

        ``num_params``: ``P`` (default ``self.num_layer_params(l)``).
        """
        P = self.num_layer_params(l) if num_params is None else int(num_params)
        ndims = (1, 2) if batched else (1,)
        if not isinstance(params, torch.Tensor) or params.ndim not in ndims or params.shape[-1] != P:
            got = tuple(params.shape) if isinstance(params, torch.Tensor) else type(params).__name__
            what = f"a flat tensor of shape ({P},) or (K, {P})" if batched else f"one flat vector of shape ({P},)"
            raise ValueError(f"params: layer {l} expects {what}, got {got}")
        return params

    def _check_batch(self, l: int, h: torch.Tensor, K: int) -> None:
        """With ``K`` parameter vectors, a ``(K, B, …)`` input of layer ``l`` must have ``K`` batches
        (a ``(B, …)`` input is shared by all of them)."""
        if h.ndim == len(self.feature_shapes[l - 1]) + 2 and h.shape[0] != K:
            raise ValueError(f"{self._feature_arg(l)}: batched params hold K={K} parameter vectors but "
                             f"{self._feature_arg(l)} has leading dim {h.shape[0]}; pass it as (K, B, ...) "
                             "or (B, ...)")
