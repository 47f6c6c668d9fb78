"""The LPS graph-separation protocols on untrained models: EXP-iso and GRAPH8c.

For each seed ``s`` (model weights and sampler noise drawn from ``s``) every graph is embedded;
a pair is *separated under s* if ``‖e_i − e_j‖₁ > tol`` (``tol = 1e-3``). The reported number is
the count of pairs separated under **no** seed (LPS: 0 of 600 on EXP, 0 on GRAPH8c).

That rule alone rewards noise: a stochastic or non-invariant model also "separates" a graph
from a relabelled copy of itself. Every run therefore also embeds a random relabelling of each
graph (a random permutation of all ``n_max`` positions, padding included) and reports
``copies_separated``: graphs separated from their own copy under some seed (want 0). For the
stochastic samplers on EXP it adds a test *in distribution*: with two independent draws
``a, a'`` of graph 1 and ``b, b'`` of graph 2, ``D_s = ‖a − b‖₁ − (‖a − a'‖₁ + ‖b − b'‖₁)/2``
has mean 0 when both graphs induce the same output distribution. Over ``S`` seeds the one-sided
statistic ``t = mean(D) / stderr(D)`` gets the p-value ``P(T_{S−1} > t)`` (Student ``t``), and a pair
counts as separated when its p-value survives a family-wise multiple-testing correction
(:func:`in_distribution_test`; default Holm at family-wise ``α = 0.05`` over the 600 pairs; the
1,200 graph-vs-copy tests, a control whose null is true by construction, form their own family).

Why the correction: the earlier rule ``mean(D) > 3 · stderr(D)`` has a per-test false-positive rate
of ``P(T_{S−1} > 3)`` (0.28 % at 30 seeds, 0.13 % as ``S → ∞``), i.e. about 3.3 of 1,200 isomorphic
copies expected to "separate" at 30 seeds — which is what was observed. With Holm every family has
probability ≤ α of *any* false positive, under any dependence between the tests (the graphs of one
seed share the model weights). ``correction="none"`` restores the ``z`` rule.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from scipy import stats

from ..progress import track
from ..io import read_json, write_json
from ._batch import to_dense
from ._embed import ModelConfig, build_model, embed, prepare_inputs
from ._io import load_exp, load_graph8c
from ._pairs import close_pairs, filter_pairs, pair_l1

__all__ = ["ProtocolConfig", "separation_protocol", "exp_iso", "graph8c", "relabel", "in_distribution_test",
           "CORRECTIONS"]

log = logging.getLogger(__name__)
STOCHASTIC = ("uniform", "learned")
CORRECTIONS = ("holm", "bonferroni", "none")


@dataclass(frozen=True)
class ProtocolConfig:
    """Seeds, tolerance and batch size of the separation protocols; the in-distribution test's
    family-wise error rate ``alpha`` and ``correction`` (``z``: threshold of ``correction="none"``)."""

    seeds: int = 100
    tol: float = 1e-3
    batch: int = 512
    z: float = 3.0
    alpha: float = 0.05
    correction: str = "holm"
    model: ModelConfig = field(default_factory=ModelConfig)


def relabel(x: torch.Tensor, seed: int) -> torch.Tensor:
    """A random relabelling ``g·x`` of every graph (``g`` uniform on ``S_{n_max}``, padding included).

    Examples
    --------
    >>> x = torch.zeros(1, 3, 4); x[0, :2, 3] = 1; x[0, 0, 1] = x[0, 1, 0] = 1
    >>> y = relabel(x, 0); float(y[..., :3].sum()), float(y[..., 3].sum())
    (2.0, 2.0)
    """
    gen = torch.Generator().manual_seed(seed)
    g = torch.argsort(torch.rand(x.shape[0], x.shape[1], generator=gen), dim=-1)
    inv = torch.argsort(g, dim=-1)
    idx = inv[:, :, None].expand(-1, -1, x.shape[2])
    y = torch.gather(x, 1, idx)
    n = x.shape[1]
    cols = torch.gather(y[:, :, :n], 2, inv[:, None, :].expand(-1, n, -1))
    return torch.cat([cols, y[:, :, n:]], dim=2)


def _state_path(out: Optional[Path], name: str) -> Optional[Path]:
    return None if out is None else Path(out) / f"{name}.state.json"


def separation_protocol(name: str, x: torch.Tensor, pairs: Optional[torch.Tensor], cfg: ProtocolConfig,
                        out: Optional[Path] = None, resume: bool = False, progress: bool = True,
                        tag: str = "exp") -> dict:
    """Run the protocol for model ``name`` on the dense graphs ``x``.

    ``pairs`` (P, 2): the pairs to test (EXP); ``None``: all pairs, found exactly and
    memory-bounded with :func:`close_pairs` on the first seed and re-checked on the others
    (GRAPH8c). Progress is saved after every seed to ``out/<tag>_<name>.state.json`` and
    ``resume`` continues from it.
    """
    n_max, d = x.shape[1], x.shape[2] - x.shape[1] - 1
    if cfg.correction not in CORRECTIONS or not 0.0 < cfg.alpha < 1.0:
        raise ValueError(f"correction, alpha: expected one of {CORRECTIONS} and 0 < alpha < 1, "
                         f"got {cfg.correction!r}, {cfg.alpha}")
    t0 = time.process_time()
    xin = prepare_inputs(name, x, cfg.batch)
    xcopy = prepare_inputs(name, relabel(x, 12345), cfg.batch)
    t_prep = time.process_time() - t0
    stoch = name in STOCHASTIC
    path = _state_path(out, f"{tag}_{name}")
    st = read_json(path) if resume and path is not None and path.is_file() else {}
    fingerprint = {"model_cfg": repr(cfg.model), "tol": cfg.tol, "graphs": len(x), "n_max": n_max}
    if st and st.get("fingerprint") != fingerprint:
        raise ValueError(f"resume: state {path} was written for {st.get('fingerprint')}, "
                         f"not {fingerprint}; drop --resume or use another --out")
    done = int(st.get("seeds_done", 0))
    cand = torch.tensor(st["candidates"], dtype=torch.long).view(-1, 2) if "candidates" in st else pairs
    copy_sep = torch.tensor(st.get("copy_sep", [False] * len(x)))
    dsum = {k: torch.tensor(v, dtype=torch.float64) for k, v in st.get("dsum", {}).items()}
    t_run = float(st.get("seconds", 0.0))
    for seed in track(range(done, cfg.seeds), f"{tag}:{name}", enabled=progress):
        t1 = time.process_time()
        model = build_model(name, n_max, d, cfg.model, seed)
        gen = torch.Generator().manual_seed(10_000 + seed)
        e = embed(name, model, xin, gen, cfg.batch)
        ec = embed(name, model, xcopy, gen, cfg.batch)
        copy_sep |= (e - ec).abs().sum(-1) > cfg.tol
        cand = close_pairs(e, cfg.tol) if cand is None else filter_pairs(e, cand, cfg.tol)
        if stoch and pairs is not None:  # test in distribution (EXP only)
            e2 = embed(name, model, xin, gen, cfg.batch)
            same = (e - e2).abs().sum(-1)
            dp = pair_l1(e, pairs) - (same[pairs[:, 0]] + same[pairs[:, 1]]) / 2
            dc = (e - ec).abs().sum(-1) - same
            for key, v in (("pair", dp), ("copy", dc)):
                s1, s2 = dsum.get(key + "1", 0 * v), dsum.get(key + "2", 0 * v)
                dsum[key + "1"], dsum[key + "2"] = s1 + v, s2 + v * v
        t_run += time.process_time() - t1
        if path is not None:
            write_json(path, {"fingerprint": fingerprint, "seeds_done": seed + 1, "candidates": cand.tolist(),
                              "copy_sep": copy_sep.tolist(), "seconds": t_run,
                              "dsum": {k: v.tolist() for k, v in dsum.items()}})
    used = max(done, cfg.seeds)  # a resumed state may hold more seeds than asked for now
    res = {"model": name, "seeds": used, "tol": cfg.tol, "graphs": len(x),
           "not_separated": int(len(cand)), "copies_separated": int(copy_sep.sum()),
           "seconds": round(t_run + t_prep, 2), "seconds_prepare": round(t_prep, 2),
           "seconds_per_seed": round(t_run / max(used, 1), 3)}
    if pairs is not None:
        res["pairs"] = int(len(pairs))
    if dsum:
        kw = dict(alpha=cfg.alpha, correction=cfg.correction, z=cfg.z)
        pair_sep, copy_sep_d = (in_distribution_test(dsum[k + "1"], dsum[k + "2"], used, **kw)[0]
                                for k in ("pair", "copy"))
        res["not_separated_in_distribution"] = int((~pair_sep).sum())
        res["copies_separated_in_distribution"] = int(copy_sep_d.sum())
        raw = dict(alpha=cfg.alpha, correction="none", z=cfg.z)
        res["not_separated_in_distribution_uncorrected"] = int(
            (~in_distribution_test(dsum["pair1"], dsum["pair2"], used, **raw)[0]).sum())
        res["copies_separated_in_distribution_uncorrected"] = int(
            in_distribution_test(dsum["copy1"], dsum["copy2"], used, **raw)[0].sum())
        res["in_distribution_test"] = {"correction": cfg.correction, "alpha": cfg.alpha, "z": cfg.z,
                                       "z_rule_false_positive_rate": float(stats.t.sf(cfg.z, max(used - 1, 1)))}
    return res


def in_distribution_test(s1: torch.Tensor, s2: torch.Tensor, n: int, alpha: float = 0.05,
                         correction: str = "holm", z: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One-sided tests of ``E[D] > 0`` for a family of ``m`` statistics from their sums over ``n`` seeds.

    ``s1 = Σ_s D_s`` and ``s2 = Σ_s D_s²`` (shape ``(m,)``); ``t = D̄ / (σ̂ / √n)`` with the unbiased
    ``σ̂``, ``p = P(T_{n−1} > t)``. Returns ``(rejected, p)`` (bool, float64; ``m``):

    * ``"holm"`` — Holm step-down: with ``p_(1) ≤ … ≤ p_(m)``, reject ``p_(1..k)`` for the largest
      ``k`` with ``p_(i) ≤ α / (m − i + 1)`` for all ``i ≤ k``. Family-wise error ≤ ``α`` under any
      dependence; at least as powerful as Bonferroni;
    * ``"bonferroni"`` — reject ``p ≤ α / m`` (per-test false-positive rate ``α / m``);
    * ``"none"`` — the uncorrected rule ``D̄ > z · σ̂ / √n``, per-test false-positive rate
      ``P(T_{n−1} > z)`` (``≈ 1 − Φ(z)`` for large ``n``), so about ``m`` times that many false
      positives in a family of true nulls.

    ``n < 2`` (no variance estimate): nothing is rejected.

    Examples
    --------
    >>> n = 30; d = torch.tensor([3.2, 3.2, 6.0]) / n ** 0.5   # t = 3.2, 3.2, 6.0 with unit variance
    >>> s1, s2 = n * d, (n - 1) + n * d ** 2
    >>> in_distribution_test(s1, s2, n, correction="none")[0].tolist()
    [True, True, True]
    >>> in_distribution_test(s1, s2, n, alpha=1e-3)[0].tolist()  # Holm: p = 0.0017, 0.0017, 8e-7
    [False, False, True]
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction: expected one of {CORRECTIONS}, got {correction!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected 0 < alpha < 1, got {alpha}")
    s1, s2 = s1.double(), s2.double()
    m = s1.numel()
    if n < 2 or m == 0:
        return torch.zeros(m, dtype=torch.bool), torch.ones(m, dtype=torch.float64)
    mean = s1 / n
    se = ((s2 / n - mean ** 2).clamp_min(0) * n / (n - 1) / n).sqrt()
    t = torch.where(se > 0, mean / se.clamp_min(1e-300),
                    torch.where(mean > 0, torch.tensor(float("inf"), dtype=torch.float64),
                                torch.tensor(-float("inf"), dtype=torch.float64)))
    p = torch.as_tensor(stats.t.sf(t.numpy(), n - 1), dtype=torch.float64)
    if correction == "none":
        return mean > z * se, p
    if correction == "bonferroni":
        return p <= alpha / m, p
    order = torch.argsort(p, stable=True)
    ok = p[order] <= alpha / (m - torch.arange(m, dtype=torch.float64))
    k = int(ok.long().cumprod(0).sum())              # the first k sorted p-values pass
    rejected = torch.zeros(m, dtype=torch.bool)
    rejected[order[:k]] = True
    return rejected, p


def _run_all(tag: str, x: torch.Tensor, pairs, models, cfg, out, resume, progress,
             callback: Optional[Callable[[dict], None]]) -> list[dict]:
    rows = []
    for m in models:
        r = separation_protocol(m, x, pairs, cfg, out, resume, progress, tag)
        rows.append(r)
        log.debug("%s %s: %s", tag, m, r)
        if callback:
            callback(r)
    return rows


def exp_iso(models, cfg: ProtocolConfig = ProtocolConfig(), root=None, out=None, resume=False,
            progress=True, limit: Optional[int] = None, callback=None) -> list[dict]:
    """EXP-iso: the 600 pairs ``(2i, 2i+1)`` of 1-WL-equivalent, non-isomorphic graphs (n_max = 64)."""
    graphs, _ = load_exp(root)
    if limit:
        graphs = graphs[:2 * limit]
    x = to_dense(graphs, 64)
    pairs = torch.stack([torch.arange(0, len(graphs), 2), torch.arange(1, len(graphs), 2)], 1)
    return _run_all("exp", x, pairs, models, cfg, out, resume, progress, callback)


def graph8c(models, cfg: ProtocolConfig = ProtocolConfig(), root=None, out=None, resume=False,
            progress=True, limit: Optional[int] = None, callback=None) -> list[dict]:
    """GRAPH8c: all pairs of the 11,117 connected 8-vertex graphs (61.8 M pairs, never materialised)."""
    graphs = load_graph8c(root)
    if limit:
        graphs = graphs[:limit]
    return _run_all("graph8c", to_dense(graphs, 8), None, models, cfg, out, resume, progress, callback)
