"""Configuration of a cloning run (frozen dataclass; dotted CLI overrides such as ``--distill.lr=3e-4``).

Examples
--------
>>> cfg = DistillConfig(mode="family", blocks=7)
>>> cfg.solver, cfg.blocks
('auto', 7)
>>> DistillConfig(mode="both")
Traceback (most recent call last):
...
ValueError: mode: expected 'function' or 'family', got 'both'
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..runtime import RuntimeOptions

__all__ = ["DistillConfig", "MODES", "SOLVERS"]

MODES = ("function", "family")
SOLVERS = ("auto", "closed_form", "adam", "sgd")


@dataclass(frozen=True)
class DistillConfig(RuntimeOptions):
    """How to clone a teacher into a student.

    ``seed``, ``device``, ``precision`` (numerics of the SGD/Adam training forward; closed-form solves and
    all evaluation/equivariance checks stay fp32/fp64) and ``progress`` come from
    :class:`~symclone.runtime.RuntimeOptions`.

    Attributes
    ----------
    mode : ``"function"`` (one teacher instance, orbit inputs) or ``"family"`` (teacher parameters
        redrawn from the init every step; needs the ``blocks`` student).
    layers : 1-based teacher layers to clone (empty: all), in order.
    solver : ``"closed_form"`` (ridge / SVD on pre-activations; linear block + pointwise nonlinearity
        only), ``"adam"`` (AdamW), ``"sgd"``, or ``"auto"`` (closed form where it applies, else Adam).
    blocks : ``B`` for a ``blocks`` student built by the run helpers (0: ``B = P``, exact).
    steps, batch_size, lr, weight_decay, grad_clip : optimiser settings per layer (paper: AdamW
        lr 1e-2, clip 1.0); the lr follows a cosine schedule to ``lr * 0.01``.
    kernels_per_step : teacher parameter draws per step (family mode; paper: 128).
    n_train, n_eval : base samples for training (each also as ``g·x`` when ``augment``) and held-out eval.
    augment : function mode uses orbit pairs ``(x, g·x)`` (``OrbitDataset``); False = plain inputs.
    ridge : Tikhonov weight of the closed-form solve, relative to the mean diagonal of ``XᵀX``.
    closed_form_max_dim : ``0`` (default): no fixed cap, a layer is solved in closed form when the solve fits
        the memory available (``MemAvailable``; the CUDA free memory on a GPU). A positive value also caps
        ``in_dim + 1``. ``solver="auto"`` falls back to Adam past either limit, with a logged warning and
        ``fallback_reason`` in the layer's metrics; ``solver="closed_form"`` raises a ``ValueError`` naming it.
    closed_form_oversample : function mode: a closed-form solve uses at least this many samples per unknown
        (``in_dim + 1``): when ``n_train`` (× 2 with ``augment``) is fewer, more base inputs are drawn from
        ``data`` (each with its orbit partner). The inputs then span the layer's input space and the fit of
        an affine teacher layer is exact; with fewer samples than unknowns the solve is underdetermined
        (logged; ``closed_form.underdetermined`` in the metrics). ``0`` keeps ``n_train``.
    target : fit ``"pre"``-activations, ``"post"`` (features), or ``"auto"`` (pre when the student's
        nonlinearity matches the teacher's pointwise one).
    equivariance_weight : weight of the penalty ``‖f(g·h) − g·f(h)‖² / ‖f(h)‖²`` (function mode, SGD paths).
    polish_steps : end-to-end Adam steps on all cloned layers' features after layer-by-layer cloning.
    stop_rel_error : stop a layer's optimiser early once the running relative error is below this (0: never).
    eval_kernels : fresh kernels for family-mode evaluation.
    eval_groups : extra group names to measure equivariance under (the teacher's group is always used).
    checkpoint_every : optimiser steps between checkpoints (also written at the end of each layer).
    log_every : steps between loss-curve points.
    equivariance_every : steps between points of the layer's equivariance-error curve during SGD/Adam
        cloning (``equivariance_curve`` in the metrics; 4 group elements, 8 training inputs, float32;
        0 disables it).
    data_root : folder holding the dataset files for ``data="fashion-mnist"``/``"mnist"`` (``--data-root``;
        ``None``: the Debian Fashion-MNIST folder, ``~/.cache/symclone/mnist`` for MNIST).
    download : let ``data="mnist"`` fetch missing files with torchvision (``--download``; off by default).
    """

    mode: str = "function"
    layers: tuple[int, ...] = ()
    solver: str = "auto"
    blocks: int = 0
    steps: int = 400
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    kernels_per_step: int = 16
    n_train: int = 1024
    n_eval: int = 128
    augment: bool = True
    ridge: float = 1e-7
    closed_form_max_dim: int = 0
    closed_form_oversample: float = 1.25
    target: str = "auto"
    equivariance_weight: float = 0.0
    polish_steps: int = 0
    stop_rel_error: float = 0.0
    eval_kernels: int = 8
    eval_groups: tuple[str, ...] = ()
    checkpoint_every: int = 200
    log_every: int = 10
    equivariance_every: int = 50
    data_root: Optional[str] = None
    download: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode: expected 'function' or 'family', got {self.mode!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver: expected one of {SOLVERS}, got {self.solver!r}")
        super().__post_init__()
        if self.target not in ("auto", "pre", "post"):
            raise ValueError(f"target: expected 'auto', 'pre' or 'post', got {self.target!r}")
        from ..validation import check_float, check_int
        for name in ("steps", "batch_size", "kernels_per_step", "n_train", "n_eval", "eval_kernels",
                     "checkpoint_every", "log_every"):
            check_int(getattr(self, name), name, minimum=1)
        for name in ("blocks", "polish_steps", "equivariance_every", "closed_form_max_dim"):
            check_int(getattr(self, name), name, minimum=0)
        check_float(self.lr, "lr", positive=True)
        for name in ("ridge", "weight_decay", "grad_clip", "closed_form_oversample", "equivariance_weight",
                     "stop_rel_error"):
            check_float(getattr(self, name), name, minimum=0.0)
        layers = tuple(self.layers)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in layers):
            raise ValueError(f"layers: expected layer numbers >= 1 (1 is the first layer), got {self.layers!r}")
