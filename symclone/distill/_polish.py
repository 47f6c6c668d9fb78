"""End-to-end polish of a layer-by-layer clone, resumable and never worse than its start.

After every layer is cloned, AdamW (lr ``cfg.lr / 10``, cosine decay, ``cfg.polish_steps`` steps) lowers

.. math::  \\mathcal L = \\frac1{|\\mathcal L_c|} \\sum_{l \\in \\mathcal L_c}
           \\frac{\\lVert f^{S}_{\\le l}(x) - f^{T}_{\\le l}(x) \\rVert^2}{\\lVert f^{T}_{\\le l}(x) \\rVert^2}

over the cloned layers' *chained* student features (errors of earlier layers propagate, unlike the
layer-wise fits). :math:`\\mathcal L` is measured on a fixed subset of the training inputs before and after;
if polishing raised it (an exact closed-form clone is only perturbed by Adam's first steps) the start
parameters are restored and the record says ``reverted``. Checkpoints every ``cfg.checkpoint_every``
steps store the optimiser and the start parameters, so ``--resume`` continues an interrupted polish.

Examples
--------
>>> import torch
>>> from symclone.registry import create_teacher, create_student
>>> from symclone.distill import DistillConfig, distill
>>> t = create_teacher("cnn", channels=1, depth=1, size=5); s = create_student("mlp", teacher=t)
>>> cfg = DistillConfig(n_train=64, n_eval=8, progress=False, polish_steps=5)
>>> p = distill(s, t, None, cfg)["polish"]   # closed form is exact: the polish is rolled back
>>> p["reverted"], p["objective_after"] <= p["objective_before"]
(True, True)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import torch

from symclone.io import restore_optimizer

from ._config import DistillConfig
from ._state import save_state
from ..trainer import make_optimizer, train_steps

__all__ = ["polish", "polish_parameters", "PHASE"]

log = logging.getLogger(__name__)

PHASE = "polish"  # run_state["current"]["phase"] of a checkpoint taken during the polish
_START = "polish_start/"  # checkpoint tensors: the parameters before the polish (for the roll-back)
_CHECK = 512  # training inputs on which the objective is compared before / after


def polish_parameters(student: Any, layers: list[int]) -> list[torch.nn.Parameter]:
    """The trainable parameters of the cloned layers, each once (students may share modules)."""
    seen, out = set(), []
    for l in layers:
        for p in student.layer_parameters(l):
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def _objective(student: Any, layers: list[int], x: torch.Tensor, targets: list[torch.Tensor]) -> float:
    """Full-batch :math:`\\mathcal L` (float64 accumulation) on ``x`` with the teacher features ``targets``."""
    num = [0.0] * len(layers)
    with torch.no_grad():
        for i in range(0, x.shape[0], 256):
            feats = student.forward_features(x[i:i + 256])
            for j, l in enumerate(layers):
                num[j] += float(((feats[l - 1].double() - targets[j][i:i + 256].double()) ** 2).sum())
    den = [max(float((t.double() ** 2).sum()), 1e-24) for t in targets]
    return sum(n / d for n, d in zip(num, den)) / len(layers)


def polish(student: Any, teacher: Any, layers: list[int], x_train: torch.Tensor, cfg: DistillConfig,
           out: Optional[Path] = None, run_state: Optional[dict] = None, resume_meta: Optional[dict] = None,
           resume_tensors: Optional[dict] = None, write: bool = True) -> dict:
    """Polish ``student`` in place; return ``{steps, seconds, loss_curve, final_rel_error,
    objective_before, objective_polished, objective_after, reverted}`` (``objective_after`` is the kept
    parameters' :math:`\\mathcal L`: ``objective_before`` when ``reverted``).

    ``out``/``run_state``: checkpoint ``out/checkpoints/last`` every ``cfg.checkpoint_every`` steps
    (``run_state["current"] = {"phase": "polish", ...}``; only when ``write``). ``resume_meta``/
    ``resume_tensors``: a loaded checkpoint taken during the polish, continued from its step.
    """
    params = polish_parameters(student, layers)
    with torch.no_grad():
        targets = [torch.cat([teacher.forward_features(x_train[i:i + 512])[l - 1]
                              for i in range(0, x_train.shape[0], 512)]) for l in layers]
    n_check = min(_CHECK, x_train.shape[0])
    opt = make_optimizer(params, "adam", cfg.lr * 0.1, cfg.weight_decay)
    cur = (resume_meta or {}).get("current") or {}
    start, curve = 0, []
    if cur.get("phase") == PHASE and resume_tensors is not None:
        restore_optimizer(opt, resume_tensors, resume_meta["optimizer"])
        start, curve = int(cur["step"]), list(cur["loss_curve"])
        before = float(cur["objective_before"])
        start_params = [resume_tensors[f"{_START}{i}"].to(p.device) for i, p in enumerate(params)]
        log.info("resuming the polish at step %d", start)
    else:
        before = _objective(student, layers, x_train[:n_check], [t[:n_check] for t in targets])
        start_params = [p.detach().clone() for p in params]

    def loss_fn(step: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(cfg.seed * 7 + 999_983 + step)
        idx = torch.randint(0, x_train.shape[0], (min(cfg.batch_size, x_train.shape[0]),), generator=gen)
        idx = idx.to(x_train.device)
        feats = student.forward_features(x_train[idx])
        return sum(((feats[l - 1] - t[idx]) ** 2).sum() / (t[idx] ** 2).sum().clamp_min(1e-12)
                   for l, t in zip(layers, targets)) / len(layers)

    def on_checkpoint(step: int, opt_: torch.optim.Optimizer, curve_: list) -> None:
        if out is None or run_state is None or not write:
            return
        run_state["current"] = {"phase": PHASE, "step": step, "loss_curve": curve_, "objective_before": before}
        save_state(out, student, run_state, opt_, extra={f"{_START}{i}": p for i, p in enumerate(start_params)})

    r = train_steps(params, loss_fn, cfg.polish_steps, cfg.lr * 0.1, weight_decay=cfg.weight_decay,
                 grad_clip=cfg.grad_clip, start_step=start, optimizer=opt, loss_curve=curve,
                 log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every, on_checkpoint=on_checkpoint,
                 progress=cfg.progress, desc="polish", precision=cfg.precision)
    polished = _objective(student, layers, x_train[:n_check], [t[:n_check] for t in targets])
    reverted = polished > before
    if reverted:
        with torch.no_grad():
            for p, p0 in zip(params, start_params):
                p.copy_(p0)
        log.info("polish raised the objective (%.3e -> %.3e); restored the layer-wise clone", before, polished)
    return {"steps": r["steps"], "seconds": r["seconds"], "loss_curve": r["loss_curve"],
            "final_rel_error": r["final_rel_error"], "objective_before": before, "objective_polished": polished,
            "objective_after": before if reverted else polished, "reverted": bool(reverted)}
