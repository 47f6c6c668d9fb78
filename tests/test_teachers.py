"""Teachers: registry-parametrized equivariance of every layer, references, dense matrices,
functional params, checkpoints, bad input."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn

from symclone.io import CheckpointError
from symclone.registry import create_teacher, list_teachers
from symclone.equivariance import assert_equivariant, equivariance_error
from symclone.teachers import load_teacher, save_teacher

# small instances keep the suite fast; every registered teacher must appear here or build by default
SMALL = {
    "cnn": dict(channels=3, depth=2, size=8),
    "gcnn_c4": dict(fields=2, depth=2, size=8),
    "e3nn": dict(n_points=5, mul=4, depth=2),
}
CONV = [n for n in list_teachers() if n in ("cnn", "gcnn_c4")]


def _els(t, n: int = 6, seed: int = 0) -> list:
    """``n`` random group elements (finite translation groups are too large to enumerate here)."""
    g = t.group.sample(n, torch.Generator().manual_seed(seed))
    return [t.group.index(g, i) for i in range(n)]


_BUILT: dict = {}


def small(name: str, **kw):
    """A small teacher; built once per config and deep-copied (e3nn/escnn builds are slow)."""
    key = (name, tuple(sorted(kw.items())))
    if key not in _BUILT:
        _BUILT[key] = create_teacher(name, **{**SMALL.get(name, {}), **kw})
    return copy.deepcopy(_BUILT[key])


def _input(t, batch: int = 2, l: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *t.feature_shapes[l - 1], generator=g, dtype=torch.float64)


def test_registry_lists_all_teachers():
    assert {"cnn", "gcnn_c4", "e3nn"} <= set(list_teachers())
    with pytest.raises(ValueError, match="unknown teacher"):
        create_teacher("no_such_teacher")


@pytest.mark.parametrize("name", list_teachers())
def test_contract_shapes(name):
    t = small(name)
    L = t.num_layers
    assert len(t.reps) == L + 1 and len(t.feature_shapes) == L + 1
    feats = t.forward_features(_input(t).float())
    assert len(feats) == L
    for l, f in enumerate(feats, 1):
        assert tuple(f.shape[1:]) == tuple(t.feature_shapes[l])
        assert t.layer_params(l).shape == (t.num_layer_params(l),)
    assert t.activation in ("relu", "gate")
    # a float32 teacher evaluated on float64 input computes in float64 (usable by the float64 checker)
    h64 = _input(t)
    assert t.layer_forward(1, h64).dtype == torch.float64
    torch.testing.assert_close(t.layer_forward(1, h64).float(), t.layer_forward(1, h64.float()),
                               rtol=1e-4, atol=1e-5)
    assert torch.equal(t(_input(t).float()), feats[-1]) or t.head is not None


@pytest.mark.parametrize("name", list_teachers())
def test_every_layer_equivariant_float64(name):
    t = small(name).double()
    for l in range(1, t.num_layers + 1):
        f = lambda h, l=l: t.layer_forward(l, h)  # noqa: E731
        res = assert_equivariant(f, t.group, t.reps[l - 1], t.reps[l], x=_input(t, l=l, seed=l),
                                 elements=_els(t, seed=l))
        assert res["max"] < 1e-6, (l, res["max"])
    whole = lambda x: t.forward_features(x)[-1]  # noqa: E731
    assert_equivariant(whole, t.group, t.reps[0], t.reps[-1], x=_input(t), elements=_els(t, seed=9))


@pytest.mark.parametrize("name", list_teachers())
def test_unconstrained_control_fails(name):
    """Same shapes, parameters not tied by the group: the checker must reject it."""
    t = small(name).double()
    out_shape = t.feature_shapes[1]
    din = int(torch.tensor(t.feature_shapes[0]).prod())
    dout = int(torch.tensor(out_shape).prod())
    W = torch.randn(dout, din, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    control = lambda x: torch.relu(x.flatten(1) @ W.T).view(x.shape[0], *out_shape)  # noqa: E731
    els = _els(t)
    res = equivariance_error(control, t.group, t.reps[0], t.reps[1], x=_input(t), elements=els)
    assert res["max"] > 0.1
    with pytest.raises(AssertionError):
        assert_equivariant(control, t.group, t.reps[0], t.reps[1], x=_input(t), elements=els)


@pytest.mark.parametrize("name", list_teachers())
def test_layer_forward_params_matches_loaded_module(name):
    t = small(name).double()
    for l in range(1, t.num_layers + 1):
        h = _input(t, l=l, seed=3)
        P = t.sample_params(l, 3, generator=torch.Generator().manual_seed(l)).double()
        out = t.layer_forward(l, h, params=P)
        assert out.shape == (3, *h.shape[:1], *t.feature_shapes[l])
        out_k = t.layer_forward(l, h.unsqueeze(0).expand(3, *h.shape), params=P)
        # shared input: one conv with K·C_out channels; (K, B, ...) input: grouped conv -> equal up to rounding
        torch.testing.assert_close(out, out_k, rtol=1e-12, atol=1e-12)
        for k in range(3):
            u = copy.deepcopy(t)
            u.set_layer_params(l, P[k])
            torch.testing.assert_close(u.layer_params(l), P[k], rtol=0, atol=0)
            torch.testing.assert_close(out[k], u.layer_forward(l, h), rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(t.layer_forward(l, h, params=P[k]), out[k], rtol=1e-10, atol=1e-10)
        pre = t.layer_forward(l, h, params=P[0], pre_activation=True)
        assert (pre < 0).any()
    with pytest.raises(ValueError, match="params"):
        t.layer_forward(1, _input(t), params=torch.zeros(t.num_layer_params(1) + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="K=3"):
        t.layer_forward(1, _input(t).unsqueeze(0).expand(2, -1, -1, -1, *([-1] * (_input(t).ndim - 3))),
                        params=t.sample_params(1, 3).double())


@pytest.mark.parametrize("name", list_teachers())
def test_sample_params_follow_init(name):
    t = small(name, init_std=0.5) if name != "e3nn" else small(name)
    P = t.sample_params(1, 400, generator=torch.Generator().manual_seed(0))
    assert P.shape == (400, t.num_layer_params(1))
    if name != "e3nn":
        assert abs(float(P.std()) - 0.5) < 0.02
        assert abs(float(t.layer_params(1).std()) - 0.5) < 0.2


@pytest.mark.parametrize("name", list_teachers())
def test_checkpoint_round_trip_bit_for_bit(name, tmp_path):
    t = small(name)
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.01 * torch.randn_like(p))
    stem = tmp_path / "teacher"
    save_teacher(t, stem)
    u = load_teacher(stem)
    x = _input(t).float()
    for a, b in zip(t.forward_features(x), u.forward_features(x)):
        assert torch.equal(a, b)
    assert u.config == t.config


def test_checkpoint_corrupt_and_mismatched(tmp_path):
    t = small("cnn")
    stem = tmp_path / "t"
    save_teacher(t, stem)
    st, js = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    before = (st.read_bytes(), js.read_text())
    # mismatched config: more channels than the stored tensors (the metadata lives in the safetensors header)
    from _ckpt import edit_meta
    edit_meta(stem, lambda m: m["config"]["kwargs"].update(channels=5))
    with pytest.raises(CheckpointError, match="shape"):
        load_teacher(stem)
    st.write_bytes(before[0][:50])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_teacher(stem)
    with pytest.raises(CheckpointError):
        load_teacher(tmp_path / "missing")
    st.write_bytes(before[0])
    # a failed save (not a registered teacher) leaves the existing checkpoint untouched
    with pytest.raises(ValueError):
        save_teacher(nn.Linear(2, 2), stem)
    assert (st.read_bytes(), js.read_text()) == before
    load_teacher(stem)


@pytest.mark.parametrize("name", CONV)
def test_as_dense_equals_conv_on_basis_images(name):
    t = small(name).double()
    for l in range(1, t.num_layers + 1):
        k = t.kernel(l)
        C, H, W = t.feature_shapes[l - 1]
        basis = torch.eye(C * H * W, dtype=torch.float64).view(-1, C, H, W)
        ref = nn.Conv2d(C, k.shape[0], k.shape[-1], bias=False, padding=k.shape[-1] // 2,
                        padding_mode="circular").double()
        with torch.no_grad():
            ref.weight.copy_(k)
        cols = ref(basis).flatten(1).T
        torch.testing.assert_close(t.as_dense(l), cols, rtol=1e-12, atol=1e-12)
        # and the forward pass of the layer is that matrix
        x = _input(t, l=l)
        pre = t.layer_forward(l, x, pre_activation=True)
        torch.testing.assert_close((x.flatten(1) @ t.as_dense(l).T).view_as(pre), pre)


def test_cnn_roll_reference_and_paper_layer():
    t = small("cnn").double()
    x = _input(t)
    f = t.forward_features(x)
    for shift in [(1, 0), (3, 5), (7, 2)]:
        fr = t.forward_features(torch.roll(x, shift, dims=(-2, -1)))
        for a, b in zip(f, fr):
            torch.testing.assert_close(torch.roll(a, shift, dims=(-2, -1)), b, rtol=1e-12, atol=1e-12)
    p = create_teacher("cnn", paper_layer=True).double()
    assert p.feature_shapes == [(1, 28, 28), (1, 26, 26)] and p.num_layer_params(1) == 9
    assert p.padding == "valid" and p.kernel_size(1) == 3
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    y = p.layer_forward(1, x, pre_activation=True)
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, p.kernel(1)))
    # valid conv commutes with shifts away from the border: compare the interior
    y2 = p.layer_forward(1, torch.roll(x, (2, 3), dims=(-2, -1)), pre_activation=True)
    torch.testing.assert_close(y2[..., 5:20, 5:20], y[..., 3:18, 2:17])
    dense = p.as_dense(1)
    assert dense.shape == (676, 784)
    torch.testing.assert_close((x.flatten(1) @ dense.T).view_as(y), y)


def test_bad_input():
    t = small("cnn")
    with pytest.raises(ValueError, match=r"x: .*\(B, 1, 8, 8\)"):
        t.forward_features(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="l: layer index"):
        t.layer_forward(3, torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="padding"):
        create_teacher("cnn", padding="same")
    with pytest.raises(ValueError, match="kernel_size"):
        create_teacher("cnn", kernel_size=4)
    big = create_teacher("cnn", channels=2, depth=1)
    with pytest.raises(ValueError, match="28, 28"):
        big.forward_features(torch.randn(1, 1, 32, 32))


# ---------------------------------------------------------------------------------------------
# gcnn_c4: independent references (escnn itself, hand-written rot90 group convolution)

def test_gcnn_matches_escnn_forward_transform_and_export():
    from escnn import nn as enn

    t = small("gcnn_c4").double()
    G = t.gspace.fibergroup
    for l in range(1, t.num_layers + 1):
        h = _input(t, l=l, seed=10 + l)
        conv = t.escnn_layer(l)
        ref = torch.relu(conv(enn.GeometricTensor(h, t.field_types[l - 1])).tensor)
        ours = t.layer_forward(l, h)
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
        # equivariance with escnn's own group action (GeometricTensor.transform), not symclone's
        for k in range(1, 4):
            gh = enn.GeometricTensor(h, t.field_types[l - 1]).transform(G.element(k)).tensor
            lhs = t.layer_forward(l, gh)
            rhs = enn.GeometricTensor(ours, t.field_types[l]).transform(G.element(k)).tensor
            assert float((lhs - rhs).norm() / rhs.norm()) < 1e-6
            # symclone's c4 action agrees with escnn's convention
            torch.testing.assert_close(t.group.act(torch.tensor([k, 0, 0]), ours, t.reps[l]), rhs)
    # escnn's export() drops circular padding (docs/design.md §10); ours restores it
    x = _input(t)
    torch.testing.assert_close(t.export()(x), t.forward_features(x)[-1], rtol=1e-10, atol=1e-10)


def test_gcnn_filters_are_rotated_copies():
    """Hand-written G-CNN structure: K[f, r, c] = rot90^r K[f, 0, c] (lifting) and
    K[f, r, f', s] = rot90^r K[f, 0, f', s − r] (group conv)."""
    t = small("gcnn_c4").double()
    K1 = t.kernel(1).reshape(2, 4, 1, 3, 3)
    K2 = t.kernel(2).reshape(2, 4, 2, 4, 3, 3)
    for r in range(4):
        torch.testing.assert_close(K1[:, r], torch.rot90(K1[:, 0], r, dims=(-2, -1)), rtol=0, atol=1e-6)
        for s in range(4):
            torch.testing.assert_close(K2[:, r, :, s], torch.rot90(K2[:, 0, :, (s - r) % 4], r, dims=(-2, -1)),
                                       rtol=0, atol=1e-6)
    # the expansion is linear in the coefficients and the batched path equals the loop
    P = t.sample_params(2, 4, generator=torch.Generator().manual_seed(0)).double()
    loop = torch.stack([t.kernel(2, p) for p in P])
    torch.testing.assert_close(t.kernel(2, P), loop, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(t.kernel(2, P[0] + 2 * P[1]), loop[0] + 2 * loop[1])


def test_gcnn_bias_head_and_rot_invariant_logits():
    t = small("gcnn_c4", bias=True, num_classes=3).double()
    with torch.no_grad():
        for conv in t.convs:
            conv.bias.normal_()
    x = _input(t)
    logits = t(x)
    assert logits.shape == (2, 3)
    for k in range(1, 4):
        torch.testing.assert_close(t(torch.rot90(x, k, dims=(-2, -1))), logits, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(t(torch.roll(x, (k, 2 * k), dims=(-2, -1))), logits, rtol=1e-6, atol=1e-6)
    assert_equivariant(lambda h: t.layer_forward(2, h), t.group, "regular", "regular", x=_input(t, l=2),
                       elements=_els(t))


def test_gcnn_cache_follows_parameter_updates():
    t = small("gcnn_c4")
    x = _input(t).float()
    with torch.no_grad():
        y0 = t.forward_features(x)[-1]
        t.set_layer_params(2, t.layer_params(2) * 2)
        y1 = t.forward_features(x)[-1]
        torch.testing.assert_close(y1, 2 * y0)
        t.convs[0].weights.mul_(3)  # in-place update without set_layer_params
        torch.testing.assert_close(t.forward_features(x)[-1], 6 * y0)
    y = t.forward_features(x)[-1]  # with grad: differentiable expansion
    y.sum().backward()
    assert t.convs[0].weights.grad is not None and t.convs[0].weights.grad.abs().sum() > 0


def test_gcnn_bad_input():
    with pytest.raises(ValueError, match="square"):
        create_teacher("gcnn_c4", size=(8, 10))
    t = small("gcnn_c4")
    with pytest.raises(ValueError, match=r"x: .*\(B, 1, 8, 8\)"):
        t.forward_features(torch.randn(1, 1, 8, 10))
    with pytest.raises(ValueError, match="x: "):
        t.forward_features(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="kernel_size"):
        create_teacher("gcnn_c4", kernel_size=2)


# ---------------------------------------------------------------------------------------------
# e3nn: independent reference (e3nn's own D_from_matrix), n-body inputs, radius graphs

@pytest.mark.parametrize("kw", [dict(input="nbody"), dict(input="points", radius=1.5)])
def test_e3nn_d_from_matrix_reference(kw):
    from e3nn import o3

    t = small("e3nn", **kw).double()
    torch.manual_seed(0)
    Q = o3.rand_matrix(dtype=torch.float64)
    for parity in (1.0, -1.0):
        R = parity * Q
        perm = torch.randperm(t.n_points)
        for l in range(1, t.num_layers + 1):
            h = _input(t, l=l, seed=20 + l) * 1.5
            irr_in = o3.Irreps("1x1o" if t.reps[l - 1].kind == "points" else t.reps[l - 1].irreps)
            irr_out = o3.Irreps(t.reps[l].irreps)
            out = t.layer_forward(l, h)
            lhs = t.layer_forward(l, (h @ irr_in.D_from_matrix(R).T)[:, perm])
            rhs = (out @ irr_out.D_from_matrix(R).T)[:, perm]
            assert float((lhs - rhs).norm() / rhs.norm()) < 1e-8  # e3nn Wigner D: ~1e-9 in float64
    if kw.get("radius"):  # the radius graph really drops edges: a far point does not talk to the others
        x = torch.zeros(1, t.n_points, 3, dtype=torch.float64)
        x[0, :, 0] = torch.arange(t.n_points, dtype=torch.float64) * 10.0
        y = t.layer_forward(1, x)
        x2 = x.clone()
        x2[0, 0] += torch.tensor([0.0, 0.3, 0.0], dtype=torch.float64)
        torch.testing.assert_close(t.layer_forward(1, x2)[0, 1:, 3:], y[0, 1:, 3:])


def test_e3nn_nbody_output_and_bad_input():
    t = small("e3nn", input="nbody")
    assert str(t.reps[0]) == "irreps:1x1o+1x1o+1x0e" and t.feature_shapes[0] == (5, 7)
    assert t(torch.randn(2, 5, 7)).shape == (2, 5, 3)
    assert t.activation == "gate"
    with pytest.raises(ValueError, match=r"x: .*\(B, 5, 7\)"):
        t(torch.randn(2, 5, 3))
    p = small("e3nn")
    with pytest.raises(ValueError, match=r"x: .*points \(B, N, 3\).*\(B, 5, 3\)"):
        p(torch.randn(2, 5, 2))  # 2D points into the 3D teacher
    with pytest.raises(ValueError, match="x: "):
        p(torch.randn(2, 6, 3))
    with pytest.raises(ValueError, match="input"):
        create_teacher("e3nn", input="graph")
