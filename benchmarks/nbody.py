"""n-body benchmark: plain transformer vs. the same transformer symmetrized (S_n × O(3)) with each
sampler, the e3nn teacher, and a transformer cloned from the e3nn teacher then symmetrized.

Task (docs/design.md §5): from frame 30 (positions, velocities, charges) predict positions at frame 40;
3000 / 2000 / 2000 systems from ``symclone.data.nbody``. Test MSE is compared with the published
EGNN 0.0071 and LPS 0.004, and with two baselines on the same test set (``baselines``: no motion, and
constant-velocity extrapolation ``p + τ v`` with ``τ`` fitted by least squares on the training set).
Training budgets are epochs (``EPOCHS``: per model, about what 10 / 30 CPU-minutes bought on the
development machine with one torch thread), so the cosine schedule and the trained model do not depend
on the machine's speed; CPU seconds are measured and reported (``train_cpu_s``). ``--minutes`` adds an
optional CPU-time cap (a capped run depends on the machine, so published numbers do not use one). Each model's row keeps its
validation ``curve`` (``[epoch, cpu_seconds, train_loss, valid_mse]``, from which the suite derives the
time to a target MSE) and ``peak_bytes``, the memory peak of building, training and testing it
(``benchmarks._util.track_peak``: resident-set increase on CPU, allocator peak on CUDA).

    python -m benchmarks.nbody --quick                 # ~2 minutes, small data
    python -m benchmarks.nbody --models canonical,learned --resume
    python -m benchmarks.nbody --models learned --epochs 400     # one epoch budget for every model run
    python -m benchmarks.nbody --device cuda --precision bf16   # on a GPU (budgets are still CPU seconds
                                                                # of this process; train_wall_s is the wall time)
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
from torch import nn

from symclone.data.nbody import NBODY_REP_IN, NBodyConfig, nbody_tensors
from symclone.symmetrize import Symmetrized
from symclone.symmetrize._models import PairTransformer, ParticleTransformer
from symclone.symmetrize import Displacement
from symclone.symmetrize._train import TrainConfig, equivariance_vs_k, evaluate_mse, time_forward, train_regressor

from ._util import track_peak

PUBLISHED = {"EGNN": 0.0071, "LPS": 0.004}
MODELS = ("transformer", "uniform", "canonical", "learned", "e3nn", "cloned")


#: on/off options of the pair backbone: command-line flag (``--center`` ...) -> (PairTransformer keyword, help)
PAIR_SWITCHES = {
    "center": ("center", "token embedding sees centred positions"),
    "velocity_step": ("velocity_step", "predict p + tau v + residual"),
    "charge_pairs": ("charge_pairs", "charge product and clipped pair force as pair features"),
    "charge_flip": ("charge_flip_invariant", "exactly invariant to flipping every charge's sign"),
    "refine": ("refine", "each block re-reads pair features at its estimated output positions"),
    "edge_messages": ("edge_messages", "MPNN-style MLP messages on [h_i, h_j, e_ij] in every block"),
    "encounter": ("encounter", "straight-line closest-approach features of every pair"),
    "galilean": ("galilean", "exactly equivariant to a common velocity boost (sees v minus its mean)"),
}


def build(name: str, args) -> nn.Module:
    tf = dict(dim=args.dim, depth=args.depth, heads=4)
    if args.backbone == "pair":
        tf |= dict(dropout=args.dropout, frame_time=NBodyConfig().frame_time)
        tf |= {kwarg: getattr(args, flag) for flag, (kwarg, _) in PAIR_SWITCHES.items()}
    backbone = {"transformer": ParticleTransformer, "pair": PairTransformer}[args.backbone]
    if name == "transformer":
        return backbone(**tf)
    if name in ("uniform", "canonical", "learned"):
        return Symmetrized(backbone(**tf), "sn x o3", NBODY_REP_IN, "points", sampler=name,
                           k=args.k, k_eval=args.k_eval, group_kw={"n": 5},
                           **({"noise": args.noise} if name == "learned" else {}))
    if name == "e3nn":
        from symclone import create_teacher
        return Displacement(create_teacher("e3nn", input="nbody", n_points=5, mul=args.e3nn_mul,
                                           depth=3, lmax=1, init_std=1.0))
    if name == "cloned":
        return build_cloned(args)
    raise ValueError(f"--models: unknown model {name!r}; expected {MODELS}")


def build_cloned(args) -> nn.Module:
    """Clone a transformer student from a (task-trained) e3nn teacher, then symmetrize it."""
    from symclone import create_student
    from symclone.distill import DistillConfig, distill
    teacher = build("e3nn", args)
    ckpt = Path(args.out).with_suffix("").parent / "nbody_ckpt" / "e3nn"
    from symclone.io import checkpoint_exists
    if checkpoint_exists(ckpt):
        teacher.load_state_dict(best_weights(ckpt))
    x_tr, _ = nbody_tensors("train", size=args.size)
    student = create_student("transformer", teacher=teacher.net, dim=args.dim, depth=2)
    distill(student, teacher.net, x_tr, DistillConfig(**args.distill_cfg, device=args.device))
    return Symmetrized(Displacement(student), "sn x o3", NBODY_REP_IN, "points", sampler=args.cloned_sampler,
                       k=args.k, k_eval=args.k_eval, group_kw={"n": 5},
                       **({"noise": args.noise} if args.cloned_sampler == "learned" else {}))


def best_weights(stem: str | Path) -> dict:
    """The best-validation weights that ``train_regressor`` keeps in its checkpoint ``stem`` (a ``--resume`` run's
    ``nbody_ckpt/<model>``), as a state dict of the model."""
    from symclone.io import load_checkpoint
    tensors, _ = load_checkpoint(stem)
    prefix = "x/best."
    best = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not best:
        raise ValueError(f"checkpoint: {stem} holds no best weights (keys {prefix}*)")
    return best


def extrapolation_baselines(train: tuple, test: tuple) -> dict:
    """Test MSE of two model-free predictions of the positions at the output frame: ``static`` (``ŷ = p``) and
    ``linear`` (``ŷ = p + τ v``, with ``τ = Σ (y − p)·v / Σ v·v`` fitted on ``train``), the MSE being the mean
    over all coordinates as in ``evaluate_mse``."""
    (xtr, ytr), (xte, yte) = train, test
    p, v = xtr[..., :3].double(), xtr[..., 3:6].double()
    tau = float(((ytr.double() - p) * v).sum() / (v * v).sum().clamp_min(1e-30))
    pt, vt, yt = xte[..., :3].double(), xte[..., 3:6].double(), yte.double()
    return {"static_mse": float((pt - yt).pow(2).mean()), "linear_mse": float((pt + tau * vt - yt).pow(2).mean()),
            "linear_tau": tau}


def integrator_baselines(test: tuple, steps: tuple[int, ...] = (1, 4, 10, 50, 1000)) -> dict:
    """Test MSE of integrating the simulator's own clipped Coulomb law (``symclone.data.nbody.integrate``, its
    kick-drift scheme) from the input frame over the horizon ``T`` with ``M`` steps of ``T / M``, for each ``M`` in
    ``steps``: what knowing the physics buys without learning. ``M = T / dt`` (1,000) is the simulator itself, a
    control that must reproduce the targets up to the float32 rounding of the inputs."""
    import numpy as np

    from symclone.data.nbody import NBodyConfig, integrate
    x, y = (t.double().numpy() for t in test)
    T = NBodyConfig().frame_time
    out = {}
    for M in steps:
        cfg = NBodyConfig(dt=T / M, steps=3 * M, save_every=M, frame_in=0, frame_out=1)
        pred = integrate(x[..., :3], x[..., 3:6], x[..., 6], cfg)["loc"][:, 0]
        out[str(M)] = float(np.mean((pred - y) ** 2))
    return out


def error_concentration(pred: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Where the test MSE comes from: the share of the summed squared error held by the worst 1 / 5 / 10 % of
    systems, and the Pearson correlation of ``log`` per-system MSE with ``log`` of the system's smallest pair
    distance at the input frame (close encounters are where the dynamics is hard)."""
    err = (pred.double() - y.double()).pow(2).mean((1, 2))
    worst = err.sort(descending=True).values
    p = x[..., :3].double()
    dist = (p.unsqueeze(2) - p.unsqueeze(1)).norm(dim=-1) + torch.eye(p.shape[1], dtype=p.dtype) * 1e9
    logs = torch.stack([err.clamp_min(1e-30).log(), dist.amin((1, 2)).log()])
    share = lambda f: float(worst[:max(1, int(round(f * len(worst))))].sum() / worst.sum())
    return {"mse": float(err.mean()), "worst_1pct_share": share(0.01), "worst_5pct_share": share(0.05),
            "worst_10pct_share": share(0.10), "corr_log_error_log_min_distance": float(torch.corrcoef(logs)[0, 1])}


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """``model(x)`` in eval mode and batches, on the model's device, returned on the CPU."""
    dev = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)])


def run_model(name: str, data: dict, args, out_dir: Path) -> dict:
    with track_peak(args.device) as peak:
        row = _run_model(name, data, args, out_dir)
    row["peak_bytes"] = peak["bytes"]
    return row


#: default epoch budgets per model: about what 10 CPU-minutes (transformer, uniform, e3nn, cloned) or 30
#: (canonical, learned) bought in the recorded runs of docs/results.md (2-core development machine, one torch
#: thread, full data, k = 2); ``--epochs`` overrides them for every model, ``--quick`` scales them down
EPOCHS = {"transformer": 800, "uniform": 400, "e3nn": 300, "canonical": 1500, "learned": 1000, "cloned": 300}


def _run_model(name: str, data: dict, args, out_dir: Path) -> dict:
    torch.manual_seed(args.seed)
    t0 = time.time()
    model = build(name, args)
    build_s = time.time() - t0
    minutes = (args.minutes if name not in args.short else args.short_minutes) or None
    epochs = args.epochs or EPOCHS.get(name, 250)
    if args.quick:
        epochs = max(2, epochs // 50)
    cfg = TrainConfig(lr=args.lr, weight_decay=args.weight_decay, batch_size=args.batch, epochs=epochs, minutes=minutes,
                      eval_every=args.eval_every, seed=args.seed, progress=args.progress, device=args.device,
                      precision=args.precision, ema=args.ema)
    ckpt = str(out_dir / "nbody_ckpt" / name) if args.resume else None
    log = lambda st: logging.info("%s epoch %d cpu %.0fs valid %.5f", name, st["epoch"], st["cpu_seconds"],
                                  st["curve"][-1][3])
    st = train_regressor(model, data["train"], data["valid"], cfg, checkpoint=ckpt, on_eval=log)
    row = {"model": name, "valid_mse": st["best_valid"], "epochs": st["epoch"],
           "train_cpu_s": round(st["cpu_seconds"], 1), "train_wall_s": round(st["seconds"], 1),
           "build_s": round(build_s, 1), "curve": st["curve"], "device": args.device}
    if isinstance(model, Symmetrized):
        model.k_eval = args.k_test
    test_pred = predict(model, data["test"][0])          # one test forward: the MSE and where it comes from
    row["error_concentration"] = error_concentration(test_pred, *data["test"])
    row["test_mse"] = row["error_concentration"]["mse"]
    if isinstance(model, Symmetrized) and not model.exact:   # what fewer test-time samples cost
        row["test_mse_by_k"] = {}
        for k in sorted({1, 4, args.k_test}):
            model.k_eval = k
            torch.manual_seed(args.seed)
            row["test_mse_by_k"][str(k)] = evaluate_mse(model, *data["test"])
        model.k_eval = args.k_test
    xb = data["test"][0][:100].to(args.device)
    row["forward_s_per_100"] = time_forward(model, xb, repeats=3)
    if isinstance(model, Symmetrized):
        row["k_test"] = args.k_test
        row["equivariance"] = equivariance_vs_k(model, data["test"][0][:50], ks=(1, 4, 16))
    return row


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.nbody``."""
    from symclone.runtime import add_runtime_arguments

    p = argparse.ArgumentParser(prog="python -m benchmarks.nbody", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small data and budgets (~2-3 min)")
    p.add_argument("--models", default="transformer,uniform,canonical,learned,e3nn")
    p.add_argument("--minutes", type=float, default=0.0,
                   help="optional CPU-minute cap per model (0, the default: none; budgets are epochs)")
    p.add_argument("--short", default="transformer,uniform,e3nn", help="models capped by --short-minutes")
    p.add_argument("--short-minutes", type=float, default=0.0)
    p.add_argument("--epochs", type=int, default=0, help="epochs for every model (0: the per-model EPOCHS)")
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--backbone", default="pair", choices=("transformer", "pair"),
                   help="plain particle transformer, or with pair features (PairTransformer)")
    p.add_argument("--weight-decay", type=float, default=1e-12)
    p.add_argument("--dropout", type=float, default=0.0, help="pair backbone: dropout on block outputs")
    for flag, (_, help_text) in PAIR_SWITCHES.items():
        p.add_argument("--" + flag.replace("_", "-"), action="store_true", help="pair backbone: " + help_text)
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights per step (0: off)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--k", type=int, default=2, help="samples per input in training")
    p.add_argument("--k-eval", type=int, default=4, help="samples per input for validation")
    p.add_argument("--k-test", type=int, default=20, help="samples per input for the test MSE")
    p.add_argument("--noise", type=float, default=1.0, help="learned sampler: std of the input noise (0.1 / 0.3 / 1.0 / 3.0 probed; 1.0 best)")
    p.add_argument("--e3nn-mul", type=int, default=16)
    p.add_argument("--cloned-sampler", default="learned")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume", action="store_true", help="checkpoint each model and resume")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", default="results/nbody.json")
    add_runtime_arguments(p)  # --device cpu|cuda|auto (default auto), --precision fp32|bf16|tf32
    return p


def main(argv=None) -> int:
    from symclone.runtime import resolve_device

    p = build_parser()
    args = p.parse_args(argv)
    args.device = str(resolve_device(args.device))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    args.size = "small" if args.quick else "full"
    if args.quick:
        args.k_test = min(args.k_test, 8)
    args.short = set(args.short.split(","))
    args.distill_cfg = {"steps": 20 if args.quick else 400, "n_train": 256 if args.quick else 3000,
                        "n_eval": 64 if args.quick else 500, "progress": False}
    names = [m for m in args.models.split(",") if m]
    for m in names:
        if m not in MODELS:
            p.error(f"--models: unknown model {m!r}; expected some of {MODELS}")
    data = {s: nbody_tensors(s, size=args.size) for s in ("train", "valid", "test")}
    baselines = extrapolation_baselines(data["train"], data["test"])
    baselines["integrator_mse_by_steps"] = integrator_baselines(data["test"], (1, 4) if args.quick else (1, 4, 10, 50, 1000))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    prev = json.loads(out.read_text()) if (args.resume and out.exists()) else {"rows": []}
    done = {r["model"]: r for r in prev.get("rows", [])}
    for name in names:
        if args.resume and name in done:
            rows.append(done[name])
            continue
        try:
            rows.append(run_model(name, data, args, out.parent))
        except (ImportError, ValueError, TypeError, KeyError) as err:
            logging.warning("model %s skipped: %s", name, err)
            rows.append({"model": name, "error": str(err)})
        result = {"task": "nbody_small frame 30 -> 40", "size": args.size, "published": PUBLISHED,
                  "baselines": baselines,
                  "settings": {k: v for k, v in vars(args).items() if k not in ("short",)} | {"short": sorted(args.short)},
                  "rows": rows}
        from symclone.io import write_json
        write_json(out, result)
    print(f"{'model':12s} {'test MSE':>9s} {'valid MSE':>9s} {'epochs':>6s} {'train CPU s':>11s} {'fwd s/100':>9s}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:12s} skipped: {r['error']}")
            continue
        print(f"{r['model']:12s} {r['test_mse']:9.5f} {r['valid_mse']:9.5f} {r['epochs']:6d} "
              f"{r['train_cpu_s']:11.0f} {r['forward_s_per_100']:9.4f}")
    print(f"published: EGNN {PUBLISHED['EGNN']}, LPS {PUBLISHED['LPS']}; same test set: no motion "
          f"{baselines['static_mse']:.5f}, constant velocity {baselines['linear_mse']:.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
