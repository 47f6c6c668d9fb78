"""Closed forms that scale ("correct by default"): function-mode ridge solves above the old 6,000-input
limit, enough samples for an exact fit, no silent Adam fallback (logged + recorded), memory-derived
limits with errors naming the size, and the sparse family closed form (probe, Gram joins, sparse blocks)."""
import json
import logging

import pytest
import torch
import torch.nn as nn

import symclone.memory as memory
from symclone.distill import distill, family_svd_solve, teacher_affine_maps
from symclone.distill._sparse_maps import probe_affine_maps
from symclone.groups import get_group, parse_rep
from symclone.registry import create_student, create_teacher
from symclone.students import load_student, save_student

from _distill_helpers import fast  # noqa: E402

WIDE = (1, 77, 78)  # 6006 inputs: above the old closed_form_max_dim of 6000


class WideTeacher(nn.Module):
    """Layer 1: a fixed linear map from 8x8 images to a wide (1, 77, 78) feature (identity activation, so
    the features span a 64-dim subspace); layer 2: a fixed dense map to 4 outputs + ReLU."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.A = nn.Parameter(torch.randn(77 * 78, 64, generator=g) / 8)
        self.W = nn.Parameter(torch.randn(4, 77 * 78, generator=g) / 78)
        self.b = nn.Parameter(torch.randn(4, generator=g))
        self.group = get_group("t2", size=8)
        self.reps = [parse_rep("image")] * 3
        self.feature_shapes = [(1, 8, 8), WIDE, (1, 2, 2)]
        self.num_layers = 2

    def layer_forward(self, l, h, params=None, pre_activation=False):
        if l == 1:
            return (h.flatten(1) @ self.A.T).reshape(-1, *WIDE)
        z = (h.flatten(1) @ self.W.T + self.b).reshape(-1, 1, 2, 2)
        return z if pre_activation else torch.relu(z)

    def forward_features(self, x):
        h1 = self.layer_forward(1, x)
        return [h1, self.layer_forward(2, h1)]


def _wide_cfg(**kw):
    # the wide layer's inputs span 64 dims: 128 samples determine it (no oversampling: keeps the test fast)
    return fast(n_train=64, closed_form_oversample=0, **kw)


def test_layer_above_old_limit_is_solved_in_closed_form_and_old_limit_control_falls_back(tmp_path, caplog):
    t = WideTeacher()
    s = create_student("mlp", teacher=t)
    assert s.in_dim(2) + 1 > 6000
    with caplog.at_level(logging.WARNING, logger="symclone.distill"):
        r = distill(s, t, "gaussian", _wide_cfg(), out=tmp_path / "cf")["layers"][1]
    assert r["solver"] == "closed_form" and "fallback_reason" not in r
    assert r["feature_rel_error"] <= 1e-3  # held-out inputs (hand check: ~1e-7)
    assert r["closed_form"]["unknowns"] == 6007 and r["closed_form"]["samples"] == 128
    assert not [rec for rec in caplog.records if "no closed-form solve" in rec.getMessage()]
    # control: the old default cap (6000) sends the same layer to Adam: logged, recorded, and not exact
    caplog.clear()
    s2 = create_student("mlp", teacher=t)
    with caplog.at_level(logging.WARNING, logger="symclone.distill"):
        m = distill(s2, t, "gaussian", _wide_cfg(closed_form_max_dim=6000, steps=30), out=tmp_path / "fb")
    assert m["layers"][0]["solver"] == "closed_form" and "fallback_reason" not in m["layers"][0]  # 65 inputs
    rec = m["layers"][1]
    assert rec["solver"] == "adam" and "closed_form_max_dim=6000" in rec["fallback_reason"]
    assert rec["feature_rel_error"] > 1e-3
    warned = [x for x in caplog.records if x.levelno == logging.WARNING and "no closed-form solve" in x.getMessage()]
    assert len(warned) == 1 and "closed_form_max_dim=6000" in warned[0].getMessage()
    on_disk = json.loads((tmp_path / "fb/metrics.json").read_text())["layers"][1]
    assert on_disk["solver"] == "adam" and on_disk["fallback_reason"] == rec["fallback_reason"]


def test_memory_limit_names_the_size(monkeypatch, caplog):
    t = WideTeacher()
    monkeypatch.setattr(memory, "available_memory_bytes", lambda device=None: 150_000_000)
    with pytest.raises(ValueError, match=r"closed form does not apply: the closed-form solve of layer 2 "
                                         r"\(normal equations 6007 x 6007 .*needs 6\d\d MB but only 120 MB"):
        distill(create_student("mlp", teacher=t), t, "gaussian", _wide_cfg(solver="closed_form"))
    with caplog.at_level(logging.WARNING, logger="symclone.distill"):
        r = distill(create_student("mlp", teacher=t), t, "gaussian", _wide_cfg(steps=2))["layers"]
    assert r[0]["solver"] == "closed_form"  # 65 x 65 normal equations (107 MB with the chunk buffers) fit
    assert r[1]["solver"] == "adam" and "needs" in r[1]["fallback_reason"] and "120 MB" in r[1]["fallback_reason"]
    assert any("no closed-form solve" in x.getMessage() for x in caplog.records)
    # the blocks student: dense blocks past the memory share go sparse; a layout that cannot fit is refused
    monkeypatch.setattr(memory, "available_memory_bytes", lambda device=None: 200_000_000)
    shapes, reps = [[2, 40, 40], [2, 40, 40]], ["image", "image"]
    s = create_student("blocks", feature_shapes=shapes, reps=reps, num_params=[36])
    assert s.config["kwargs"]["storage"] == ["sparse"] and s.storage(1) == "sparse"  # 1.47 GB > 200 MB / 8
    with pytest.raises(ValueError, match=r"blocks: layer 1 would need 1.47 GB for its dense blocks \(B x O x I = "
                                         r"36 x 3200 x 3200 float32\), but only 160 MB"):
        create_student("blocks", feature_shapes=shapes, reps=reps, num_params=[36], storage="dense")
    monkeypatch.setattr(memory, "available_memory_bytes", lambda device=None: 1_000_000)
    with pytest.raises(ValueError, match=r"would need 123 MB for its sparse blocks .* does not fit this machine"):
        create_student("blocks", feature_shapes=shapes, reps=reps, num_params=[36])


def test_closed_form_draws_enough_samples_and_underdetermined_control():
    """n_train=16 (32 orbit inputs) is fewer than layer 2's 73 unknowns: the default draws more inputs and
    is exact; with the old behaviour (closed_form_oversample=0) the solve is underdetermined and wrong."""
    t = create_teacher("cnn", channels=2, depth=2, size=6)
    r = distill(create_student("mlp", teacher=t), t, "gaussian", fast(n_train=16))["layers"]
    assert [x["solver"] for x in r] == ["closed_form"] * 2
    assert r[1]["closed_form"]["samples"] >= 1.25 * 73 and not r[1]["closed_form"]["underdetermined"]
    assert max(x["feature_rel_error"] for x in r) <= 1e-4
    old = distill(create_student("mlp", teacher=t), t, "gaussian", fast(n_train=16, closed_form_oversample=0))
    assert old["layers"][1]["closed_form"]["underdetermined"] and old["layers"][1]["feature_rel_error"] > 1e-2


@pytest.mark.parametrize("name,kw,l", [("cnn", dict(channels=2, depth=2, size=6, bias=True), 2),
                                       ("cnn", dict(channels=2, depth=1, size=7, padding="valid"), 1),
                                       ("gcnn_c4", dict(fields=1, depth=2, size=6), 2)])
def test_sparse_probe_matches_dense_probe(name, kw, l):
    t = create_teacher(name, **kw)
    T = teacher_affine_maps(t, l, 0.7)
    maps = probe_affine_maps(t, l, 0.7)
    assert maps.nnz < 0.5 * T.numel()
    torch.testing.assert_close(maps.to_dense(), T, rtol=1e-5, atol=1e-5 * float(T.abs().max()))


def _reference_blocks_error(T, M, B):
    """Independent reference (the pre-sparse algorithm): SVD of the whitened maps S_p = T_p L, M = L Lᵀ."""
    L = torch.linalg.cholesky(M + 1e-10 * torch.diagonal(M).mean() * torch.eye(M.shape[0], dtype=M.dtype))
    S = (T @ L).reshape(T.shape[0], -1)
    sig = torch.linalg.svdvals(S)
    return sig, float((sig[B:] ** 2).sum() / (sig ** 2).sum()) ** 0.5


def test_family_solve_matches_svd_reference_and_sparse_storage_matches_dense(tmp_path):
    t = create_teacher("cnn", channels=2, depth=2, size=6)
    x = torch.randn(64, *t.feature_shapes[1], generator=torch.Generator().manual_seed(1))
    T = teacher_affine_maps(t, 2, 1.0)
    X = torch.cat([torch.ones(64, 1), x.flatten(1)], 1).double()
    M = X.T @ X / 64
    sig_ref, err_ref = _reference_blocks_error(T, M, 10)
    sol = family_svd_solve(T, M, 10, 1, 2)
    torch.testing.assert_close(torch.tensor(sol["singular_values"], dtype=torch.float64), sig_ref, rtol=1e-7,
                               atol=1e-9 * float(sig_ref[0]))
    assert abs(sol["predicted_rel_error"] - err_ref) < 1e-7 and err_ref > 0.1
    # the same clone stored densely and sparsely: the same maps, exact for B = P, the predicted error for B < P
    errs = {}
    for storage in ("dense", "sparse"):
        for B in (36, 10):
            s = create_student("blocks", teacher=t, blocks=B, storage=storage)
            m = distill(s, t, "gaussian", fast(mode="family", eval_kernels=4))
            errs[storage, B] = [r["pre_activation_rel_error"] for r in m["layers"]]
            if storage == "sparse" and B == 36:
                save_student(s, tmp_path / "s")
                back = load_student(tmp_path / "s")
                k, h = torch.randn(3, 36), torch.randn(5, *t.feature_shapes[1])
                assert back.storage(2) == "sparse" and back.layers[1].nnz == s.layers[1].nnz
                torch.testing.assert_close(back.layer_forward(2, h, params=k), s.layer_forward(2, h, params=k))
                # structure: each exact block is one basis map (a shift: one entry per output pixel)
                assert s.layers[1].nnz == 36 * 36
    for B in (36, 10):
        assert errs["dense", B] == pytest.approx(errs["sparse", B], rel=1e-3, abs=1e-7)
    assert max(errs["sparse", 36]) < 1e-6 and min(errs["sparse", 10]) > 0.1


def test_sparse_c4_group_conv_family_clone():
    t = create_teacher("gcnn_c4", fields=1, depth=2, size=6)
    s = create_student("blocks", teacher=t, storage="sparse")
    r = distill(s, t, "gaussian", fast(mode="family", layers=(2,)))["layers"][0]
    assert r["solver"] == "closed_form" and r["closed_form"]["storage"] == "sparse"
    assert r["feature_rel_error"] < 1e-4 and r["equivariance_error_by_group"]["c4"]["student"] < 1e-3
    # a sparse layer cannot be trained by Adam: a clear error naming the dense size
    with pytest.raises(ValueError, match=r"stores its .* blocks sparsely \(dense they need"):
        distill(create_student("blocks", teacher=t, storage="sparse"), t, "gaussian",
                fast(mode="family", layers=(2,), solver="adam", steps=2))


# ---- function mode by probing the teacher's affine map (the 112 px function clone) ----------------
class SquareTeacher(nn.Module):
    """Control: a conv teacher whose layer-1 pre-activation adds ``0.1 x²`` (not affine in its input; on the
    0/1 probe inputs it looks affine, so only the verification on random inputs catches it)."""

    def __init__(self):
        super().__init__()
        self.inner = create_teacher("cnn", channels=1, depth=1, size=8, bias=True)
        self.feature_shapes, self.reps, self.activations = self.inner.feature_shapes, self.inner.reps, ["relu"]
        self.group, self.num_layers = self.inner.group, 1

    def layer_forward(self, l, h, pre_activation=False):
        z = self.inner.layer_forward(1, h, pre_activation=True) + 0.1 * h ** 2
        return z if pre_activation else torch.relu(z)


def test_probe_solve_equals_ridge_solve_and_teacher():
    from symclone.distill._function import fit_function_closed_form

    t = create_teacher("cnn", channels=2, depth=2, size=6, bias=True)
    x = torch.randn(200, *t.feature_shapes[0], generator=torch.Generator().manual_seed(0))
    h = torch.randn(16, *t.feature_shapes[0], generator=torch.Generator().manual_seed(1))
    for l, inp in ((1, x), (2, t.layer_forward(1, x))):
        probe, ridge = create_student("mlp", teacher=t), create_student("mlp", teacher=t)
        rp = fit_function_closed_form(probe, t, l, inp, 1e-7, method="probe")
        rr = fit_function_closed_form(ridge, t, l, inp, 1e-7, method="ridge")
        assert rp["closed_form"]["method"] == "probe" and rr["closed_form"]["method"] == "ridge"
        assert rp["solver"] == rr["solver"] == "closed_form" and rp["final_rel_error"] < 1e-6
        a, b = ([m.layers[l - 1].weight, m.layers[l - 1].bias[:, None]] for m in (probe, ridge))
        a, b = torch.cat(a, 1), torch.cat(b, 1)  # [W b]: layer 1's teacher bias is zero
        assert float((a - b).norm() / b.norm()) < 1e-5, l
        hl = h if l == 1 else t.layer_forward(1, h)
        zt = t.layer_forward(l, hl, pre_activation=True)
        assert float((probe.layer_forward(l, hl, pre_activation=True) - zt).norm() / zt.norm()) < 1e-6


def test_probe_is_the_default_for_large_layers_and_non_affine_falls_back(monkeypatch, caplog):
    import symclone.distill._solver as solver
    from symclone.distill._function import fit_function_closed_form

    t = create_teacher("cnn", channels=2, depth=2, size=6, bias=True)
    # small layers keep the ridge by default; with the threshold lowered every layer is probed, exactly
    r = distill(create_student("mlp", teacher=t), t, "gaussian", fast(n_train=16))["layers"]
    assert [x["closed_form"]["method"] for x in r] == ["ridge"] * 2
    monkeypatch.setattr(solver, "PROBE_MIN_UNKNOWNS", 10)
    r = distill(create_student("mlp", teacher=t), t, "gaussian", fast(n_train=16))["layers"]
    assert [x["closed_form"]["method"] for x in r] == ["probe"] * 2
    assert all("PROBE_MIN_UNKNOWNS" in x["closed_form"]["method_reason"] for x in r)
    assert max(x["feature_rel_error"] for x in r) <= 1e-5 and r[1]["closed_form"]["probe_entries"] > 0
    # control: a layer that is not affine in its input fails the probe's verification -> ridge, logged
    sq = SquareTeacher()
    s = create_student("mlp", teacher=sq)
    x = torch.randn(256, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with caplog.at_level(logging.WARNING, logger="symclone.distill"):
        rec = fit_function_closed_form(s, sq, 1, x, 1e-7, method="probe")
    cf = rec["closed_form"]
    assert cf["method"] == "ridge" and "reproduce" in cf["probe_failed"] and cf["method_reason"].startswith("probe")
    assert any("solving the ridge normal equations instead" in m.getMessage() for m in caplog.records)
    assert rec["final_rel_error"] > 1e-3  # the ridge fit of a non-affine map is not exact (nor claimed so)


def test_probe_memory_is_about_the_weights():
    """A 64 px layer (4097 unknowns: probed by default): the solve adds little beyond the student's 63 MB
    weight, where the ridge normal equations alone would take 2 · 4097² · 8 B = 269 MB."""
    from benchmarks._util import track_peak
    from symclone.distill._function import fit_function_closed_form

    t = create_teacher("cnn", channels=1, depth=1, kernel_size=3, padding="valid", bias=False, size=64)
    s = create_student("mlp", teacher=t)
    x = torch.randn(16, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    weight_bytes = s.layers[0].weight.numel() * 4
    with track_peak("cpu") as peak:
        rec = fit_function_closed_form(s, t, 1, x, 1e-7)
    assert rec["closed_form"]["method"] == "probe" and rec["closed_form"]["write"] == "in_place"
    if peak["bytes"] is not None:
        assert peak["bytes"] < 1.0 * weight_bytes, peak["bytes"]
    y = torch.randn(8, 1, 64, 64)
    zt = t.layer_forward(1, y, pre_activation=True)
    assert float((s.layer_forward(1, y, pre_activation=True) - zt).norm() / zt.norm()) < 1e-6
