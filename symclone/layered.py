"""The per-layer feature API shared by teachers and students.

A *layered* model defines ``num_layers`` and ``layer_forward(l, h)`` (layer ``l`` applied to feature
``l-1``); :class:`LayeredModule` derives ``forward_features`` from them:
``f_l = layer_l(f_{l-1})``, ``f_0 = x``.

>>> class Twice(LayeredModule):
...     num_layers = 2
...     def layer_forward(self, l, h):
...         return 2 * h
>>> [f.item() for f in Twice().forward_features(torch.tensor(1.0))]
[2.0, 4.0]
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["LayeredModule"]


class LayeredModule(nn.Module):
    """``nn.Module`` whose ``forward_features(x)`` runs ``layer_forward(1..L)`` in order."""

    num_layers: int

    def layer_forward(self, l: int, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of layers ``1..L`` (after each layer's nonlinearity), in order."""
        feats, h = [], x
        for l in range(1, self.num_layers + 1):
            h = self.layer_forward(l, h)
            feats.append(h)
        return feats
