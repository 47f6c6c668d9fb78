"""Image and frame rows of the roofline suite's symmetrization bench: p4 uniform draws (the group actions and
the whole forward), the exact c4 average, and the canonical c4 sampler, each over an MLP backbone timed in the
same run; and the canonical o3 / sn x o3 frame samplers over the n-body PairTransformer (:func:`frame_rows`).

Used by :func:`benchmarks.roofline.bench_symmetrize`; ``reference_p4_action`` is the former per-sample action
(masked ``rot90`` + index gathers), kept for the same-run before/after row.
"""
from __future__ import annotations

import torch

from ._util import count_flops, peak_memory, timeit

__all__ = ["grid_rows", "frame_rows", "reference_p4_action"]


def _row(*args, **kw) -> dict:
    from .roofline import _row as row
    return row(*args, **kw)


def reference_p4_action(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The former per-sample p4 action on images (for the bench's before/after row):
    a masked ``rot90`` per quarter turn, then two ``gather``\ s with materialised ``(n, C, H, W)`` int64
    indices (rows, then columns). tests/test_symmetrize_actions.py checks the library's action against a
    copy of it, bit for bit."""
    k, shift = g[:, 0] % 4, g[:, 1:]
    out = torch.empty_like(x)
    for r in range(4):
        mask = k == r
        if bool(mask.any()):
            out[mask] = torch.rot90(x[mask], r, dims=(-2, -1))
    B, H, W = x.shape[0], x.shape[-2], x.shape[-1]
    rows = (torch.arange(H, device=x.device)[None, :] - shift[:, :1]) % H
    cols = (torch.arange(W, device=x.device)[None, :] - shift[:, 1:2]) % W
    lead = (B,) + (1,) * (x.ndim - 3)
    out = torch.gather(out, -2, rows.view(*lead, H, 1).expand(*x.shape[:-2], H, W).contiguous())
    return torch.gather(out, -1, cols.view(*lead, 1, W).expand(*x.shape[:-2], H, W).contiguous())


def _image_mlp(size: int) -> torch.nn.Module:
    from torch import nn
    d = size * size
    return nn.Sequential(nn.Flatten(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.Unflatten(1, (1, size, size)))


def grid_rows(dev: torch.device, rate: float, quick: bool) -> list[dict]:
    """The image rows, on an MLP 784-784-784 backbone (28×28 images): (a) p4 uniform
    symmetrization with k random draws per input — the group actions alone (inputs g⁻¹·x from the B
    inputs, outputs g·y on the k·B rows) and the whole forward over the bare MLP on the same k·B rows, with
    the former gathers as reference; (b) the exact c4 average (``k="all"``) over the bare MLP on the ``4B``
    rows; (c) the canonical c4 sampler at default settings (orbit scores) and the former escnn default, over
    the backbone on the same batch."""
    from symclone.groups import get_group
    from symclone.symmetrize import GroupSample, Symmetrized, transform

    rows = []
    size, k = 28, 8
    B = 32 if quick else 256
    n = k * B
    torch.manual_seed(0)
    mlp = _image_mlp(size).to(dev).eval()
    G = get_group("p4", size=size)
    x = torch.randn(B, 1, size, size, device=dev)
    xr = x.repeat(k, 1, 1, 1)
    g = G.sample(n).to(dev)
    g_inv = G.inverse(g)
    s = GroupSample(g=g, k=k)
    sym = Symmetrized(mlp, G, "image", "image", sampler="uniform", k=k).to(dev).eval()
    with torch.no_grad():
        tb = timeit(lambda: mlp(xr), dev, min_time=0.3)
        fb = count_flops(lambda: mlp(xr))
        rows.append(_row("symmetrize", f"bare mlp 784-784-784 on {n} rows (28^2 images)", tb, tb / (fb / rate),
                         "time / roofline floor", n / tb, "samples/s", flops=fb))
        acts = lambda: (transform(G, s, x, "image", inverse=True), transform(G, s, xr, "image"))  # noqa: E731
        ta = timeit(acts, dev, min_time=0.3)
        tr = timeit(lambda: (reference_p4_action(g_inv, xr), reference_p4_action(g, xr)), dev, min_time=0.3)
        rows.append(_row("symmetrize", f"p4 actions in+out, {n} random draws [turns by block, row slices]", ta,
                         ta / tb, "time / bare at equal rows", n / ta, "samples/s", gain_vs_reference=tr / ta))
        rows.append(_row("symmetrize", f"p4 actions in+out, {n} random draws [former index gathers]", tr, tr / tb,
                         "time / bare at equal rows", n / tr, "samples/s"))
        _, peak = peak_memory(lambda: sym(x), dev)
        ts = timeit(lambda: sym(x), dev, min_time=0.3)
        rows.append(_row("symmetrize", f"p4 uniform k={k} B={B} forward", ts, ts / tb, "time / (k x bare)",
                         B / ts, "samples/s", peak))
        c4 = Symmetrized(mlp, "c4", "image", "image", sampler="uniform", k="all").to(dev).eval()
        x4 = x.repeat(4, 1, 1, 1)
        tb4 = timeit(lambda: mlp(x4), dev, min_time=0.3)
        t4 = timeit(lambda: c4(x), dev, min_time=0.3)
        rows.append(_row("symmetrize", f"c4 exact average (k=all) B={B} forward", t4, t4 / tb4, "time / (|G| x bare)",
                         B / t4, "samples/s"))
        Bc = 256 if quick else 2048
        xc = torch.randn(Bc, 1, size, size, device=dev)
        tbc = timeit(lambda: mlp(xc), dev, min_time=0.3)
        for net, label in ((None, "default: orbit scores"), ("escnn", "escnn C4Net, the former default")):
            kw = {} if net is None else {"net": net}
            f = Symmetrized(mlp, "c4", "image", "image", sampler="canonical", **kw).to(dev).eval()
            tsm = timeit(lambda: f.sampler.sample(xc, 1), dev, min_time=0.3)
            tf = timeit(lambda: f(xc), dev, min_time=0.3)
            rows.append(_row("symmetrize", f"canonical c4 sampler [{label}] B={Bc}", tsm, tsm / tbc,
                             "sampler / backbone time", Bc / tsm, "samples/s"))
            rows.append(_row("symmetrize", f"canonical c4 forward [{label}] B={Bc}", tf, tf / tbc,
                             "time / bare model", Bc / tf, "samples/s"))
    return rows + frame_rows(dev, quick)


def frame_rows(dev: torch.device, quick: bool) -> list[dict]:
    """Canonical ``o3`` and ``sn x o3`` symmetrization of the default n-body ``PairTransformer`` on B = 100
    five-body systems (rep ``1x1o+1x1o+1x0e`` in, points out): eval forward time over the bare backbone's on
    the same batch, timed in this run (the float64 frame network, principal axes, permutation and actions
    are the overhead)."""
    from symclone.data.nbody import NBODY_REP_IN
    from symclone.symmetrize import PairTransformer, Symmetrized

    torch.manual_seed(0)
    B = 100
    model = PairTransformer().to(dev).eval()
    x = torch.randn(B, 5, 7, device=dev)
    rows = []
    with torch.no_grad():
        tb = timeit(lambda: model(x), dev, min_time=0.3)
        rows.append(_row("symmetrize", f"bare PairTransformer B={B} (n-body, 5 bodies)", tb, 1.0, "reference",
                         B / tb, "samples/s"))
        for group in ("o3", "sn x o3"):
            kw = {"group_kw": {"n": 5}} if group.startswith("sn") else {}
            f = Symmetrized(model, group, NBODY_REP_IN, "points", sampler="canonical", **kw).to(dev).eval()
            ts = timeit(lambda: f(x), dev, min_time=0.3)
            rows.append(_row("symmetrize", f"canonical {group} PairTransformer B={B}: time / bare", ts, ts / tb,
                             "time / bare model", B / ts, "samples/s"))
    return rows
