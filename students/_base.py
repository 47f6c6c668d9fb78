"""Shared machinery of the students: feature API, activations, checkpoints.

A student mirrors a teacher's feature API (``forward_features``, ``reps``, ``feature_shapes``,
``num_layers``, ``layer_forward``) so that distillation, symmetrization and analysis treat
teachers and students alike. Student layer ``l`` maps feature ``l-1`` to feature ``l``:

    f_l(h) = σ_l(A_l(h))          A_l: the student's own (group-agnostic) map, σ_l the teacher's
                                   pointwise nonlinearity of layer l (``"relu"``/``"identity"``)

Examples
--------
>>> import torch
>>> infer_activations_from(torch.tensor([-1., 2.]), torch.tensor([0., 2.]))
'relu'
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from symclone.groups import Rep, parse_rep
from symclone.io import CheckpointError, load_checkpoint, save_checkpoint
from symclone.layered import LayeredModule

__all__ = ["StudentBase", "ACTIVATIONS", "apply_activation", "infer_activations", "infer_activations_from",
           "save_student", "load_student", "teacher_layout", "POINTWISE"]

log = logging.getLogger(__name__)

#: pointwise nonlinearities a student can apply after its linear map
ACTIVATIONS = ("relu", "identity", "silu", "tanh", "gelu")
#: activations for which a closed-form fit of the pre-activation recovers the layer exactly
POINTWISE = ("relu", "identity")


def apply_activation(name: str, z: torch.Tensor) -> torch.Tensor:
    """``σ(z)`` elementwise for ``name`` in :data:`ACTIVATIONS`; ``ValueError`` for any other name.

    Examples
    --------
    >>> apply_activation("relu", torch.tensor([-1.0, 2.0])).tolist()
    [0.0, 2.0]
    """
    if name == "relu":
        return torch.relu(z)
    if name == "identity":
        return z
    if name == "silu":
        return torch.nn.functional.silu(z)
    if name == "tanh":
        return torch.tanh(z)
    if name == "gelu":
        return torch.nn.functional.gelu(z)
    raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {name!r}")


def infer_activations_from(pre: torch.Tensor, post: torch.Tensor, rtol: float = 1e-5) -> str:
    """Name the pointwise map ``σ`` with ``post = σ(pre)`` (``"relu"``, ``"identity"``) or ``"other"``."""
    scale = float(post.abs().max()) or 1.0
    for name in ("identity", "relu"):
        if pre.shape == post.shape and float((apply_activation(name, pre) - post).abs().max()) <= rtol * scale:
            return name
    return "other"


@torch.no_grad()
def infer_activations(teacher: Any, seed: int = 0) -> list[str]:
    """Per teacher layer, the pointwise nonlinearity between ``pre_activation`` and the feature
    (probed on a random input), or ``"silu"`` when the teacher's nonlinearity is not pointwise
    (e.g. e3nn gates; the student then uses SiLU and cannot be fitted in closed form)."""
    gen = torch.Generator().manual_seed(seed)
    ref = next(teacher.parameters(), torch.zeros(()))
    h = torch.randn(2, *teacher.feature_shapes[0], generator=gen).to(ref)
    out = []
    for l in range(1, teacher.num_layers + 1):
        post = teacher.layer_forward(l, h)
        try:
            pre = teacher.layer_forward(l, h, pre_activation=True)
            name = infer_activations_from(pre, post)
        except (TypeError, NotImplementedError, ValueError):
            name = "other"
        out.append("silu" if name == "other" else name)
        h = post
    return out


def teacher_layout(teacher: Any) -> dict:
    """The JSON-able feature layout of a teacher: ``feature_shapes``, ``reps``, ``activations``."""
    return {"feature_shapes": [list(s) for s in teacher.feature_shapes],
            "reps": [str(r) for r in teacher.reps],
            "activations": infer_activations(teacher)}


class StudentBase(LayeredModule):
    """Base class of all students: ``f_l(h) = σ_l(A_l(h))`` (see the module docstring).

    Subclasses call ``_init_layout`` (which sets ``feature_shapes``, ``reps``, ``activations``),
    build one module per layer in ``self.layers``, implement ``_pre(l, h, params)`` (the map ``A_l``
    before the nonlinearity, on inputs with any leading batch dims) and fill ``self.config``
    (``{"name", "kwargs"}``, what :func:`save_student` records). Layer indices and input shapes are
    checked by :class:`~symclone.layered.LayeredModule`.
    """

    config: dict
    supports_params: bool = False

    def _init_layout(self, feature_shapes: Optional[Sequence[Sequence[int]]], reps: Optional[Sequence[str]],
                     activations: Optional[Sequence[str]], teacher: Any = None) -> None:
        """Set ``feature_shapes``, ``reps``, ``activations``, from ``teacher`` when one is given."""
        if teacher is not None:
            lay = teacher_layout(teacher)
            feature_shapes, reps, activations = lay["feature_shapes"], lay["reps"], lay["activations"]
        if feature_shapes is None or reps is None:
            raise ValueError("feature_shapes, reps: give both, or teacher=")
        if len(feature_shapes) < 2:
            raise ValueError(f"feature_shapes: expected L+1 >= 2 shapes (input first), got {len(feature_shapes)}")
        if len(reps) != len(feature_shapes):
            raise ValueError(f"reps: expected {len(feature_shapes)} reps (one per feature, input first), "
                             f"got {len(reps)}")
        self.feature_shapes = [tuple(int(d) for d in s) for s in feature_shapes]
        self.reps: list[Rep] = [parse_rep(r) for r in reps]
        acts = list(activations) if activations is not None else ["relu"] * (len(feature_shapes) - 1)
        if len(acts) != len(feature_shapes) - 1:
            raise ValueError(f"activations: expected {len(feature_shapes) - 1} names, got {len(acts)}")
        for a in acts:
            apply_activation(a, torch.zeros(1))
        self.activations = acts

    def in_dim(self, l: int) -> int:
        """The flattened size ``prod(feature_shapes[l-1])`` of layer ``l``'s input."""
        return int(torch.tensor(self.feature_shapes[l - 1]).prod())

    def out_dim(self, l: int) -> int:
        """The flattened size ``prod(feature_shapes[l])`` of layer ``l``'s output."""
        return int(torch.tensor(self.feature_shapes[l]).prod())

    def layer_parameters(self, l: int) -> list[nn.Parameter]:
        """The trainable parameters of layer ``l`` (for layer-by-layer cloning)."""
        return list(self.layers[self._check_layer(l) - 1].parameters())

    def _pre(self, l: int, h: torch.Tensor, params: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def layer_forward(self, l: int, h: torch.Tensor, params: Optional[torch.Tensor] = None,
                      pre_activation: bool = False) -> torch.Tensor:
        """Student layer ``l`` applied to feature ``l-1``: ``h (..., B, *feature_shapes[l-1])`` ->
        ``(..., B, *feature_shapes[l])`` (``σ_l`` skipped if ``pre_activation``).

        ``params``: teacher parameters ``(P_l,)`` or ``(K, P_l)`` for kernel-conditioned students
        (``supports_params``; output ``(K, B, ...)``); ``ValueError`` for the others."""
        self._check_layer(l)
        self._check_feature(l, h, lead_dims=None)
        if params is not None and not self.supports_params:
            raise ValueError(f"params: student {self.config['name']!r} is not kernel-conditioned; "
                             "only the 'blocks' student takes teacher parameters")
        z = self._pre(l, h, params)
        return z if pre_activation else apply_activation(self.activations[l - 1], z)


def save_student(student: StudentBase, stem: str | Path) -> None:
    """Write ``<stem>.safetensors`` (state dict) + ``<stem>.json`` (name and constructor kwargs)."""
    meta = {"format": "symclone-student/1", "name": student.config["name"], "kwargs": student.config["kwargs"]}
    save_checkpoint(stem, student.state_dict(), meta)


def load_student(stem: str | Path, map_location: str = "cpu") -> StudentBase:
    """Rebuild a student saved by :func:`save_student`; :class:`CheckpointError` if missing, corrupt or
    not matching its recorded architecture."""
    from symclone.registry import create_student

    tensors, meta = load_checkpoint(stem, map_location)
    if meta.get("format") != "symclone-student/1" or "name" not in meta:
        raise CheckpointError(f"checkpoint: {stem}.json is not a symclone student checkpoint")
    student = create_student(meta["name"], **meta.get("kwargs", {}))
    try:
        student.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint: {stem} does not match student {meta['name']!r}: {err}") from None
    return student.to(map_location)
