"""Choosing between the closed-form solve and SGD/Adam for one layer.

>>> resolve_solver("auto", None), resolve_solver("auto", "reason"), resolve_solver("adam", None)
('closed_form', 'adam', 'adam')
"""
from __future__ import annotations

from typing import Any, Optional

from symclone.students._base import POINTWISE

__all__ = ["dense_layer_obstacle", "resolve_solver"]


def dense_layer_obstacle(student: Any, l: int, max_dim: int) -> Optional[str]:
    """Why student layer ``l`` is not a solvable "dense map + fixed pointwise nonlinearity" (``None`` if it is)."""
    if student.activations[l - 1] not in POINTWISE:
        return f"layer {l}'s nonlinearity ({student.activations[l - 1]}) is not a fixed pointwise map"
    if student.in_dim(l) + 1 > max_dim:
        return f"layer {l}'s input size {student.in_dim(l)} exceeds closed_form_max_dim={max_dim}"
    return None


def resolve_solver(solver: str, why: Optional[str]) -> str:
    """Resolve ``"auto"`` (closed form unless ``why`` names an obstacle); reject an impossible
    ``"closed_form"`` request with a ``ValueError``."""
    if solver == "closed_form" and why:
        raise ValueError(f"solver: closed form does not apply: {why}; use solver=adam")
    if solver == "auto":
        return "adam" if why else "closed_form"
    return solver
