"""``distill(student, teacher, data, cfg)``: layer-by-layer cloning with metrics, checkpoints, resume.

For each layer ``l`` in ``cfg.layers`` (default: all) the student's layer ``l`` learns the teacher's
layer ``l`` from teacher features ``l-1`` (function or family mode), then it is evaluated on
held-out inputs (fresh kernels in family mode): ``feature_rel_error`` and the equivariance error
of the teacher, the student and an untrained student of the same architecture. An optional
end-to-end polish follows (function mode, ``polish_steps > 0``; :mod:`._polish`), after which every
layer is re-evaluated and ``metrics["polish"]`` records it. With ``out`` the run writes
``out/checkpoints/last.*`` (every ``checkpoint_every`` steps, after every layer and after the polish)
and ``out/metrics.json``; ``resume=True`` continues from the checkpoint (finished layers and a
finished polish are not redone).

Solver per layer (:func:`plan_layer`): the closed form where it applies and fits the available
memory; a function-mode closed form gets at least ``closed_form_oversample · (in_dim + 1)`` inputs
(more base inputs are drawn than ``n_train`` when needed). When ``solver="auto"`` falls back to
Adam the reason is logged as a warning and recorded as the layer's ``fallback_reason``; every layer
records its ``solver``.

Examples
--------
>>> import torch
>>> from symclone.registry import create_teacher, create_student
>>> t = create_teacher("cnn", channels=1, depth=1, size=6)
>>> s = create_student("mlp", teacher=t)
>>> m = distill(s, t, "gaussian", DistillConfig(n_train=64, n_eval=16, progress=False))
>>> m["layers"][0]["feature_rel_error"] < 1e-4
True
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from symclone.config import to_dict
from symclone.io import restore_optimizer, write_json

from ._config import DistillConfig
from ._evaluate import evaluate_layer
from ._family import family_loss_fn, family_obstacle, family_parameters, family_solver, fit_family_closed_form
from ._feeds import base_inputs, orbit_inputs, teacher_input
from ._function import fit_function_closed_form, function_probes, function_loss_fn, function_obstacle, use_pre_activation
from ._metrics import layer_equivariance_monitor
from ._polish import PHASE as POLISH_PHASE, polish
from ._solver import fallback_reason, resolve_solver
from ._state import load_state, save_state
from ..trainer import make_optimizer, train_steps

__all__ = ["distill", "check_compatible", "untrained_copy", "plan_layer", "LayerPlan"]

log = logging.getLogger(__name__)


def check_compatible(student: Any, teacher: Any) -> None:
    """Student and teacher must have the same feature shapes (input first)."""
    s = [tuple(x) for x in student.feature_shapes]
    t = [tuple(x) for x in teacher.feature_shapes]
    if s != t:
        raise ValueError(f"student: feature shapes {s} do not match the teacher's {t}; build the student "
                         "with create_student(name, teacher=teacher)")


def untrained_copy(student: Any) -> Any:
    """A freshly initialised student with the same constructor arguments (and the same stored kernels)."""
    from symclone.registry import create_student

    fresh = create_student(student.config["name"], **student.config["kwargs"])
    sd = fresh.state_dict()
    for k, v in student.state_dict().items():
        if k.endswith(".kernel") or k.endswith(".scale"):
            sd[k] = v.clone()
    fresh.load_state_dict(sd)
    return fresh.to(next(student.parameters()).device)


def _layers(cfg: DistillConfig, L: int) -> list[int]:
    layers = list(cfg.layers) or list(range(1, L + 1))
    for l in layers:
        if not 1 <= int(l) <= L:
            raise ValueError(f"layers: layer {l} is out of range 1..{L}")
    return [int(l) for l in layers]


@dataclass(frozen=True)
class LayerPlan:
    """How layer ``l`` is cloned: the ``solver``, why ``"auto"`` fell back to it (``fallback_reason``) and
    the network inputs ``x`` whose teacher features train it."""

    solver: str
    fallback_reason: Optional[str]
    x: torch.Tensor


def plan_layer(student: Any, teacher: Any, l: int, cfg: DistillConfig, data: Any, x_train: torch.Tensor,
               device: torch.device) -> LayerPlan:
    """Choose the solver of layer ``l`` (see the module docstring) and its training inputs."""
    if cfg.mode == "family":
        why = family_obstacle(student, teacher, l, cfg.closed_form_max_dim, device) \
            if getattr(student, "supports_params", False) else None
        solver = family_solver(student, teacher, l, cfg.solver, cfg.closed_form_max_dim, device)
        return LayerPlan(solver, fallback_reason(cfg.solver, solver, why, l, cfg.steps), x_train)
    need = 0
    if hasattr(student, "in_dim"):
        need = math.ceil(cfg.closed_form_oversample * (student.in_dim(l) + 1))
    n = max(int(x_train.shape[0]), need)
    why = function_obstacle(student, teacher, l, cfg.closed_form_max_dim, cfg.equivariance_weight, n, device)
    solver = resolve_solver(cfg.solver, why)
    reason = fallback_reason(cfg.solver, solver, why, l, cfg.steps)
    x = x_train
    if solver == "closed_form" and x_train.shape[0] < need and not function_probes(student, l, need, device):
        x = closed_form_inputs(teacher, data, cfg, need, device)
    return LayerPlan(solver, reason, x)


def closed_form_inputs(teacher: Any, data: Any, cfg: DistillConfig, need: int, device: torch.device
                       ) -> torch.Tensor:
    """At least ``need`` function-mode training inputs: ``ceil(need / 2)`` base inputs from ``data`` and
    their orbit partners (``augment``), else ``need`` base inputs; the first ``n_train`` base inputs are
    those of the other layers. Fewer when ``data`` holds fewer (logged: the solve is underdetermined)."""
    copies = 2 if cfg.augment else 1
    x_base = base_inputs(teacher, data, math.ceil(need / copies), cfg.seed, train=True, root=cfg.data_root,
                         download=cfg.download)
    x = orbit_inputs(teacher, x_base, cfg.seed) if cfg.augment else x_base
    if x.shape[0] < need:
        log.warning("closed form: the data give %d training inputs, fewer than the %d wanted (%g per unknown); "
                    "the solve may be underdetermined", x.shape[0], need, cfg.closed_form_oversample)
    else:
        log.info("closed form: %d training inputs (%g per unknown; n_train=%d gives fewer)", x.shape[0],
                 cfg.closed_form_oversample, cfg.n_train)
    return x.to(device)


def _fit_layer(student, teacher, l, cfg, h_train, out, run_state, resume_meta, resume_tensors, data, ctx=None,
               solver: str = "auto") -> dict:
    use_pre = use_pre_activation(student, l, cfg.target)
    if cfg.mode == "function":
        if solver == "closed_form":
            return fit_function_closed_form(student, teacher, l, h_train, cfg.ridge)
        with torch.no_grad():
            target = torch.cat([teacher.layer_forward(l, h_train[i:i + 512], pre_activation=use_pre)
                                for i in range(0, h_train.shape[0], 512)])
        params = student.layer_parameters(l)
        loss_fn = function_loss_fn(student, teacher, l, h_train, target, use_pre, cfg.batch_size, cfg.seed,
                                   cfg.equivariance_weight, ctx=_multi(ctx))
    else:
        if solver == "closed_form":
            return fit_family_closed_form(student, teacher, l, h_train)
        params = family_parameters(student, l)
        fresh = data is None or data == "gaussian"
        loss_fn = family_loss_fn(student, teacher, l, h_train, use_pre, cfg.batch_size, cfg.kernels_per_step,
                                 cfg.seed, fresh_gaussian=fresh and teacher.reps[0].is_image,
                                 ctx=_multi(ctx))
    opt = make_optimizer(params, solver, cfg.lr, cfg.weight_decay)
    start, curve, eq_curve = 0, [], []
    if resume_meta is not None and resume_meta.get("current", {}).get("layer") == l and "optimizer" in resume_meta:
        restore_optimizer(opt, resume_tensors, resume_meta["optimizer"])
        start, curve = int(resume_meta["current"]["step"]), list(resume_meta["current"]["loss_curve"])
        eq_curve = list(resume_meta["current"].get("equivariance_curve", []))
        log.info("resuming layer %d at step %d", l, start)

    def on_checkpoint(step, opt_, curve_):
        if out is not None:
            run_state["current"] = {"layer": l, "step": step, "loss_curve": curve_, "equivariance_curve": eq_curve}
            save_state(out, student, run_state, opt_)

    r = train_steps(params, loss_fn, cfg.steps, cfg.lr, kind=solver, weight_decay=cfg.weight_decay,
                 grad_clip=cfg.grad_clip, start_step=start, optimizer=opt, loss_curve=curve,
                 log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every, on_checkpoint=on_checkpoint,
                 stop_rel_error=cfg.stop_rel_error, progress=cfg.progress, desc=f"{cfg.mode} layer {l}",
                 ctx=_multi(ctx), precision=cfg.precision, monitor=layer_equivariance_monitor(student, teacher, l, h_train, cfg),
                 monitor_every=cfg.equivariance_every, monitor_curve=eq_curve)
    r.pop("optimizer")
    r["equivariance_curve"] = r.pop("monitor_curve")
    r["solver"] = solver
    r["target"] = "pre_activation" if use_pre else "feature"
    return r


def _multi(ctx: Any) -> Any:
    """The distributed context when it spans several processes, else ``None`` (plain single-process code)."""
    return ctx if ctx is not None and ctx.distributed else None


def _main(ctx: Any) -> bool:
    return ctx is None or ctx.is_main


def distill(student: Any, teacher: Any, data: Any = None, cfg: Optional[DistillConfig] = None,
            out: Optional[str | Path] = None, resume: bool = False, ctx: Any = None) -> dict:
    """Clone ``teacher`` into ``student`` (in place) and return the metrics dict.

    Parameters
    ----------
    student, teacher : a registered student built for this teacher, and the teacher.
    data : ``None``/``"gaussian"`` (i.i.d. N(0, 1) inputs), ``"fashion-mnist"``, a ``Dataset`` or a tensor.
    cfg : :class:`DistillConfig`.
    out : run directory for checkpoints and ``metrics.json`` (optional).
    resume : continue from ``out/checkpoints/last`` (finished layers are skipped).
    ctx : a :class:`symclone.distributed.DistributedContext` (``torchrun``): SGD/Adam steps run under DDP
        with each global batch sharded over the ranks; only rank 0 writes; its device replaces ``cfg.device``.

    Returns
    -------
    dict with ``layers`` (per layer: ``feature_rel_error``, ``equivariance_error`` {teacher, student,
    untrained}, ``seconds``, ``loss_curve``, ...), ``mode``, ``config`` and ``seconds``.
    """
    cfg = cfg or DistillConfig()
    check_compatible(student, teacher)
    if cfg.mode == "family" and not getattr(student, "supports_params", False):
        raise ValueError(f"student: family cloning needs the kernel-conditioned 'blocks' student, "
                         f"got {student.config['name']!r}")
    layers = _layers(cfg, teacher.num_layers)
    from symclone.runtime import resolve_device

    device = ctx.device if ctx is not None else resolve_device(cfg.device)
    student.to(device)
    teacher.to(device)
    if _multi(ctx) is not None:  # every rank starts from rank 0's teacher and student
        ctx.broadcast_module(teacher)
        ctx.broadcast_module(student)
    teacher.eval()
    grads = [p.requires_grad for p in teacher.parameters()]
    for p in teacher.parameters():
        p.requires_grad_(False)
    try:
        return _distill(student, teacher, data, cfg, out, resume, layers, device, ctx)
    finally:
        for p, g in zip(teacher.parameters(), grads):
            p.requires_grad_(g)


def _distill(student, teacher, data, cfg, out, resume, layers, device, ctx=None) -> dict:
    out = Path(out) if out is not None else None
    t_start = time.perf_counter()
    src = dict(root=cfg.data_root, download=cfg.download)
    x_base = base_inputs(teacher, data, cfg.n_train, cfg.seed, train=True, **src).to(device)
    x_eval = base_inputs(teacher, data, cfg.n_eval, cfg.seed, train=False, **src).to(device)
    x_train = orbit_inputs(teacher, x_base.cpu(), cfg.seed).to(device) \
        if (cfg.mode == "function" and cfg.augment) else x_base
    untrained = untrained_copy(student)
    run_state: dict = {"mode": cfg.mode, "done": [], "layers": {}, "config": to_dict(cfg)}
    resume_meta, resume_tensors = None, None
    if resume:
        if out is None:
            raise ValueError("resume: needs the run directory (out=...)")
        loaded = load_state(out, student)
        if loaded is not None:
            resume_meta, resume_tensors = loaded
            run_state.update({k: resume_meta[k] for k in ("done", "layers", "polish") if k in resume_meta})
            log.info("resumed from %s: layers done %s", out, run_state["done"])
    for l in layers:
        if l in run_state["done"]:
            continue
        plan = plan_layer(student, teacher, l, cfg, data, x_train, device)
        h_train = teacher_input(teacher, l, plan.x)
        student.train()
        fit = _fit_layer(student, teacher, l, cfg, h_train, out, run_state, resume_meta, resume_tensors, data, ctx,
                         solver=plan.solver)
        del h_train
        resume_meta = None
        student.eval()
        t_eval = time.perf_counter()
        rec = evaluate_layer(student, teacher, untrained, l, x_eval, cfg)
        rec.update({"layer": l, "mode": cfg.mode, "solver": fit["solver"], "seconds": fit["seconds"],
                    "steps": fit["steps"], "train_rel_error": fit["final_rel_error"],
                    "loss_curve": fit["loss_curve"], "eval_seconds": time.perf_counter() - t_eval})
        if plan.fallback_reason:
            rec["fallback_reason"] = plan.fallback_reason
        for key in ("singular_values", "target", "stopped_early", "equivariance_curve", "closed_form"):
            if key in fit:
                rec[key] = fit[key]
        run_state["layers"][str(l)] = rec
        run_state["done"].append(l)
        run_state.pop("current", None)
        run_state.pop("polish", None)  # a newly cloned layer invalidates an earlier polish
        log.info("layer %d: rel error %.3e, equivariance error student %s (%.1fs)", l,
                 rec["feature_rel_error"], rec["equivariance_error"]["student"], rec["seconds"])
        if out is not None and _main(ctx):
            save_state(out, student, run_state)
            _write_metrics(out, run_state, cfg, t_start)
        if ctx is not None:
            ctx.barrier()
    if cfg.polish_steps > 0 and cfg.mode == "function":
        if "polish" in run_state:
            log.info("polish already done (%d steps); not polishing again", run_state["polish"]["steps"])
        else:
            _run_polish(student, teacher, untrained, layers, x_train, x_eval, cfg, out, run_state,
                        resume_meta, resume_tensors, ctx)
    metrics = _metrics(run_state, cfg, t_start)
    if out is not None and _main(ctx):
        write_json(out / "metrics.json", metrics)
    return metrics


def _run_polish(student, teacher, untrained, layers, x_train, x_eval, cfg, out, run_state, resume_meta,
                resume_tensors, ctx) -> None:
    """Polish, re-evaluate every cloned layer, record ``run_state["polish"]`` and checkpoint."""
    if (resume_meta or {}).get("current", {}).get("phase") != POLISH_PHASE:
        resume_meta = resume_tensors = None
    before = {str(l): run_state["layers"][str(l)]["feature_rel_error"] for l in layers}
    student.train()
    rec = polish(student, teacher, layers, x_train, cfg, out=out, run_state=run_state, resume_meta=resume_meta,
                 resume_tensors=resume_tensors, write=_main(ctx))
    student.eval()
    if not rec["reverted"]:  # a rolled-back polish restored the evaluated parameters bit for bit
        for l in layers:
            run_state["layers"][str(l)].update(evaluate_layer(student, teacher, untrained, l, x_eval, cfg))
    rec["feature_rel_error_before"] = before
    rec["feature_rel_error_after"] = {str(l): run_state["layers"][str(l)]["feature_rel_error"] for l in layers}
    run_state["polish"] = rec
    run_state.pop("current", None)
    log.info("polish: %d steps, objective %.3e -> %.3e%s", rec["steps"], rec["objective_before"],
             rec["objective_after"], " (reverted)" if rec["reverted"] else "")
    if out is not None and _main(ctx):
        save_state(out, student, run_state)
    if ctx is not None:
        ctx.barrier()


def _metrics(run_state: dict, cfg: DistillConfig, t_start: float) -> dict:
    recs = [copy.deepcopy(run_state["layers"][str(l)]) for l in sorted(int(k) for k in run_state["layers"])]
    out = {"mode": cfg.mode, "layers": recs, "config": to_dict(cfg), "seconds": time.perf_counter() - t_start}
    if "polish" in run_state:
        out["polish"] = copy.deepcopy(run_state["polish"])
    return out


def _write_metrics(out: Path, run_state: dict, cfg: DistillConfig, t_start: float) -> None:
    write_json(out / "metrics.json", _metrics(run_state, cfg, t_start))
