"""Function cloning of an affine teacher layer by probing: the student's ``W, b`` read off the teacher.

A teacher layer whose pre-activation is affine in its input, ``z(h) = M vec(h) + m``, is fixed by
``I + 1`` evaluations: ``m = z(0)`` and ``M[:, i] = z(e_i) − z(0)``. The map is probed as the one-parameter
linear family ``z(s, h) = s · z(h)`` (:class:`OwnMap`, ``P = 1``) with :func:`._sparse_maps.probe_affine_maps`,
which returns ``T_0 = [m M]`` as sparse entries and compresses the ``I`` probes by colouring (a 3×3 conv
needs ~25 probes, not ``I``). The entries are verified against the teacher on random inputs and on
training inputs, then scattered into the student's dense weight in place (``W ← 0; W[r, c] = M[r, c]``):
the only large buffer is the weight itself, where the ridge normal equations need ``2 d²`` float64
(6.3 GB more for ``d = 12545``, the 112 px layer, whose weight is 607 MB). The result is the teacher's map
rounded to the student's dtype: the ridge fit's limit once the inputs span ``R^d``, without the samples.

A layer that is not affine in its input fails the verification (:class:`ProbeFailed`); the caller then
solves the ridge normal equations (:mod:`._function`).

Examples
--------
>>> import torch
>>> from symclone.registry import create_teacher, create_student
>>> t = create_teacher("cnn", channels=1, depth=1, size=5, bias=True)
>>> s = create_student("mlp", teacher=t)
>>> maps = probe_teacher_map(t, 1)
>>> maps.nnz <= 25 * 26, scatter_affine(s, 1, maps)
(True, 'in_place')
>>> h = torch.randn(3, 1, 5, 5)
>>> err = s.layer_forward(1, h, pre_activation=True) - t.layer_forward(1, h, pre_activation=True)
>>> float(err.abs().max()) < 1e-5
True
"""
from __future__ import annotations

import logging
import time
from typing import Any, Optional

import torch
import torch.nn as nn

from ._sparse_maps import SparseAffineMaps, probe_affine_maps

__all__ = ["OwnMap", "ProbeFailed", "probe_teacher_map", "scatter_affine", "fit_function_probe"]

log = logging.getLogger(__name__)

#: relative residual on training inputs above which a probed map is rejected (float32 rounding is ~1e-7)
PROBE_RESIDUAL_TOL = 1e-4
#: training inputs the probed layer is checked on
RESIDUAL_SAMPLES = 64


class ProbeFailed(RuntimeError):
    """The probed map does not reproduce the teacher layer, or cannot be written into the student."""


class OwnMap(nn.Module):
    """Teacher layer ``l`` at its own parameters as a one-parameter linear family ``z(s, h) = s · z_l(h)``.

    ``z`` is linear in ``s``, so :func:`._sparse_maps.probe_affine_maps` applies to any layer affine in its
    input (it need not be affine in, or even expose, its parameters): its single basis map is
    ``T_0 = [z_l(0)  ∂z_l/∂h]``. The teacher is a submodule, so ``.double()`` reaches it.
    """

    def __init__(self, teacher: Any, l: int):
        super().__init__()
        self.teacher, self.l = teacher, l
        self.feature_shapes = teacher.feature_shapes
        ref = next(iter(teacher.parameters()), None) if isinstance(teacher, nn.Module) else None
        self.register_buffer("one", torch.ones(1) if ref is None else torch.ones(1, dtype=ref.dtype,
                                                                                 device=ref.device))

    def num_layer_params(self, l: int) -> int:
        return 1

    def layer_params(self, l: int) -> torch.Tensor:
        return self.one

    def layer_forward(self, l: int, h: torch.Tensor, params: Optional[torch.Tensor] = None,
                      pre_activation: bool = True) -> torch.Tensor:
        """``s_k · z_l(h)`` ``(K, N, ...)`` for ``params (K, 1)``; ``z_l(h)`` without ``params``."""
        z = self.teacher.layer_forward(self.l, h, pre_activation=True)
        if params is None:
            return z
        return params.reshape(-1, *([1] * z.ndim)).to(z) * z[None]


@torch.no_grad()
def probe_teacher_map(teacher: Any, l: int, verify_on: Optional[torch.Tensor] = None) -> SparseAffineMaps:
    """Teacher layer ``l``'s pre-activation map ``[m M]`` as sparse entries (``p = 0``; column ``0`` is ``m``).

    Raises
    ------
    ProbeFailed
        When the probed entries do not reproduce the teacher (its layer is not affine in its input).
    """
    try:
        return probe_affine_maps(OwnMap(teacher, l), l, 1.0, verify_on=verify_on)
    except (RuntimeError, TypeError, ValueError, NotImplementedError) as err:
        raise ProbeFailed(f"probe of teacher layer {l}: {err}") from err


@torch.no_grad()
def scatter_affine(student: Any, l: int, maps: SparseAffineMaps) -> str:
    """Set student layer ``l`` to ``z = M h + m`` from the entries ``maps``; returns ``"in_place"`` or ``"dense"``.

    An ``nn.Linear``-like layer (``weight (out, in)``, optional ``bias``) is written in place:
    ``W ← 0, W[row, col − 1] = val`` (``col > 0``), ``b ← 0, b[row] = val`` (``col = 0``), so no second
    dense matrix is made; other students get a dense ``M`` through ``set_affine``.

    Raises
    ------
    ProbeFailed
        When the teacher's map has a constant term ``m ≠ 0`` and the student layer has no bias.
    """
    is_w = maps.col > 0
    lin = student.layers[l - 1] if hasattr(student, "layers") else None
    weight = getattr(lin, "weight", None)
    bias = getattr(lin, "bias", None)
    if isinstance(weight, torch.Tensor) and bias is None and bool((maps.val[~is_w] != 0).any()):
        raise ProbeFailed(f"teacher layer {l} has a constant term but student layer {l} has no bias")
    rows, cols, vals = maps.row[is_w], maps.col[is_w] - 1, maps.val[is_w]
    if isinstance(weight, torch.Tensor) and tuple(weight.shape) == (maps.out_dim, maps.in_dim):
        weight.zero_()
        weight.index_put_((rows.to(weight.device), cols.to(weight.device)), vals.to(weight))
        if bias is not None:
            bias.zero_()
            bias.index_put_((maps.row[~is_w].to(bias.device),), maps.val[~is_w].to(bias))
        return "in_place"
    W = torch.zeros(maps.out_dim, maps.in_dim, dtype=torch.float64, device=maps.val.device)
    W.index_put_((rows, cols), vals)
    b = torch.zeros(maps.out_dim, dtype=torch.float64, device=maps.val.device)
    b.index_put_((maps.row[~is_w],), maps.val[~is_w])
    ref = next(iter(student.parameters()))
    student.set_affine(l, W.to(ref), b.to(ref))
    return "dense"


@torch.no_grad()
def fit_function_probe(student: Any, teacher: Any, l: int, h_train: torch.Tensor) -> dict:
    """Probe teacher layer ``l``, write its map into student layer ``l`` and check it on training inputs.

    The record has ``final_rel_error`` ``‖z_s(h) − z_t(h)‖ / ‖z_t(h)‖`` on the first ``RESIDUAL_SAMPLES``
    inputs ``h`` and ``closed_form`` with ``method="probe"``, ``probe_entries``, ``write`` (``"in_place"`` or
    ``"dense"``), ``samples`` (inputs given), ``residual_samples`` and the timings.

    Raises
    ------
    ProbeFailed
        When the probe does not verify, the map cannot be written, or the residual exceeds
        ``PROBE_RESIDUAL_TOL``; the student layer may then be partly written (the caller re-solves it).
    """
    t0 = time.perf_counter()
    h = h_train[:RESIDUAL_SAMPLES]
    maps = probe_teacher_map(teacher, l, verify_on=h if h.shape[0] else None)
    t_probe = time.perf_counter()
    write = scatter_affine(student, l, maps)
    y = teacher.layer_forward(l, h, pre_activation=True)
    res = float((student.layer_forward(l, h, pre_activation=True).double() - y.double()).norm()
                / y.double().norm().clamp_min(1e-300)) if h.shape[0] else 0.0
    if not res <= PROBE_RESIDUAL_TOL:
        raise ProbeFailed(f"the probed map of layer {l} misses the teacher on training inputs by {res:.2e} "
                          f"(> {PROBE_RESIDUAL_TOL:g})")
    info = {"method": "probe", "probe_entries": maps.nnz, "write": write, "samples": int(h_train.shape[0]),
            "residual_samples": int(h.shape[0]), "unknowns": student.in_dim(l) + 1, "underdetermined": False,
            "probe_seconds": t_probe - t0, "write_seconds": time.perf_counter() - t_probe}
    log.info("layer %d: probed the teacher's affine map (%d entries, written %s); residual %.2e on %d inputs",
             l, maps.nnz, write, res, h.shape[0])
    return {"loss_curve": [[0, res]], "final_rel_error": res, "steps": 1, "seconds": time.perf_counter() - t0,
            "solver": "closed_form", "samples": int(h_train.shape[0]), "closed_form": info}
