"""Evaluation of a cloned layer: relative feature error and equivariance errors.

``rel_error(a, b) = ‖a − b‖ / ‖b‖`` over the whole batch; equivariance errors use the shared checker
:func:`symclone.equivariance.equivariance_error` (float64 where the model allows, else float32).

Examples
--------
>>> import torch
>>> round(rel_error(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.0])), 6)
0.707107
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import torch
import torch.nn as nn

from symclone.groups import Group, RepLike
from symclone.equivariance import equivariance_error

__all__ = ["rel_error", "FeatureMap", "safe_equivariance", "groups_to_check", "layer_equivariance_monitor"]

log = logging.getLogger(__name__)


def rel_error(pred: torch.Tensor, target: torch.Tensor) -> float:
    """``‖pred − target‖ / ‖target‖`` in float64."""
    num = (pred.double() - target.double()).norm()
    den = target.double().norm()
    return float(num / den) if float(den) > 0 else float(num)


class FeatureMap(nn.Module):
    """``x ↦ model.forward_features(x)[l-1]`` (``layerwise=False``) or ``h ↦ model.layer_forward(l, h, params)``
    as a module, so the equivariance checker can cast it to float64.

    For a kernel-conditioned student (``blocks``) used layerwise only ``model.layers[l-1]`` is registered,
    so a float64 cast copies that layer and not, say, a 1.4 GB dense layer elsewhere in the model."""

    def __init__(self, model: nn.Module, l: int, params: Optional[torch.Tensor] = None, layerwise: bool = False):
        super().__init__()
        self.l, self.layerwise = l, layerwise
        if layerwise and getattr(model, "supports_params", False) and isinstance(getattr(model, "layers", None),
                                                                                 nn.ModuleList):
            object.__setattr__(self, "model", model)  # not a submodule: casts reach only its layer l
            self.layer = model.layers[l - 1]
        else:
            self.model = model
        self.register_buffer("params", params.clone() if params is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layerwise:
            if self.params is None:
                return self.model.layer_forward(self.l, x)
            return self.model.layer_forward(self.l, x, params=self.params)
        return self.model.forward_features(x)[self.l - 1]


def safe_equivariance(f: nn.Module, group: str | Group, rep_in: RepLike, rep_out: RepLike, x: torch.Tensor,
                      n: int = 8) -> Optional[float]:
    """Mean equivariance error of ``f`` (float64 if possible), or ``None`` when ``group`` cannot act on
    the input/output (e.g. translations of a valid-padding feature map of another size)."""
    for dtype in (torch.float64, None):
        try:
            return float(equivariance_error(f, group, rep_in, rep_out, x=x, n=n, dtype=dtype)["mean"])
        except ValueError as err:
            log.debug("equivariance under %s not defined: %s", group, err)
            return None
        except RuntimeError as err:  # e.g. a float32-only teacher; retry in the model's dtype
            log.debug("float64 equivariance check failed (%s); retrying in float32", err)
            continue
    return None


def groups_to_check(teacher: Any, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The teacher's group plus ``extra`` names (and ``c4`` for ``p4`` teachers), by name."""
    out: dict[str, Any] = {teacher.group.name: teacher.group}
    names = list(extra) + (["c4"] if teacher.group.name == "p4" else [])
    for name in names:
        out.setdefault(name, name)
    return out


def layer_equivariance_monitor(student: Any, teacher: Any, l: int, h: torch.Tensor, cfg: Any):
    """``step ↦`` mean relative equivariance error of student layer ``l`` (teacher rep ``l−1 → l``) on the
    first 8 layer inputs ``h``, under 4 fixed group elements, in the training dtype (no cast of the model
    being trained); family mode uses one fixed kernel. ``None`` where the group cannot act (then no curve)."""
    x = h[: min(8, h.shape[0])].detach()
    params = None
    if cfg.mode == "family":
        gen = torch.Generator().manual_seed(cfg.seed + 424_243)
        params = teacher.sample_params(l, 1, generator=gen)[0].to(x.device)
    f = FeatureMap(student, l, params=params, layerwise=True)
    group, rep_in, rep_out = teacher.group, teacher.reps[l - 1], teacher.reps[l]

    @torch.no_grad()
    def monitor(step: int) -> Optional[float]:
        try:
            return float(equivariance_error(f, group, rep_in, rep_out, x=x, n=4, dtype=None, seed=0)["mean"])
        except ValueError as err:
            log.debug("equivariance curve of layer %d not defined: %s", l, err)
            return None
    return monitor
