"""Tests of symclone.analysis: Reynolds projection, kernel recovery, Toeplitz report, Lie
derivative, plots and the run analysis (issue 5)."""
from __future__ import annotations

import json
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from symclone.analysis import (analyze_models, lie_derivative, lie_generator, orientation_agreement, project,
                               recover_kernel, structure_residual, toeplitz_report)
from symclone.analysis import plots
from symclone.groups import get_group

D = torch.float64


def unrolled(kernel: torch.Tensor, H: int, padding: str) -> torch.Tensor:
    """Dense matrix of a cross-correlation from F.conv2d on basis images (independent reference)."""
    ci, k = kernel.shape[1], kernel.shape[-1]
    n = ci * H * H
    basis = torch.eye(n, dtype=kernel.dtype).view(n, ci, H, H)
    p, q = k // 2, (k - 1) // 2
    if padding == "circular":
        basis = F.pad(basis, (p, q, p, q), mode="circular")
    elif padding == "zeros":
        basis = F.pad(basis, (p, q, p, q))
    return F.conv2d(basis, kernel).reshape(n, -1).T.contiguous()


def escnn_lifting_dense(H: int, fields: int, seed: int = 0, regular_in: bool = False) -> torch.Tensor:
    """Dense matrix of an escnn C4 R2Conv (trivial or regular -> regular, circular padding)
    evaluated on basis images."""
    from escnn import gspaces, nn as enn

    torch.manual_seed(seed)
    gs = gspaces.rot2dOnR2(4)
    rin = [gs.regular_repr] if regular_in else [gs.trivial_repr]
    conv = enn.R2Conv(enn.FieldType(gs, rin), enn.FieldType(gs, fields * [gs.regular_repr]), 3, padding=1,
                      padding_mode="circular", bias=False).eval()
    ci = 4 if regular_in else 1
    n = ci * H * H
    with torch.no_grad():
        out = conv(enn.GeometricTensor(torch.eye(n).view(n, ci, H, H), conv.in_type)).tensor
    return out.reshape(n, -1).T.double().contiguous()


# ---- known answers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("padding", ["circular", "valid", "zeros"])
def test_unrolled_conv_residual_and_kernel(padding, gen):
    k = torch.randn(3, 2, 3, 3, dtype=D, generator=gen)
    H = 8
    W = unrolled(k, H, padding)
    out = (3, H - 2, H - 2) if padding == "valid" else (3, H, H)
    assert structure_residual(W, "t2", (2, H, H), out, padding=padding) < 1e-6
    kr, info = recover_kernel(W, (2, H, H), out, 3, padding=padding, return_info=True)
    assert float((kr - k).norm() / k.norm()) < 1e-6
    assert info["fit_residual"] < 1e-6
    # control: perturbing one entry off the diagonals is detected
    W2 = W.clone()
    W2[0, 35] += 1.0  # offset (4, 3): a diagonal with several entries, outside the 3x3 footprint
    assert structure_residual(W2, "t2", (2, H, H), out, padding=padding) > 1e-2


def test_paper_layer_5x5_single_channel(gen):
    k = torch.randn(1, 1, 5, 5, dtype=D, generator=gen)
    W = unrolled(k, 28, "valid")  # 576 x 784
    assert structure_residual(W, "t2", (1, 28, 28), (1, 24, 24)) < 1e-6
    assert float((recover_kernel(W, (1, 28, 28), (1, 24, 24), 5, padding="valid") - k).norm() / k.norm()) < 1e-6


@pytest.mark.parametrize("group,shape,expect", [
    ("t2", (1, 28, 28), math.sqrt(1 - 1 / 784)),
    ("c4", (1, 28, 28), math.sqrt(1 - 1 / 4)),
    ("p4", (1, 16, 16), math.sqrt(1 - 1 / 1024)),
])
def test_gaussian_residual(group, shape, expect, gen):
    n = math.prod(shape)
    W = torch.randn(n, n, dtype=D, generator=gen)
    r = structure_residual(W, group, shape, shape)
    assert abs(r - expect) / expect < 0.02, (r, expect)


def test_gaussian_residual_regular_fields(gen):
    W = torch.randn(8 * 36, 4 * 36, dtype=D, generator=gen)
    r = structure_residual(W, "c4", (4, 6, 6), (8, 6, 6), "regular", "regular")
    assert abs(r - math.sqrt(0.75)) / math.sqrt(0.75) < 0.02


# ---- fast paths against the generic group.act path (independent reference) ----------------------------

@pytest.mark.parametrize("group,ins,outs,ir,orr", [
    ("t2", (2, 4, 4), (3, 4, 4), "image", "image"),
    ("t2", (4, 3, 3), (4, 3, 3), "regular", "regular"),
    ("c4", (2, 5, 5), (3, 5, 5), "image", "image"),
    ("c4", (1, 5, 5), (8, 5, 5), "image", "regular"),
    ("c4", (4, 4, 4), (8, 4, 4), "regular", "regular"),
    ("c4", (1, 6, 6), (2, 4, 4), "image", "image"),
    ("p4", (1, 4, 4), (8, 4, 4), "image", "regular"),
    ("p4", (4, 3, 3), (4, 3, 3), "regular", "image"),
])
def test_fast_matches_generic(group, ins, outs, ir, orr, gen):
    W = torch.randn(math.prod(outs), math.prod(ins), dtype=D, generator=gen)
    fast = project(W, group, ins, outs, ir, orr)
    slow = project(W, group, ins, outs, ir, orr, method="generic")
    assert torch.allclose(fast, slow, atol=1e-12)
    # and the projection really is equivariant: W ρ_in(g) = ρ_out(g) W for every element
    G = get_group(group, size=ins[1:] if group != "c4" else None)
    x = torch.randn(3, *ins, dtype=D, generator=gen)
    for g in [G.index(G.elements(), i) for i in range(min(G.order, 20))]:
        lhs = (G.act(g, x, ir).flatten(1) @ fast.T).view(3, *outs)
        rhs = G.act(g, (x.flatten(1) @ fast.T).view(3, *outs), orr)
        assert torch.allclose(lhs, rhs, atol=1e-10)


def test_toeplitz_projection_is_least_squares_on_shift_basis(gen):
    H, Ho = 5, 3
    W = torch.randn(Ho * Ho, H * H, dtype=D, generator=gen)
    basis = []
    for dy in range(-(Ho - 1), H):
        for dx in range(-(Ho - 1), H):
            E = torch.zeros(Ho, Ho, H, H, dtype=D)
            for y in range(Ho):
                for x in range(Ho):
                    if 0 <= y + dy < H and 0 <= x + dx < H:
                        E[y, x, y + dy, x + dx] = 1
            basis.append(E.reshape(-1))
    B = torch.stack(basis, 1)
    ref = (B @ torch.linalg.lstsq(B, W.reshape(-1, 1)).solution).view_as(W)
    assert torch.allclose(project(W, "t2", (1, H, H), (1, Ho, Ho), padding="valid"), ref, atol=1e-12)


@pytest.mark.parametrize("args", [
    ("t2", (2, 5, 5), (2, 5, 5), "image", "image", None),
    ("t2", (1, 6, 6), (2, 4, 4), "image", "image", "valid"),
    ("c4", (4, 4, 4), (8, 4, 4), "regular", "regular", None),
    ("p4", (1, 5, 5), (4, 5, 5), "image", "regular", None),
    ("sn", (5, 2), (5, 3), "set", "set", None),
])
def test_projection_idempotent_and_self_adjoint(args, gen):
    group, ins, outs, ir, orr, padding = args
    A = torch.randn(math.prod(outs), math.prod(ins), dtype=D, generator=gen)
    B = torch.randn_like(A)
    R = lambda M: project(M, group, ins, outs, ir, orr, padding=padding)  # noqa: E731
    RA = R(A)
    assert torch.allclose(R(RA), RA, atol=1e-12)
    assert abs(float((RA * B).sum() - (A * R(B)).sum())) < 1e-9
    assert 0.05 < float(RA.norm() / A.norm()) < 0.99  # a proper projection, neither 0 nor identity


def test_generic_permutation_group_deepsets(gen):
    n = 6
    W = 0.7 * torch.eye(n, dtype=D) + 0.2 * torch.ones(n, n, dtype=D)
    assert structure_residual(W, "sn", (n,), (n,), "set", "set") < 1e-12
    R = project(torch.randn(n, n, dtype=D, generator=gen), "sn", (n,), (n,), "set", "set")
    off = R[~torch.eye(n, dtype=torch.bool)]
    assert torch.allclose(R.diagonal(), R.diagonal()[:1].expand(n)) and torch.allclose(off, off[:1].expand_as(off))


# ---- escnn C4 layers --------------------------------------------------------------------------------

def test_escnn_lifting_layer_residuals_and_orientations():
    H = 9
    W = escnn_lifting_dense(H, fields=2)  # (2*4*81, 81)
    for g in ("c4", "p4", "t2"):
        assert structure_residual(W, g, (1, H, H), (8, H, H), "image", "regular") < 1e-5
    # the wrong output rep (no orientation roll) breaks C4 equivariance
    assert structure_residual(W, "c4", (1, H, H), (8, H, H), "image", "image") > 0.3
    kr, info = recover_kernel(W, (1, H, H), (8, H, H), 3, group="c4", return_info=True)
    assert info["fit_residual"] < 1e-6 and info["orientation"]["rel_error"] < 1e-5
    assert orientation_agreement(torch.randn(8, 1, 3, 3, dtype=D))["rel_error"] > 0.5


def test_escnn_group_conv_regular_to_regular():
    W = escnn_lifting_dense(5, fields=1, regular_in=True)
    assert structure_residual(W, "p4", (4, 5, 5), (4, 5, 5), "regular", "regular") < 1e-5
    _, info = recover_kernel(W, (4, 5, 5), (4, 5, 5), 3, group="p4", in_rep="regular", return_info=True)
    assert info["orientation"]["rel_error"] < 1e-5


def test_plain_conv_is_t2_but_not_c4(gen):
    W = unrolled(torch.randn(2, 1, 3, 3, dtype=D, generator=gen), 9, "circular")
    assert structure_residual(W, "t2", (1, 9, 9), (2, 9, 9)) < 1e-12
    assert structure_residual(W, "c4", (1, 9, 9), (2, 9, 9)) > 0.3
    assert structure_residual(W, "p4", (1, 9, 9), (2, 9, 9)) > 0.3


# ---- Toeplitz report ----------------------------------------------------------------------------------

def test_toeplitz_report_with_data_support(gen):
    H = 10
    k = torch.randn(1, 1, 3, 3, dtype=D, generator=gen)
    W = unrolled(k, H, "valid").clone()
    support = torch.zeros(H, H, dtype=torch.bool)
    support[2:-2, 2:-2] = True  # an empty border, like MNIST
    W[:, ~support.reshape(-1)] = torch.randn(W.shape[0], int((~support).sum()), dtype=D, generator=gen)
    rep = toeplitz_report(W, (1, H, H), (1, H - 2, H - 2), 3, teacher_kernel=k, padding="valid", support=support)
    assert rep["residual"] > 0.3 and rep["kernel_rel_error"] > 0.05 and rep["footprint_energy"] < 0.7
    s = rep["support"]
    assert s["residual"] < 1e-10 and s["kernel_rel_error"] < 1e-10 and abs(s["footprint_energy"] - 1) < 1e-10
    assert abs(s["support_fraction"] - 0.36) < 1e-12 and s["kernel_cosine"] > 1 - 1e-12
    assert abs(1 / s["ipr"] - 1 / s["teacher_ipr"]) < 1e-9 and s["ipr"] > 0.1  # 9 weights per row
    dense = toeplitz_report(torch.randn(64, 100, dtype=D, generator=gen), (1, H, H), (1, 8, 8), 3, padding="valid")
    assert dense["ipr"] < 0.05 and dense["footprint_energy"] < 0.2


# ---- bad input --------------------------------------------------------------------------------------------

def test_bad_inputs_raise_with_shapes():
    W = torch.randn(10, 16)
    with pytest.raises(ValueError, match=r"\(16, 16\).*in_shape=\(1, 4, 4\).*\(10, 16\)"):
        structure_residual(W, "t2", (1, 4, 4), (1, 4, 4))
    with pytest.raises(ValueError, match="kernel_size.*4x4"):
        recover_kernel(torch.randn(16, 16), (1, 4, 4), (1, 4, 4), 5)
    with pytest.raises(ValueError, match=r"out_shape.*3x3 valid.*\(1, 4, 4\)"):
        recover_kernel(torch.randn(16, 16), (1, 4, 4), (1, 4, 4), 3, padding="valid")
    with pytest.raises(ValueError, match="does not act on rep image"):
        structure_residual(torch.randn(16, 16), "so3", (1, 4, 4), (1, 4, 4))
    with pytest.raises(ValueError, match="finite group"):
        structure_residual(torch.randn(16, 16), "so2", (1, 4, 4), (1, 4, 4))
    with pytest.raises(ValueError, match="divisible by 4"):
        structure_residual(torch.randn(48, 16), "c4", (1, 4, 4), (3, 4, 4), out_rep="regular")
    with pytest.raises(ValueError, match="square"):
        structure_residual(torch.randn(12, 12), "c4", (1, 3, 4), (1, 3, 4))
    with pytest.raises(ValueError, match="teacher_kernel"):
        toeplitz_report(torch.randn(16, 16), (1, 4, 4), (1, 4, 4), 3, teacher_kernel=torch.randn(2, 1, 3, 3))


# ---- Lie derivative ----------------------------------------------------------------------------------

def test_lie_derivative(gen):
    x = torch.randn(2, 1, 12, 12, dtype=D, generator=gen)
    conv = torch.nn.Conv2d(1, 3, 3, padding=1, padding_mode="circular").double()
    assert float(lie_derivative(conv, "translation_y", x).norm()) < 1e-10
    mlp = torch.nn.Linear(144, 144).double()
    f = lambda h: mlp(h.flatten(1)).view(2, 1, 12, 12)  # noqa: E731
    fx = f(x)
    assert float(lie_derivative(f, "translation_x", x).norm() / fx.norm()) > 0.1
    # the rotation generator is the derivative of the so2 action (finite differences, smooth image)
    r = torch.arange(33, dtype=D) - 16
    blob = torch.exp(-((r[:, None] - 4) ** 2 + (r[None, :] + 2) ** 2) / 8)[None, None]
    so2, eps = get_group("so2"), 1e-3
    fd = (so2.act(torch.tensor(eps, dtype=D), blob) - so2.act(torch.tensor(-eps, dtype=D), blob)) / (2 * eps)
    assert float((fd - lie_generator("rotation", blob)).norm() / fd.norm()) < 1e-2
    # a rotation-invariant functional of a smooth image vs a non-invariant one
    radial = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 50)
    inv = lie_derivative(lambda h: (h * radial).sum((-2, -1)), "rotation", blob, out_rep="trivial")
    non = lie_derivative(lambda h: (h * radial * (r[None, :] > 0)).sum((-2, -1)), "rotation", blob, out_rep="trivial")
    assert float(inv.abs().max()) < 1e-2 * float(non.abs().max())
    with pytest.raises(ValueError, match="generator"):
        lie_derivative(conv, "shear", x)


# ---- plots and the run analysis --------------------------------------------------------------------

def _exists(paths):
    return all(p.exists() and p.stat().st_size > 0 for p in paths) and {p.suffix for p in paths} == {".png", ".pdf"}


def test_plots_written(tmp_path, gen):
    W = unrolled(torch.randn(1, 1, 3, 3, generator=gen), 8, "valid")
    assert _exists(plots.plot_matrix_vs_toeplitz(W + 0.01, W, tmp_path / "a"))
    xs = [(f"rot {k}", torch.rot90(torch.randn(1, 8, 8, generator=gen), k, (-2, -1))) for k in range(4)]
    rows = {"teacher": [torch.randn(8, 8, 8) for _ in xs], "mlp": [torch.randn(8, 8, 8) for _ in xs]}
    assert _exists(plots.plot_feature_grid(xs, rows, tmp_path / "b", regular=True))
    assert _exists(plots.plot_blocks(torch.randn(7, 36, 64), tmp_path / "c", window=20))
    assert _exists(plots.plot_curves({"layer 1": [1, .5, .1]}, tmp_path / "d",
                                     equivariance={"student": 0.1, "teacher": 1e-7}))
    assert _exists(plots.plot_kernels(torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3), tmp_path / "e"))
    with pytest.raises(ValueError, match="feature maps"):
        plots.plot_feature_grid(xs, {"bad": rows["mlp"][:2]}, tmp_path / "f")


def _teacher_student():
    from symclone.registry import create_student, create_teacher
    teacher = create_teacher("cnn", channels=2, depth=1, size=8)
    student = create_student("mlp", teacher=teacher)
    with torch.no_grad():
        student.set_affine(1, teacher.as_dense(1).float())
    return teacher, student


def test_analyze_models_on_cloned_cnn(tmp_path):
    teacher, student = _teacher_student()
    res = analyze_models(teacher, student, tmp_path, metrics={"layers": [
        {"layer": 1, "loss_curve": [1.0, 0.1], "equivariance_error": {"teacher": 1e-8, "student": 1e-6}}]},
        plots=False)  # figures: see test_analyze_run_and_cli
    e = res["structure"]["layers"][0]
    assert e["residual"]["t2"] < 1e-6 and e["residual"]["c4"] > 0.1
    assert e["toeplitz"]["kernel_rel_error"] < 1e-6 and e["matrix_rel_error_vs_teacher"] < 1e-6
    assert e["lie_derivative"]["student"] < 1e-5
    untrained = analyze_models(teacher, type(student)(teacher=teacher, seed=3), tmp_path / "u", plots=False)
    assert untrained["structure"]["layers"][0]["residual"]["t2"] > 0.9


def test_analyze_run_and_cli(tmp_path, monkeypatch):
    from symclone.cli import main
    from symclone.io import write_json
    from symclone.students import load_student, save_student
    from symclone.teachers import load_teacher, save_teacher

    teacher, student = _teacher_student()
    run = tmp_path / "run1"
    run.mkdir()
    save_teacher(teacher, run / "teacher")
    save_student(student, run / "student")
    write_json(run / "config.json", {"teacher": teacher.config, "student": student.config, "mode": "function",
                                     "layers": [1]})
    write_json(run / "metrics.json", {"layers": [{"layer": 1, "feature_rel_error": 1e-7, "loss_curve": [1.0, 0.01],
                                                  "equivariance_error": {"teacher": 1e-8, "student": 1e-7}}]})
    try:
        import symclone.runs  # noqa: F401  (the real reader, when present)
    except ImportError:  # stand-in following the documented layout
        def load_run(path):
            from pathlib import Path
            p = Path(path)
            return types.SimpleNamespace(teacher=load_teacher(p / "teacher"), student=load_student(p / "student"),
                                         config=json.loads((p / "config.json").read_text()),
                                         metrics=json.loads((p / "metrics.json").read_text()), path=p)
        monkeypatch.setitem(sys.modules, "symclone.runs", types.SimpleNamespace(load_run=load_run))
    assert main(["analyze", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["layers"][0]["feature_rel_error"] == 1e-7  # kept
    assert metrics["structure"]["layers"][0]["residual"]["t2"] < 1e-6
    report = (run / "report.md").read_text()
    assert "| 1 |" in report and "![matrix_layer1](figures/matrix_layer1.png)" in report
    assert (run / "figures" / "matrix_layer1.pdf").stat().st_size > 0
    assert {"matrix_layer1.png", "kernels_layer1.png", "features.png", "curves.png"} <= \
        {p.name for p in (run / "figures").iterdir()}
    assert main(["analyze", str(tmp_path / "missing")]) == 2


def test_analyze_models_gcnn_blocks_and_transformer(tmp_path):
    from symclone.registry import create_student, create_teacher
    teacher = create_teacher("gcnn_c4", fields=1, depth=2, size=5)
    blocks = create_student("blocks", teacher=teacher)
    res = analyze_models(teacher, blocks, tmp_path, plots=False, support=None)["structure"]["layers"]
    assert [e["layer"] for e in res] == [1, 2] and res[1]["in_rep"] == "regular"
    for e in res:
        assert e["teacher_residual"]["p4"] < 1e-5 and e["residual"]["p4"] > 0.5  # untrained blocks
        assert "orientation_agreement" in e and "kernel_rel_error" in e["toeplitz"]
    tr = analyze_models(teacher, create_student("transformer", teacher=teacher), tmp_path, plots=False, support=None)
    assert all("note" in e and "residual" not in e for e in tr["structure"]["layers"])


def test_layer_structure_point_cloud_permutations(gen):
    from types import SimpleNamespace

    from symclone.analysis._structure import layer_structure

    class Dense:
        def __init__(self, W):
            self.W = W

        def dense_matrix(self, l, params=None):
            return self.W

    t = SimpleNamespace(feature_shapes=[(5, 3), (5, 4)], reps=["points", "irreps:1x1o+1x0e"], group=None)
    shared = torch.kron(torch.eye(5, dtype=D), torch.randn(4, 3, dtype=D, generator=gen))  # same map per point
    assert layer_structure(t, Dense(shared), 1)[0]["residual"]["sn"] < 1e-12
    assert layer_structure(t, Dense(torch.randn(20, 15, dtype=D, generator=gen)), 1)[0]["residual"]["sn"] > 0.5
