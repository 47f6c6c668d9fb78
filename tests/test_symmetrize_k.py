"""``k`` on finite groups: ``k`` samples per input unless the whole-group average is asked for
(``k="all"``) or is no more expensive (``|G| <= k``); the wrapper and the CLI say which was done."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from symclone.symmetrize import Symmetrized

F64 = torch.float64


class Counting(nn.Module):
    """Counts the rows (backbone evaluations) that reach the wrapped network."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.net(x)


def mlp(shape):
    d = math.prod(shape)
    return nn.Sequential(nn.Flatten(1), nn.Linear(d, 32), nn.Tanh(), nn.Linear(32, d), nn.Unflatten(1, tuple(shape)))


def rows_per_input(f: Symmetrized, x: torch.Tensor, **kw) -> float:
    f.model.rows = 0
    with torch.no_grad():
        f(x, **kw)
    return f.model.rows / x.shape[0]


def test_backbone_runs_k_times_per_input_unless_the_whole_group_is_chosen():
    torch.manual_seed(0)
    size, B = 8, 3                                                        # |p4 on 8x8| = 256
    net = Counting(mlp((1, size, size)))
    x = torch.randn(B, 1, size, size)
    sampled = Symmetrized(net, "p4", "image", "image", sampler="uniform", k=4, group_kw={"size": size})
    assert rows_per_input(sampled, x) == 4
    assert not sampled.exact and sampled.evaluations_per_input == 4
    assert sampled.averaging.startswith("4 sampled of 256 elements of p4")
    assert rows_per_input(sampled, x, k=2) == 2                          # the per-call override too
    whole = Symmetrized(net, "p4", "image", "image", sampler="uniform", k="all", group_kw={"size": size})
    assert rows_per_input(whole, x) == 256
    assert whole.exact and whole.evaluations_per_input == 256 and whole.averaging.startswith("all 256 elements")
    big_k = Symmetrized(net, "p4", "image", "image", sampler="uniform", k=300, group_kw={"size": size})
    assert rows_per_input(big_k, x) == 256 and big_k.exact              # |G| <= k: the cheaper exact average
    mixed = Symmetrized(net, "p4", "image", "image", sampler="uniform", k=4, k_eval="all", group_kw={"size": size})
    assert rows_per_input(mixed.train(), x) == 4 and not mixed.exact
    assert rows_per_input(mixed.eval(), x) == 256 and mixed.exact
    small = Symmetrized(net, "c4", "image", "image", sampler="uniform")  # default k = 10 >= |C4| = 4
    assert rows_per_input(small, x) == 4 and small.exact
    # control: the old behaviour evaluated every element whatever k said
    assert rows_per_input(sampled, x) != 256


def test_whole_group_average_is_exact_and_k_samples_are_not():
    torch.manual_seed(0)
    size = 4
    f = Symmetrized(mlp((1, size, size)), "p4", "image", "image", sampler="uniform", k="all",
                    group_kw={"size": size}).double()
    x = torch.randn(2, 1, size, size, dtype=F64)
    gx = torch.roll(torch.rot90(x, 1, (-2, -1)), (1, 3), (-2, -1))

    def err(**kw):
        y = torch.roll(torch.rot90(f(x, **kw), 1, (-2, -1)), (1, 3), (-2, -1))
        return float((f(gx, **kw) - y).norm() / y.norm())
    assert err() < 1e-12
    assert err(k=8) > 1e-3                                              # control: 8 samples of 64
    gen = lambda: torch.Generator().manual_seed(5)                     # noqa: E731
    assert torch.equal(f(x, k=8, generator=gen()), f(x, k=8, generator=gen()))   # reproducible draws
    assert not torch.equal(f(x, k=8), f(x, k=8))                       # ... and really random


def test_k_all_needs_a_finite_group_and_the_uniform_sampler():
    m = mlp((1, 6, 6))
    with pytest.raises(ValueError, match="k: 'all'"):
        Symmetrized(m, "c4", "image", "image", sampler="learned", k="all")
    with pytest.raises(ValueError, match="k_eval: 'all'"):
        Symmetrized(m, "c4", "image", "image", sampler="canonical", k=1, k_eval="all")
    with pytest.raises(ValueError, match="k: 'all'"):
        Symmetrized(mlp((5, 3)), "so3", "points", "points", sampler="uniform", k="all")
    with pytest.raises(ValueError, match="k: expected"):
        Symmetrized(m, "c4", "image", "image", k="every")
    f = Symmetrized(m, "c4", "image", "image", sampler="learned", k=2)
    with pytest.raises(ValueError, match="k: 'all'"):
        f(torch.randn(1, 1, 6, 6), k="all")
    # control: the same arguments on the uniform sampler over a finite group are accepted
    assert Symmetrized(m, "c4", "image", "image", sampler="uniform", k="all").exact


def test_cli_reports_sampled_versus_whole_group_averaging(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _ddp_jobs import make_sym_run

    from symclone.cli import main
    from symclone.io import read_json

    make_sym_run(tmp_path / "run")                                      # gcnn_c4 teacher: p4 on 8x8
    common = ["--sampler", "uniform", "--epochs", "0", "--n-train", "8", "--n-eval", "8", "--no-progress"]
    assert main(["symmetrize", str(tmp_path / "run"), "--k", "4"] + common) == 0
    out = capsys.readouterr().out
    assert "k 4" in out and "4 sampled of 256 elements of p4" in out
    m = read_json(tmp_path / "run" / "symmetrize" / "teacher-uniform-k4.json")
    assert m["evaluations_per_input"] == {"train": 4, "eval": 4} and not m["exact"]
    assert main(["symmetrize", str(tmp_path / "run"), "--k", "all"] + common) == 0
    out = capsys.readouterr().out
    assert "all 256 elements of p4 (exact group average" in out
    m = read_json(tmp_path / "run" / "symmetrize" / "teacher-uniform-kall.json")
    assert m["evaluations_per_input"] == {"train": 256, "eval": 256} and m["exact"]
    rows = {r["k"]: r["equivariance_error"] for r in m["equivariance_vs_k"]}
    assert rows["all"] < 1e-9 and rows[4] > 1e-3                      # exact vs sampled (control)
    with pytest.raises(SystemExit) as exc:                              # argparse: usage error, exit 2
        main(["symmetrize", str(tmp_path / "run"), "--k", "0"] + common)
    assert exc.value.code == 2 and "--k: expected a positive integer or 'all'" in capsys.readouterr().err
