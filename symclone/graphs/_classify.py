"""EXP-classify: train a graph classifier (SAT vs UNSAT) on an 800/200/200 split of EXP.

The split is drawn at the level of the 600 pairs (seeded): 400 / 100 / 100 pairs, both graphs of
a pair in the same part, so the test set holds pairs never seen in training. Training: Adam,
cross entropy (+ the sampler's auxiliary entropy loss for ``learned``), cosine learning-rate decay over
``epochs`` (``cosine``, off by default), ``k_train`` samples per
graph in training (4: CPU budget; LPS uses 10) and ``k`` (10) in evaluation; the model with the best validation accuracy (ties: the lower validation cross entropy) is tested, on the test
graphs as stored and on a random relabelling of them (`test_acc_relabeled`: a non-invariant
model that exploits the node order of the files drops to chance there). The budget is
``epochs``: nothing in the schedule or the stopping rule reads a clock, so a seed gives the same model
on any machine (CPU seconds are measured and reported). ``max_seconds`` is an optional CPU-time cap
(``None`` by default) that stops a run early, reported as ``stopped_by_time_budget``; a capped run depends
on the machine's speed. The state (weights, optimizer, history)
is checkpointed to ``out/classify_<model>`` after every epoch; ``resume`` continues from it.
With ``ema > 0`` validation, model selection and testing use an exponential moving average of the
weights, ``θ̄ ← ema · θ̄ + (1 − ema) · θ`` after every optimiser step (Polyak averaging).

Size generalisation. Every EXP graph is a disjoint union: one of 6 "core" graphs (3 core pairs of 16,
24 or 32 nodes, which decide SAT / UNSAT) and 1–2 planar components shared by both graphs of a pair
(the rest of the 32–64 nodes). The backbone is an MLP tied to positions; the learned sampler's global
sort interleaves the nodes of all components by colour, so where the core lands depends on the size of
the rest, and sizes rare in training fail (EXP graph 40: 16 + 16 nodes, the smallest; one training
pair of that size). The default model therefore uses ``ModelConfig(layout="components")``: each
connected component is one contiguous block, smallest first
(:func:`~symclone.graphs._samplers.component_offsets`), exactly as S_n-invariant (in distribution) as
before. Chosen on a size-extrapolation check on train/val only (train on graphs of > 35 nodes, test on
the train + val graphs of ≤ 35 nodes; fixed orderings as a cheap proxy): 72–81 % with the global sort,
99.5 % with component blocks; LayerNorm after the first layer or hiding the mask channel: 75–80 %.
Headline (:func:`exp_classify_headline`, 20 epochs): 100 % test accuracy on seeds 0, 1, 2. What is
left: a core that is *not* the smallest component still moves with the size of the smaller ones
(seed 0 is at chance on test graph 14, core 32 after a 23-node planar part, over repeated draws).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..progress import track
from ..trainer import TrainingCheckpoint
from ..schedules import cosine_lr
from ._batch import to_dense
from ._embed import ModelConfig, build_model, prepare_inputs
from ._io import load_exp
from ._protocols import relabel

__all__ = ["ClassifyConfig", "exp_split", "exp_classify", "exp_classify_headline", "HEADLINE_EPOCHS"]

#: epochs of the headline protocol, fixed before any test accuracy of the component layout was seen (the CPU
#: budget of 3 seeds on a shared 2-core machine). Without ``cosine`` the schedule does not read ``epochs``:
#: the first 20 epochs are those of a 60-epoch run, and ``resume`` with more epochs extends a finished run.
HEADLINE_EPOCHS = 20


@dataclass(frozen=True)
class ClassifyConfig:
    """Optimisation settings of EXP-classify."""

    epochs: int = 60
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch: int = 32
    seed: int = 0
    split_seed: int = 0
    max_seconds: Optional[float] = None  # optional CPU-time cap (stops early; machine-dependent)
    k_train: int = 4                    # 2 / 4 measured for learned: 99.0 % / 99.5 % test (val 98 % / 100 %)
    cosine: bool = False                # lr · ½(1 + cos(π · epoch / epochs)); measured: no gain (98.5 %)
    ema: float = 0.0                    # > 0: validate/test an exponential moving average of the weights
    # layout="components": the learned sampler lays out each connected component as one block, smallest
    # first (size generalisation; see symclone.graphs._samplers.component_offsets)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(hidden=(256, 256), layout="components"))


def exp_split(num_pairs: int = 600, seed: int = 0, sizes=(400, 100, 100)) -> tuple[torch.Tensor, ...]:
    """Graph indices of the train / val / test parts (pair-level split, both graphs of a pair together).

    Examples
    --------
    >>> [len(s) for s in exp_split()]
    [800, 200, 200]
    """
    if sum(sizes) != num_pairs:
        raise ValueError(f"sizes: expected parts summing to {num_pairs} pairs, got {sizes}")
    perm = torch.randperm(num_pairs, generator=torch.Generator().manual_seed(seed))
    parts, s = [], 0
    for n in sizes:
        p = perm[s:s + n]
        parts.append(torch.stack([2 * p, 2 * p + 1], 1).flatten())
        s += n
    return tuple(parts)


@torch.no_grad()
def _evaluate(name, model, x, y, batch, gen) -> tuple[float, float]:
    """``(accuracy, mean cross entropy)`` of the (symmetrized) logits on ``x``."""
    model.eval()
    f = model.model if name == "canonical" else model
    correct, nll = 0, 0.0
    for s in range(0, len(x), batch):
        xb, yb = x[s:s + batch], y[s:s + batch]
        out = f(xb, generator=gen) if name in ("uniform", "learned") else f(xb)
        correct += int((out.argmax(-1) == yb).sum())
        nll += float(F.cross_entropy(out.float(), yb, reduction="sum"))
    return correct / len(x), nll / len(x)


def _accuracy(name, model, x, y, batch, gen) -> float:
    return _evaluate(name, model, x, y, batch, gen)[0]


def exp_classify(name: str, cfg: ClassifyConfig = ClassifyConfig(), root=None, out: Optional[Path] = None,
                 resume: bool = False, progress: bool = True, limit: Optional[int] = None) -> dict:
    """Train model ``name`` on EXP-classify; returns accuracies, epochs run and seconds.

    ``limit``: use only the first ``limit`` pairs (split 4 : 1 : 1 like the full 400 / 100 / 100),
    for smoke tests."""
    graphs, labels = load_exp(root)
    sizes = (400, 100, 100)
    if limit is not None:
        if not 6 <= int(limit) <= len(graphs) // 2:
            raise ValueError(f"limit: expected 6 <= limit <= {len(graphs) // 2} pairs, got {limit}")
        graphs, labels = graphs[:2 * limit], labels[:2 * limit]
        sizes = (limit - 2 * (limit // 6), limit // 6, limit // 6)
    t_prep = time.process_time()
    x = prepare_inputs(name, to_dense(graphs, 64))  # canonical: the forms of all graphs, computed once
    t_prep = time.process_time() - t_prep
    y = torch.as_tensor(labels)
    tr, va, te = exp_split(len(graphs) // 2, cfg.split_seed, sizes)
    model = build_model(name, 64, 1, cfg.model, cfg.seed, out_dim=2)
    train_f = model.model if name == "canonical" else model
    if name in ("uniform", "learned"):
        model.k = int(cfg.k_train)  # samples per graph in training (evaluation: cfg.model.k)
    if not 0.0 <= cfg.ema < 1.0:
        raise ValueError(f"ema: expected a decay in [0, 1), got {cfg.ema}")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    evaluated = model if ema is None else ema.module
    hist: list[dict] = []
    best = {"val": -1.0, "nll": math.inf, "state": None, "epoch": -1}
    saved = None if out is None else TrainingCheckpoint(Path(out) / f"classify_{name}")
    modules = {"model": model} if ema is None else {"model": model, "ema": ema}
    seconds = 0.0  # CPU seconds of this process (the machine is shared: wall time is not comparable)
    restored = saved.load(modules, opt) if (resume and saved is not None) else None
    if restored is not None:
        meta, extra = restored
        best["state"] = {k[5:]: v for k, v in extra.items() if k.startswith("best.")} or None
        hist, best["val"], best["epoch"], seconds = meta["history"], meta["best_val"], meta["best_epoch"], \
            meta["seconds"]
        best["nll"] = float(meta.get("best_val_nll", math.inf))
    stopped = False
    for epoch in track(range(len(hist), cfg.epochs), f"classify:{name}", enabled=progress):
        if cfg.max_seconds is not None and seconds > cfg.max_seconds:
            stopped = True
            break
        t0 = time.process_time()
        # every epoch reseeds its batches, sampler draws and validation draws: resume == uninterrupted
        torch.manual_seed(cfg.seed + 2 + 1000 * epoch)
        gen = torch.Generator().manual_seed(cfg.seed + 1 + 1000 * epoch)
        if cfg.cosine:
            for grp in opt.param_groups:
                grp["lr"] = cosine_lr(cfg.lr, epoch, cfg.epochs, floor=0.0)
        model.train()
        perm = tr[torch.randperm(len(tr))]
        total = 0.0
        for s in range(0, len(perm), cfg.batch):
            idx = perm[s:s + cfg.batch]
            if name in ("uniform", "learned"):
                logits, aux = model.forward_with_aux(x[idx])
            else:
                logits, aux = train_f(x[idx]), 0.0
            loss = F.cross_entropy(logits, y[idx]) + aux
            opt.zero_grad()
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            total += float(loss.detach()) * len(idx)
        val, val_nll = _evaluate(name, evaluated, x[va], y[va], 256, gen)
        seconds += time.process_time() - t0
        hist.append({"epoch": epoch, "loss": total / len(tr), "val_acc": val, "val_nll": val_nll,
                     "seconds": seconds})
        if (val, -val_nll) > (best["val"], -best["nll"]):   # accuracy first, ties: lower validation loss
            best = {"val": val, "nll": val_nll, "state": copy.deepcopy(evaluated.state_dict()), "epoch": epoch}
        if saved is not None:
            saved.save({"history": hist, "best_val": best["val"], "best_val_nll": best["nll"],
                        "best_epoch": best["epoch"], "seconds": seconds}, modules, opt,
                       tensors={f"best.{k}": v for k, v in (best["state"] or {}).items()})
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    t0 = time.process_time()
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    x_te_relabeled = prepare_inputs(name, relabel(to_dense([graphs[i] for i in te], 64), 777))
    res = {"model": name, "test_acc": _accuracy(name, model, x[te], y[te], 256, gen),
           "test_acc_relabeled": _accuracy(name, model, x_te_relabeled, y[te], 256, gen),
           "val_acc": best["val"], "val_nll": round(best["nll"], 5), "best_epoch": best["epoch"], "epochs_run": len(hist),
           "train_acc": _accuracy(name, model, x[tr], y[tr], 256, gen),
           "stopped_by_time_budget": stopped, "k": cfg.model.k,
           "k_train": cfg.k_train}
    res["seconds"] = round(seconds + t_prep + time.process_time() - t0, 1)  # CPU seconds, all included
    res["seconds_prepare"] = round(t_prep, 1)
    return res


def exp_classify_headline(seeds=(0, 1, 2), out: Optional[Path] = None, epochs: int = HEADLINE_EPOCHS,
                          root=None, progress: bool = False) -> dict:
    """The headline EXP-classify numbers: ``exp_classify("learned", ClassifyConfig(seed=s, epochs=epochs))``
    for every seed (split seed 0), checkpointed under ``out/seed<s>`` and resumed from there.

    Protocol (fixed before testing): learned S_n sampler with refined noise and the connected-component
    layout, MLP 4160-256-256-2, Adam 1e-3, batch 32, ``k_train = 4``, ``k = 10`` at evaluation; the epoch
    with the best validation accuracy (ties: the lower validation cross entropy) is tested.

    Returns ``{"rows": [...], "test_acc": [...], "all_100": bool}`` (one row per seed, ``seed`` added).
    """
    rows = []
    for s in seeds:
        folder = None if out is None else Path(out) / f"seed{int(s)}"
        r = exp_classify("learned", ClassifyConfig(seed=int(s), epochs=int(epochs)), root, folder,
                         resume=folder is not None, progress=progress)
        rows.append({**r, "seed": int(s)})
    acc = [r["test_acc"] for r in rows]
    return {"rows": rows, "test_acc": acc, "all_100": all(a >= 1.0 for a in acc)}
