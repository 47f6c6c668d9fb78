"""Teacher benchmark: parameters, forward time vs a plain model of the same width, equivariance.

For each teacher: number of parameters; forward time of ``forward_features`` on a batch of 256
(no grad, median of ``--repeats`` timed runs after one warm-up) divided by the time of a plain
model of the same width measured in the same run (``nn.Conv2d`` stack with circular padding for
conv teachers; for e3nn a plain message-passing net with ``nn.Linear`` edge/node maps of the same
feature widths on the same complete graph);
and the relative equivariance error of every layer (``symclone.equivariance.equivariance_error``,
float64 and float32, random group elements). For ``gcnn_c4`` also the escnn-native forward
(``R2Conv`` on ``GeometricTensor``, eval mode) and the uncached (re-expanding) forward.

Run: ``python -m benchmarks.teachers [--quick] [--out results/teachers.json]``.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn as nn

from symclone.io import write_json
from symclone.registry import create_teacher
from symclone.equivariance import equivariance_error

CONFIGS = {
    "cnn": dict(channels=32, depth=3),
    "gcnn_c4": dict(fields=8, depth=3),
    "e3nn": dict(input="nbody", n_points=5, mul=8, depth=3),
}


def _time(fn: Callable[[], object], repeats: int) -> float:
    with torch.no_grad():
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


class PlainMessagePassing(nn.Module):
    """Non-equivariant message passing of the same widths: ``h'_i = ReLU(mean_j Lin([h_i, h_j, p_j − p_i])
    + Lin(h_i))`` on the complete graph (positions are the first 3 features, as in the teacher)."""

    def __init__(self, dims: list[int]):
        super().__init__()
        self.edge = nn.ModuleList(nn.Linear(2 * a + 3, b) for a, b in zip(dims[:-1], dims[1:]))
        self.node = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        N = h.shape[1]
        for edge, node in zip(self.edge, self.node):
            pos = h[..., :3]
            hi = h[:, :, None].expand(-1, -1, N, -1)
            hj = h[:, None].expand(-1, N, -1, -1)
            rel = pos[:, None] - pos[:, :, None]
            h = torch.relu(edge(torch.cat([hi, hj, rel], -1)).mean(2) + node(h))
        return h


def plain_twin(teacher) -> nn.Module:
    """A plain torch model with the teacher's feature widths (no weight tying, no equivariance)."""
    shapes = teacher.feature_shapes
    mods: list[nn.Module] = []
    if teacher.reps[0].is_image:
        for (ci, _, _), (co, _, _), k in zip(shapes[:-1], shapes[1:], [teacher.kernel_size(l) for l in
                                                                           range(1, teacher.num_layers + 1)]):
            mods += [nn.Conv2d(ci, co, k, padding=k // 2, padding_mode="circular", bias=False), nn.ReLU()]
    else:
        return PlainMessagePassing([s[1] for s in shapes])
    return nn.Sequential(*mods)


def layer_errors(teacher, dtype: torch.dtype, n: int = 4) -> list[float]:
    t = teacher.to(dtype)
    g = torch.Generator().manual_seed(0)
    els = t.group.sample(n, g)
    els = [t.group.index(els, i) for i in range(n)]
    out = []
    for l in range(1, t.num_layers + 1):
        x = torch.randn(4, *t.feature_shapes[l - 1], generator=g, dtype=torch.float64).to(dtype)
        r = equivariance_error(lambda h, l=l: t.layer_forward(l, h), t.group, t.reps[l - 1], t.reps[l],
                               x=x, dtype=None, elements=els)
        out.append(r["max"])
    teacher.float()
    return out


def bench(name: str, batch: int, repeats: int) -> dict:
    t = create_teacher(name, **CONFIGS[name]).eval()
    x = torch.randn(batch, *t.feature_shapes[0])
    twin = plain_twin(t).eval()
    t_teacher = _time(lambda: t.forward_features(x), repeats)
    t_plain = _time(lambda: twin(x), repeats)
    row = {"teacher": name, "config": t.config, "params": sum(p.numel() for p in t.parameters()),
           "plain_params": sum(p.numel() for p in twin.parameters()), "batch": batch,
           "forward_s": t_teacher, "plain_forward_s": t_plain, "ratio": t_teacher / t_plain,
           "equivariance_error_float64": layer_errors(t, torch.float64),
           "equivariance_error_float32": layer_errors(t, torch.float32)}
    if name == "gcnn_c4":
        from escnn import nn as enn

        def native():
            h = enn.GeometricTensor(x, t.field_types[0])
            for conv in t.convs:
                h = enn.GeometricTensor(torch.relu(conv(h).tensor), conv.out_type)
            return h

        for conv in t.convs:
            conv.eval()
        row["escnn_native_forward_s"] = _time(native, repeats)
        for conv in t.convs:
            conv.train()
        t.convs[0].weights.requires_grad_(True)

        def uncached():
            for l in range(1, t.num_layers + 1):
                t.invalidate_cache()
            return t.forward_features(x)

        row["uncached_forward_s"] = _time(uncached, repeats)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="batch 32, 2 repeats")
    p.add_argument("--out", default="results/teachers_benchmark.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--teachers", nargs="*", default=list(CONFIGS))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    batch, repeats = (32, 2) if args.quick else (256, 5)
    rows = [bench(n, batch, repeats) for n in args.teachers]
    print(f"{'teacher':10s} {'params':>8s} {'fwd/batch':>10s} {'plain':>9s} {'ratio':>6s}  "
          "per-layer equivariance error (float64 | float32)")
    for r in rows:
        e64 = " ".join(f"{e:.1e}" for e in r["equivariance_error_float64"])
        e32 = " ".join(f"{e:.1e}" for e in r["equivariance_error_float32"])
        print(f"{r['teacher']:10s} {r['params']:8d} {r['forward_s'] * 1e3:8.1f}ms {r['plain_forward_s'] * 1e3:7.1f}ms "
              f"{r['ratio']:6.2f}  {e64} | {e32}")
        if "escnn_native_forward_s" in r:
            print(f"{'':10s} escnn-native forward {r['escnn_native_forward_s'] * 1e3:.1f}ms, uncached "
                  f"(re-expanding) {r['uncached_forward_s'] * 1e3:.1f}ms")
    write_json(args.out, {"batch": batch, "repeats": repeats, "threads": args.threads, "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
