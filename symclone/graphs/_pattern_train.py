"""PATTERN node classification: the models, the epoch loop and the multi-seed run behind ``symclone graphs pattern``.

Models (:data:`PATTERN_MODELS`; ``d = 3`` one-hot node features, 2 logits per node):

* ``transformer`` — the bare :class:`~symclone.graphs.NodeTransformer` (reads node positions: not
  equivariant);
* ``uniform`` / ``canonical`` / ``learned`` — the same transformer, S_n-symmetrized at the node level,
  ``f_sym(x) = (1/k) Σ_i g_i · f(g_i⁻¹·x)`` with node outputs permuted back (``rep_out="set"`` of
  :func:`~symclone.graphs.symmetrize_graph_model`): uniform random orderings of the real nodes,
  the canonical form, or the learned (LPS) distribution; ``k_train`` samples per graph in
  training, ``k`` in evaluation;
* ``mp`` — :class:`~symclone.graphs.NodeMessagePassing` (equivariant, 1-WL bounded), the baseline.

The canonical sampler is deterministic, so the canonical forms of all graphs are computed once
(:func:`canonical_pattern`, cached next to the data) and the backbone trains on the reordered
graphs and labels: the same numbers as the wrapped model, whose outputs are the backbone's
outputs on the canonical form moved back to the input's nodes, while the loss and the metric are
sums over nodes and do not depend on the node order.

Training (:func:`train_pattern`): Adam, cosine learning-rate decay over ``epochs`` (epoch-based
budgets only; CPU seconds are measured and reported, never used to stop), gradient clipping, the
benchmark's weighted cross entropy ``Σ_i w_{y_i} · (−log p_{y_i}) / Σ_i w_{y_i}`` over real nodes with
``w_c = 1 − π_c`` (``π_c``: the fraction of training nodes of class ``c``; :func:`pattern_class_weights`),
plus the learned sampler's entropy term. After every epoch: validation class-weighted accuracy
(:func:`weighted_accuracy`), model selection on it (ties: the lower validation loss) and a
:class:`~symclone.trainer.TrainingCheckpoint` with the weights, the optimiser, the history and the best
weights; ``resume`` continues from it. Every epoch reseeds the batch order, the sampler draws and
dropout from ``(seed, epoch)``, so a resumed run equals an uninterrupted one. The test set is
evaluated once, with the selected weights.

The loop is written out (as EXP-classify's is) rather than :func:`symclone.trainer.fit`: it needs
validation-based selection with the best weights in the checkpoint, the auxiliary sampler loss and
dense batches built on the fly from the compact storage.
"""
from __future__ import annotations

import copy
import io
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import to_dict
from ..io import atomic_write_bytes
from ..progress import progress_bar
from ..runtime import RuntimeOptions, precision_context, resolve_device
from ..schedules import cosine_lr
from ..trainer import TrainingCheckpoint
from ..validation import check_choice, check_float, check_int
from ._canon import canonical_order
from ._models import NodeMessagePassing, NodeTransformer
from ._pattern import PatternData, PatternRecipe, load_pattern
from ._pattern_stats import pattern_class_weights, weighted_accuracy
from ._symmetrize import symmetrize_graph_model

__all__ = ["PATTERN_MODELS", "PatternConfig", "build_pattern_model", "canonical_pattern", "train_pattern"]

log = logging.getLogger(__name__)

PATTERN_MODELS = ("transformer", "uniform", "canonical", "learned", "mp")
_SYMMETRIZED = ("uniform", "canonical", "learned")
_LABEL = {"transformer": "bare transformer", "uniform": "transformer + uniform S_n",
          "canonical": "transformer + canonical", "learned": "transformer + learned (LPS)",
          "mp": "message passing (1-WL)"}


@dataclass(frozen=True)
class PatternConfig(RuntimeOptions):
    """Settings of a PATTERN training run (frozen; CLI overrides ``--pattern.epochs=40``).

    Attributes
    ----------
    epochs, batch_size, lr, weight_decay, grad_clip : optimisation (Adam; ``grad_clip = 0``: off).
    cosine : cosine decay of the learning rate over ``epochs`` to 1 % (else constant).
    k_train, k : samples per graph of the uniform / learned samplers in training / evaluation.
    n_train, n_val, n_test : graphs per split (the benchmark: 10,000 / 2,000 / 2,000).
    data_seed : the dataset (patterns and graphs); ``seed`` (from :class:`RuntimeOptions`) is the
        training seed (initialisation, batch order, sampler draws).
    cache_dir : where the generated splits and canonical forms are cached (``None``: no cache).
    eval_batch : batch size of evaluation.
    d_model, heads, layers, ff, dropout : the transformer backbone.
    mp_hidden, mp_layers : the message-passing baseline.
    score_hidden, score_layers, noise, noise_kind, tau : the learned sampler (see
        :class:`~symclone.graphs.LearnedGraphSampler`).

    Examples
    --------
    >>> PatternConfig(epochs=2, n_train=64).n_val
    2000
    >>> PatternConfig(k=0)
    Traceback (most recent call last):
    ...
    ValueError: k: expected an integer >= 1, got 0
    """

    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    cosine: bool = True
    k_train: int = 2
    k: int = 8
    n_train: int = 10000
    n_val: int = 2000
    n_test: int = 2000
    data_seed: int = 0
    cache_dir: Optional[str] = ".cache/pattern"
    eval_batch: int = 64
    d_model: int = 64
    heads: int = 4
    layers: int = 3
    ff: int = 128
    dropout: float = 0.0
    mp_hidden: int = 64
    mp_layers: int = 4
    score_hidden: int = 32
    score_layers: int = 3
    noise: float = 1.0
    noise_kind: str = "refined"
    tau: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("epochs", "batch_size", "k_train", "k", "n_train", "n_val", "n_test", "eval_batch",
                     "d_model", "heads", "layers", "ff", "mp_hidden", "mp_layers", "score_hidden", "score_layers"):
            check_int(getattr(self, name), name, minimum=1)
        check_int(self.data_seed, "data_seed", minimum=0)
        check_float(self.lr, "lr", positive=True)
        check_float(self.tau, "tau", positive=True)
        for name in ("weight_decay", "grad_clip", "dropout", "noise"):
            check_float(getattr(self, name), name, minimum=0.0)
        if self.dropout >= 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {self.dropout}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model, heads: expected d_model divisible by heads, got {self.d_model}, {self.heads}")
        check_choice(self.noise_kind, "noise_kind", ("refined", "iid"))


def build_pattern_model(name: str, cfg: PatternConfig, recipe: PatternRecipe = PatternRecipe()) -> nn.Module:
    """Model ``name`` (one of :data:`PATTERN_MODELS`) with weights drawn under ``torch.manual_seed(cfg.seed)``.

    Examples
    --------
    >>> cfg = PatternConfig(d_model=8, heads=2, layers=1, ff=16, k_train=2, k=3)
    >>> m = build_pattern_model("uniform", cfg)
    >>> m.k, m.k_eval, m.rep_out.kind
    (2, 3, 'set')
    """
    check_choice(name, "model", PATTERN_MODELS)
    torch.manual_seed(cfg.seed)
    if name == "mp":
        return NodeMessagePassing(recipe.vocab, cfg.mp_hidden, cfg.mp_layers, out_dim=2)
    backbone = NodeTransformer(recipe.n_max, recipe.vocab, cfg.d_model, cfg.heads, cfg.layers, cfg.ff,
                               cfg.dropout, out_dim=2)
    if name == "transformer":
        return backbone
    kw = dict(noise=cfg.noise, noise_kind=cfg.noise_kind, tau=cfg.tau, hidden=cfg.score_hidden,
              layers=cfg.score_layers) if name == "learned" else {}
    # n_max=None: batches are trimmed to their largest graph (real nodes first, see NodeTransformer)
    return symmetrize_graph_model(backbone, name, None, recipe.vocab, k=cfg.k_train, k_eval=cfg.k,
                                  rep_out="set", **kw)


def canonical_pattern(data: PatternData, cache: Optional[str | Path] = None, max_leaves: int = 20000
                      ) -> tuple[PatternData, float]:
    """``(data in canonical form, CPU seconds)``: every graph reordered by :func:`canonical_order`
    of its adjacency and one-hot features — the order :class:`~symclone.graphs.CanonicalGraphSampler`
    computes. ``cache``: an ``.npz`` holding the orders (read if present, else written atomically).

    Examples
    --------
    >>> from symclone.graphs import generate_pattern
    >>> data = generate_pattern(2, seed=0); canon, _ = canonical_pattern(data)
    >>> bool((np.sort(canon.labels) == np.sort(data.labels)).all())
    True
    """
    t0 = time.process_time()
    orders: Optional[list[np.ndarray]] = None
    path = None if cache is None else Path(cache)
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            flat, sizes = z["orders"].astype(np.int64), z["sizes"].astype(np.int64)
        if np.array_equal(sizes, data.sizes):
            orders = np.split(flat, np.cumsum(sizes)[:-1])
    if orders is None:
        eye = np.eye(data.vocab)
        orders = []
        for i in range(len(data)):
            a, f, _ = data.graph(i)
            orders.append(canonical_order(a, eye[f.astype(np.int64)], max_leaves))
        if path is not None:
            buf = io.BytesIO()
            np.savez_compressed(buf, orders=np.concatenate(orders).astype(np.uint8),
                                sizes=data.sizes.astype(np.int16))
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buf.getvalue())
    return data.reorder(orders), time.process_time() - t0


def _load_splits(cfg: PatternConfig, recipe: PatternRecipe) -> dict[str, PatternData]:
    sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    return {s: load_pattern(s, n, cfg.data_seed, cfg.cache_dir, recipe) for s, n in sizes.items()}


def _inputs(name: str, data: dict[str, PatternData], cfg: PatternConfig, recipe: PatternRecipe
            ) -> tuple[dict[str, PatternData], float]:
    """The splits as the trained network sees them: canonical forms for ``canonical``."""
    if name != "canonical":
        return data, 0.0
    out, seconds = {}, 0.0
    for split, d in data.items():
        cache = None if cfg.cache_dir is None else \
            Path(cfg.cache_dir) / f"pattern_{split}_{len(d)}_s{cfg.data_seed}_{recipe.fingerprint()}_canonical.npz"
        out[split], t = canonical_pattern(d, cache)
        seconds += t
    return out, seconds


def _forward(name: str, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (B, N, 2), auxiliary loss)`` of the trained network on a batch."""
    if name in ("uniform", "learned"):
        return model.forward_with_aux(x)
    net = model.model if name == "canonical" else model
    return net(x), x.new_zeros(())


@torch.no_grad()
def _evaluate(name: str, model: nn.Module, data: PatternData, cfg: PatternConfig, weights: torch.Tensor,
              device: torch.device, seed: int) -> tuple[float, float]:
    """``(class-weighted accuracy, weighted cross entropy)`` over all real nodes of ``data``."""
    model.eval()
    torch.manual_seed(seed)
    preds, targets = [], []
    nll, wsum = 0.0, 0.0
    w = weights.to(device)
    for s in range(0, len(data), cfg.eval_batch):
        x, y = data.dense(range(s, min(s + cfg.eval_batch, len(data))))
        x, y = x.to(device), y.to(device)
        logits = _forward(name, model, x)[0].float()
        valid = y >= 0
        nll += float(F.cross_entropy(logits[valid], y[valid], weight=w, reduction="sum"))
        wsum += float(w[y[valid]].sum())
        preds.append(logits.argmax(-1)[valid].cpu())
        targets.append(y[valid].cpu())
    return weighted_accuracy(torch.cat(preds), torch.cat(targets)), nll / wsum


def _fingerprint(cfg: PatternConfig, name: str) -> dict:
    """The settings a checkpoint must agree on to be resumed (``epochs`` may grow; device and
    progress may change)."""
    d = to_dict(cfg)
    for key in ("epochs", "progress", "device"):
        d.pop(key)
    return {"model": name, **d}


def train_pattern(model_name: str, config: PatternConfig = PatternConfig(), out: Optional[str | Path] = None,
                  resume: bool = False, data: Optional[dict[str, PatternData]] = None,
                  recipe: PatternRecipe = PatternRecipe()) -> dict:
    """Train ``model_name`` on PATTERN (see the module docstring); return its record.

    ``out``: folder of the checkpoint ``pattern_<model>_seed<seed>.safetensors`` (written after every
    epoch; ``resume`` continues from it, and a finished run returns its stored record). ``data``:
    the splits ``{"train", "val", "test"}`` (default: :func:`load_pattern` with the config's sizes).

    Returns ``{"model", "seed", "test_accuracy", "val_accuracy", "val_loss", "best_epoch", "epochs_run",
    "history", "parameters", "averaging", "cpu_seconds", "cpu_seconds_prepare", "cpu_seconds_per_epoch"}``
    (CPU seconds of this process, all threads).

    Examples
    --------
    >>> cfg = PatternConfig(epochs=1, n_train=8, n_val=4, n_test=4, d_model=8, heads=2, layers=1, ff=16,
    ...                     cache_dir=None, progress=False)
    >>> r = train_pattern("transformer", cfg)
    >>> r["epochs_run"], 0.0 <= r["test_accuracy"] <= 1.0
    (1, True)
    """
    check_choice(model_name, "model", PATTERN_MODELS)
    cfg = config
    name = model_name
    device = resolve_device(cfg.device)
    data = _load_splits(cfg, recipe) if data is None else data
    missing = {"train", "val", "test"} - set(data)
    if missing:
        raise ValueError(f"data: expected the splits train, val and test, missing {sorted(missing)}")
    weights = pattern_class_weights(data["train"])
    model = build_pattern_model(name, cfg, recipe).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ckpt = None if out is None else TrainingCheckpoint(Path(out) / f"pattern_{name}_seed{cfg.seed}")
    fingerprint = _fingerprint(cfg, name)
    history: list[dict] = []
    best = {"val": -1.0, "loss": math.inf, "epoch": -1, "state": None}
    seconds, prep = 0.0, 0.0
    if resume and ckpt is not None and ckpt.exists():
        meta, _ = ckpt.read()
        if meta.get("fingerprint") != fingerprint:
            raise ValueError(f"resume: {ckpt.path} was written with other settings ({meta.get('fingerprint')}); "
                             "drop --resume or use another --out")
        if "result" in meta and meta["epochs_run"] == cfg.epochs:
            return meta["result"]
        meta, extra = ckpt.load({"model": model}, opt)
        history, seconds, prep = list(meta["history"]), float(meta["cpu_seconds"]), float(meta["cpu_seconds_prepare"])
        best.update(val=meta["best_val"], loss=meta["best_val_loss"], epoch=meta["best_epoch"],
                    state={k[5:]: v for k, v in extra.items() if k.startswith("best.")} or None)
    inputs, t_prep = _inputs(name, data, cfg, recipe)
    prep += t_prep
    train = inputs["train"]
    w = weights.to(device)
    bar = progress_bar(cfg.epochs, f"pattern:{name}:seed{cfg.seed}", enabled=cfg.progress, initial=len(history))
    for epoch in range(len(history), cfg.epochs):
        t0 = time.process_time()
        if cfg.cosine:
            for group in opt.param_groups:
                group["lr"] = cosine_lr(cfg.lr, epoch, cfg.epochs)
        torch.manual_seed(cfg.seed * 1_000_003 + 2 * epoch)     # batch order, sampler draws, dropout
        order = torch.randperm(len(train))
        model.train()
        total, count = 0.0, 0
        for s in range(0, len(order), cfg.batch_size):
            x, y = train.dense(order[s:s + cfg.batch_size].tolist())
            x, y = x.to(device), y.to(device)
            with precision_context(cfg.precision, device):
                logits, aux = _forward(name, model, x)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), weight=w, ignore_index=-1) + aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
        if not math.isfinite(total):
            raise FloatingPointError(f"loss became {total / count} in epoch {epoch + 1}; lower the lr")
        val, val_loss = _evaluate(name, model, inputs["val"], cfg, weights, device, cfg.seed * 1_000_003 + 2 * epoch + 1)
        seconds += time.process_time() - t0
        history.append({"epoch": epoch + 1, "loss": total / count, "val_accuracy": val, "val_loss": val_loss,
                        "cpu_seconds": seconds})
        log.info("pattern %s seed %d epoch %d: loss %.4f, val acc %.4f", name, cfg.seed, epoch + 1, total / count, val)
        if (val, -val_loss) > (best["val"], -best["loss"]):
            best = {"val": val, "loss": val_loss, "epoch": epoch + 1, "state": copy.deepcopy(model.state_dict())}
        bar.update(1, loss=total / count, val=val)
        if ckpt is not None:
            _save(ckpt, _meta(fingerprint, history, best, seconds, prep), model, opt, best)
    bar.close()
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    t0 = time.process_time()
    test, _ = _evaluate(name, model, inputs["test"], cfg, weights, device, cfg.seed * 1_000_003 - 1)
    seconds += time.process_time() - t0
    model.eval()
    result = {"model": name, "seed": cfg.seed, "test_accuracy": test, "val_accuracy": best["val"],
              "val_loss": best["loss"], "best_epoch": best["epoch"], "epochs_run": len(history), "history": history,
              "parameters": sum(p.numel() for p in model.parameters()),
              "averaging": getattr(model, "averaging", "no symmetrization"),
              "cpu_seconds": round(seconds + prep, 2), "cpu_seconds_prepare": round(prep, 2),
              "cpu_seconds_per_epoch": round(history[-1]["cpu_seconds"] / len(history), 3) if history else 0.0}
    if ckpt is not None:
        _save(ckpt, {**_meta(fingerprint, history, best, seconds, prep), "result": result}, model, opt, best)
    return result


def _save(ckpt: TrainingCheckpoint, meta: dict, model: nn.Module, opt: torch.optim.Optimizer, best: dict) -> None:
    """The run's checkpoint: model, optimiser, the best weights so far (``best.*``) and ``meta``."""
    ckpt.save(meta, {"model": model}, opt, tensors={f"best.{k}": v for k, v in (best["state"] or {}).items()})


def _meta(fingerprint: dict, history: list, best: dict, seconds: float, prep: float) -> dict:
    return {"fingerprint": fingerprint, "history": history, "epochs_run": len(history), "best_val": best["val"],
            "best_val_loss": best["loss"], "best_epoch": best["epoch"], "cpu_seconds": seconds,
            "cpu_seconds_prepare": prep}
