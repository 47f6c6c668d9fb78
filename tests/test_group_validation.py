"""Group elements and sizes are validated with errors naming the argument, the group and the form.

Valid elements pass (and act like independent references); every kind of invalid element raises a
``ValueError`` from ``validate``/``act``/``compose``/``inverse``; ``validate=False`` and
``unchecked()`` skip the value checks but never the form checks; bad sizes fail at construction.
"""
import math

import numpy as np
import pytest
import torch

from symclone.groups import (get_group, orthogonality_tol, random_rotation, unchecked,
                             validation_enabled)

SO3_REFLECTION = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))


def _raises_everywhere(G, g, match, x=None, rep=None):
    """``g`` is rejected by validate, act (if ``x`` given), compose (both slots) and inverse."""
    with pytest.raises(ValueError, match=match):
        G.validate(g)
    if x is not None:
        with pytest.raises(ValueError, match=match):
            G.act(g, x, rep)
    e = G.identity
    with pytest.raises(ValueError, match=match):
        G.compose(g, e)
    with pytest.raises(ValueError, match=match):
        G.compose(e, g)
    with pytest.raises(ValueError, match=match):
        G.inverse(g)


# ---- valid elements act like independent references --------------------------------------------
def test_c4_valid_elements_match_rot90(gen):
    G = get_group("c4")
    x = torch.randn(4, 2, 5, 5, generator=gen)
    for k in [0, 1, 2, 3]:
        for g in (k, torch.tensor(k), torch.tensor(k, dtype=torch.int32), np.int64(k)):
            assert torch.equal(G.act(g, x), torch.rot90(x, k, dims=(-2, -1)))
    ks = torch.tensor([3, 0, 2, 1], dtype=torch.uint8)
    out = G.act(ks, x)
    for b in range(4):
        assert torch.equal(out[b], torch.rot90(x[b], int(ks[b]), dims=(-2, -1)))
    assert torch.equal(G.validate(ks), ks)
    assert G.validate(torch.zeros(0, dtype=torch.long)).shape == (0,)   # an empty batch is fine


def test_t2_and_p4_valid_elements_match_roll(gen):
    x = torch.randn(3, 1, 5, 5, generator=gen)
    t2, p4 = get_group("t2", size=5), get_group("p4", size=5)
    assert torch.equal(t2.act([4, 0], x), torch.roll(x, (4, 0), dims=(-2, -1)))
    g = torch.tensor([[0, 1, 2], [3, 4, 0], [2, 0, 4]])
    out = p4.act(g, x)
    for b in range(3):
        k, dy, dx = g[b].tolist()
        assert torch.equal(out[b], torch.roll(torch.rot90(x[b], k, dims=(-2, -1)), (dy, dx), dims=(-2, -1)))
    # without a grid size, t2 shifts are unbounded integers (taken mod the image size)
    assert torch.equal(get_group("t2").act(torch.tensor([-1, 7]), x), torch.roll(x, (-1, 7), dims=(-2, -1)))


def test_so2_valid_angles_match_rotation_matrix(gen):
    G = get_group("so2")
    x = torch.randn(2, 6, 2, generator=gen, dtype=torch.float64)
    theta = torch.tensor([0.3, -7.0], dtype=torch.float64)   # any finite real angle
    c, s = torch.cos(theta), torch.sin(theta)
    R = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    assert torch.allclose(G.act(theta, x, "points"), x @ R.transpose(-1, -2), atol=1e-12)
    assert torch.allclose(G.act(0.5, x, "points"), G.act(torch.tensor(0.5), x, "points"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_so3_o3_valid_rotations_match_matmul(gen, dtype):
    x = torch.randn(4, 5, 3, generator=gen, dtype=dtype)
    Q = random_rotation(4, gen).to(dtype)                      # float64 sample rounded to dtype
    for name in ("so3", "o3"):
        G = get_group(name)
        assert torch.allclose(G.act(Q, x, "points"), x @ Q.transpose(-1, -2))
        assert torch.allclose(G.act(Q[1], x, "points"), x @ Q[1].T)
    # o3 accepts det -1 (improper rotations); so3 does not
    Qm = -Q
    assert torch.allclose(get_group("o3").act(Qm, x, "points"), x @ Qm.transpose(-1, -2))
    with pytest.raises(ValueError, match=r"so3 .*det = -1 .*reflection"):
        get_group("so3").act(Qm, x, "points")


def test_sn_valid_permutations_match_reference(gen):
    G = get_group("sn", n=5)
    x = torch.randn(3, 5, 2, generator=gen)
    p = G.sample(3, gen).to(torch.int32)
    out = G.act(p, x, "set")
    for b in range(3):   # (g·x)_{p(j)} = x_j
        ref = torch.empty_like(x[b])
        ref[p[b].long()] = x[b]
        assert torch.equal(out[b], ref)
    assert torch.equal(G.compose(p[0], p[1]), p[0][p[1].long()])


def test_product_valid_elements_act_factorwise(gen):
    G = get_group("sn x o3", n=4)
    x = torch.randn(2, 4, 3, generator=gen, dtype=torch.float64)
    p, Q = G.sample(2, gen)
    ref = get_group("o3").act(Q, get_group("sn", n=4).act(p, x, "points"), "points")
    assert torch.allclose(G.act((p, Q), x, "points"), ref)
    assert torch.allclose(G.act([p, Q], x, "points"), ref)   # a list works like a tuple
    assert G.validate((p, Q))[0] is p


def test_composed_rotations_stay_valid(gen):
    """Long products of float32 rotations drift, but stay well inside the float32 tolerance."""
    G = get_group("so3")
    Q = G.sample(64, gen).float()
    acc = G.identity.float()
    for i in range(64):
        acc = G.compose(acc, Q[i])
    G.validate(acc)


# ---- invalid elements -------------------------------------------------------------------------
IMG = torch.zeros(3, 1, 4, 4)
PTS = torch.zeros(3, 4, 3, dtype=torch.float64)

INVALID = [
    # c4
    ("c4", {}, torch.tensor(1.5), r"c4 elements are integers 0\.\.3 .*float32 tensor .*= 1\.5", IMG, "image"),
    ("c4", {}, 1.0, r"c4 elements are integers 0\.\.3 .*float32", IMG, "image"),
    ("c4", {}, torch.tensor(True), r"c4 elements are integers .*bool", IMG, "image"),
    ("c4", {}, 4, r"c4 elements .*k = 4, outside 0\.\.3", IMG, "image"),
    ("c4", {}, -1, r"c4 elements .*k = -1, outside 0\.\.3", IMG, "image"),
    ("c4", {}, torch.tensor([0, 1, 7]), r"c4 .*element 2 of the batch with k = 7", IMG, "image"),
    ("c4", {}, torch.zeros(3, 2, dtype=torch.long), r"c4 elements .*shape \(3, 2\)", IMG, "image"),
    ("c4", {}, "1", r"c4 elements .*str", IMG, "image"),
    ("c4", {}, None, r"c4 elements .*NoneType", IMG, "image"),
    # t2 / p4 on a 4x4 grid
    ("t2", dict(size=4), torch.tensor([1.0, 2.0]), r"t2 elements are shifts .*float32", IMG, "image"),
    ("t2", dict(size=4), torch.tensor([1, 2, 3]), r"t2 elements .*shape \(3,\)", IMG, "image"),
    ("t2", dict(size=4), torch.tensor([4, 0]), r"t2 .*dy = 4, outside 0\.\.3", IMG, "image"),
    ("t2", dict(size=4), torch.tensor([[0, 0], [1, -1], [0, 0]]), r"t2 .*element 1 of the batch with dx = -1",
     IMG, "image"),
    ("p4", dict(size=4), torch.tensor([4, 0, 0]), r"p4 .*k = 4, outside 0\.\.3", IMG, "image"),
    ("p4", dict(size=4), torch.tensor([1, 0, 9]), r"p4 .*dx = 9, outside 0\.\.3", IMG, "image"),
    ("p4", dict(size=4), torch.tensor([1, 0]), r"p4 elements are integer triples .*shape \(2,\)", IMG, "image"),
    ("p4", dict(size=4), torch.tensor([1.0, 0, 0]), r"p4 elements .*float32", IMG, "image"),
    # so2
    ("so2", {}, torch.tensor(1), r"so2 elements are finite angles in radians \(floating point\).*int64",
     PTS[..., :2], "points"),
    ("so2", {}, torch.tensor(float("nan")), r"so2 .*angle nan", PTS[..., :2], "points"),
    ("so2", {}, torch.tensor([0.0, float("inf"), 1.0]), r"so2 .*element 1 of the batch with angle inf",
     PTS[..., :2], "points"),
    ("so2", {}, torch.zeros(3, 2), r"so2 elements .*shape \(3, 2\)", PTS[..., :2], "points"),
    # so3
    ("so3", {}, SO3_REFLECTION, r"so3 elements are rotation matrices \(orthogonal, det \+1\).*det = -1",
     PTS, "points"),
    ("so3", {}, 2 * torch.eye(3), r"so3 .*not orthogonal", PTS, "points"),
    ("so3", {}, torch.eye(3, dtype=torch.long), r"so3 elements .*floating point.*int64", PTS, "points"),
    ("so3", {}, torch.zeros(3, 3, 4), r"so3 elements .*shape \(3, 3, 4\)", PTS, "points"),
    ("so3", {}, torch.full((3, 3), float("nan")), r"so3 .*max \|QᵀQ - I\| = nan", PTS, "points"),
    ("so3", {}, torch.stack([torch.eye(3, dtype=torch.float64)] * 2 + [SO3_REFLECTION]),
     r"so3 .*element 2 of the batch with det = -1", PTS, "points"),
    # o3 accepts reflections but not non-orthogonal matrices
    ("o3", {}, torch.tensor([[1.0, 0.1, 0], [0, 1, 0], [0, 0, -1]]), r"o3 elements are orthogonal matrices .*"
     r"not orthogonal", PTS, "points"),
    ("o3", {}, torch.eye(2), r"o3 elements .*shape \(2, 2\)", PTS, "points"),
    # sn with n = 4
    ("sn", dict(n=4), torch.tensor([0, 0, 1, 2]), r"sn elements are permutations of 0\.\.3 .*"
     r"\[0, 0, 1, 2\] \(not a permutation of 0\.\.3\)", PTS, "points"),
    ("sn", dict(n=4), torch.tensor([0, 1, 2, 4]), r"sn .*not a permutation", PTS, "points"),
    ("sn", dict(n=4), torch.tensor([-1, 0, 1, 2]), r"sn .*not a permutation", PTS, "points"),
    ("sn", dict(n=4), torch.tensor([0.0, 1, 2, 3]), r"sn elements .*float32", PTS, "points"),
    ("sn", dict(n=4), torch.arange(5), r"sn elements .*shape \(4,\) or a batch \(B, 4\); got shape \(5,\)",
     PTS, "points"),
    ("sn", dict(n=4), torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2], [3, 3, 0, 1]]),
     r"sn .*element 2 of the batch = \[3, 3, 0, 1\]", PTS, "points"),
    # products validate every factor and name it
    ("sn x o3", dict(n=4), (torch.tensor([0, 0, 1, 2]), torch.eye(3)),
     r"\[0\] \(the sn factor of sn x o3\): sn elements .*not a permutation", PTS, "points"),
    ("sn x so3", dict(n=4), (torch.arange(4), SO3_REFLECTION), r"\[1\] \(the so3 factor of sn x so3\).*det = -1",
     PTS, "points"),
    ("sn x o3", dict(n=4), torch.eye(3), r"sn x o3 elements are tuples \(sn element, o3 element\); got a Tensor",
     PTS, "points"),
    ("sn x o3", dict(n=4), (torch.arange(4),), r"sn x o3 elements are tuples .*tuple of length 1", PTS, "points"),
    ("sn x o3", dict(n=4), (torch.arange(4).expand(3, 4), torch.eye(3).expand(2, 3, 3)),
     r"sn x o3 .*different batch sizes \(batch of 3, batch of 2\)", PTS, "points"),
]


@pytest.mark.parametrize("name,kw,g,match,x,rep", INVALID,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(INVALID)])
def test_invalid_elements_raise_naming_the_group(name, kw, g, match, x, rep):
    G = get_group(name, **kw)
    _raises_everywhere(G, g, match, x, rep)


def test_errors_name_the_argument():
    G = get_group("c4")
    with pytest.raises(ValueError, match=r"^g: c4 elements are integers 0\.\.3 of shape \(\) or a batch "
                                         r"\(B,\); got a float32 tensor of shape \(\) = 1\.5$"):
        G.act(torch.tensor(1.5), IMG)
    with pytest.raises(ValueError, match=r"^g\[0\] \(the sn factor of sn x o3\)"):
        get_group("sn x o3", n=4).act((torch.tensor([0, 0, 1, 2]), torch.eye(3)), PTS, "points")
    with pytest.raises(ValueError, match=r"^h: so3"):
        get_group("so3").validate(SO3_REFLECTION, name="h")
    with pytest.raises(ValueError, match=r"^a: c4"):
        G.compose(5, 1)
    with pytest.raises(ValueError, match=r"^b: c4"):
        G.compose(1, 5)
    with pytest.raises(ValueError, match=r"^a: c4"):
        G.inverse(torch.tensor(0.5))
    with pytest.raises(ValueError, match=r"a, b: cannot compose a batch of 2 c4 elements with a batch of 3"):
        G.compose(torch.tensor([0, 1]), torch.tensor([0, 1, 2]))


def test_trivial_rep_still_validates_the_element():
    with pytest.raises(ValueError, match="c4 elements"):
        get_group("c4").act(torch.tensor(2.5), torch.zeros(3, 10), "trivial")
    y = torch.zeros(3, 10)
    assert get_group("c4").act(torch.tensor(1), y, "trivial") is y


def test_float_tolerance_is_dtype_aware(gen):
    assert orthogonality_tol(torch.float32) == 1e-4 and orthogonality_tol(torch.float64) == 1e-10
    Q = random_rotation(3, gen)
    noisy = Q + 1e-6 * torch.randn(3, 3, 3, generator=gen, dtype=torch.float64)   # ~1e-6 off
    with pytest.raises(ValueError, match=r"so3 .*not orthogonal"):
        get_group("so3").validate(noisy)                 # far above the float64 tolerance ...
    get_group("so3").validate(noisy.float())              # ... but float32 rounding noise
    get_group("o3").validate(noisy.float())
    from symclone.groups import SO3
    SO3(tol=1e-4).validate(noisy)                         # an explicit tolerance overrides
    with pytest.raises(ValueError, match=r"so3 .*not orthogonal"):
        get_group("so3").validate(Q.float() * 1.001)      # a 0.2% scale is not float32 noise
    with pytest.raises(ValueError, match="tol: group 'so3'"):
        SO3(tol=0)


def test_validation_does_not_touch_autograd(gen):
    G = get_group("so3")
    Q = G.sample(2, gen).requires_grad_()
    x = torch.randn(2, 4, 3, generator=gen, dtype=torch.float64)
    G.act(Q, x, "points").sum().backward()
    assert torch.allclose(Q.grad, torch.einsum("bni,bnj->bij", torch.ones_like(x), x))


# ---- skipping value checks ---------------------------------------------------------------------
def test_validate_false_skips_value_checks_only():
    G, x = get_group("c4"), torch.randn(1, 1, 4, 4)
    # an out-of-range k is unchecked: it acts as k mod 4 (the caller vouched for it)
    assert torch.equal(G.act(5, x, validate=False), torch.rot90(x, 1, dims=(-2, -1)))
    assert int(G.compose(3, 5, validate=False)) == 0
    assert int(G.inverse(5, validate=False)) == 3
    # form checks (dtype, shape, batch) are free and stay on
    with pytest.raises(ValueError, match=r"c4 elements are integers .*float32"):
        G.act(torch.tensor(1.5), x, validate=False)
    with pytest.raises(ValueError, match="batch of 2 elements"):
        G.act(torch.tensor([0, 1]), x, validate=False)
    S = get_group("sn x o3", n=2)
    S.act((torch.tensor([0, 0]), 2 * torch.eye(3)), torch.zeros(1, 2, 3), "points", validate=False)


def test_unchecked_context_skips_value_checks_and_restores():
    G, x = get_group("so3"), torch.zeros(1, 2, 3)
    assert validation_enabled()
    with unchecked():
        assert not validation_enabled()
        G.act(2 * torch.eye(3), x, "points")
        G.inverse(SO3_REFLECTION)
        with unchecked():
            pass
        assert not validation_enabled()
        with pytest.raises(ValueError, match=r"so3 elements .*shape \(3, 4\)"):
            G.act(torch.zeros(3, 4), x, "points")   # form checks stay on
    assert validation_enabled()
    with pytest.raises(RuntimeError):
        with unchecked():
            raise RuntimeError("boom")
    assert validation_enabled()
    with pytest.raises(ValueError, match="not orthogonal"):
        G.act(2 * torch.eye(3), x, "points")


# ---- sizes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kw,match", [
    ("t2", dict(size=-3), r"size: group 't2' expects a positive int N or a pair \(H, W\).*-3"),
    ("t2", dict(size=0), r"size: group 't2'.*got 0"),
    ("t2", dict(size=28.5), r"size: group 't2'.*28\.5"),
    ("t2", dict(size=28.0), r"size: group 't2'.*28\.0"),
    ("t2", dict(size=True), r"size: group 't2'"),
    ("t2", dict(size="28"), r"size: group 't2'.*'28'"),
    ("t2", dict(size=(28,)), r"size: group 't2'.*got 1 entries \(28,\)"),
    ("t2", dict(size=(28, 28, 3)), r"size: group 't2'.*got 3 entries"),
    ("t2", dict(size=(28, -1)), r"size: group 't2'.*\(28, -1\)"),
    ("t2", dict(size=(28, 2.5)), r"size: group 't2'.*\(28, 2\.5\)"),
    ("p4", dict(size=-3), r"size: group 'p4'"),
    ("p4", dict(size=(4, 5)), r"size: group 'p4' needs a square grid"),
    ("sn", dict(n=0), r"n: group 'sn' expects a positive integer, got 0"),
    ("sn", dict(n=-2), r"n: group 'sn' expects a positive integer, got -2"),
    ("sn", dict(n=2.5), r"n: group 'sn' expects a positive integer, got 2\.5"),
    ("sn", dict(n=True), r"n: group 'sn' expects a positive integer, got a bool"),
    ("sn x o3", dict(n=0), r"n: group 'sn'"),
    ("p4 x sn", dict(size=0, n=3), r"size: group 'p4'"),
])
def test_bad_sizes_raise_at_construction(name, kw, match):
    with pytest.raises(ValueError, match=match):
        get_group(name, **kw)


def test_good_sizes():
    assert get_group("t2", size=3).order == 9
    assert get_group("t2", size=(2, 5)).order == 10
    assert get_group("t2", size=torch.Size([4, 4])).order == 16
    assert get_group("t2", size=[np.int64(3), 3]).order == 9
    assert get_group("p4", size=np.int32(3)).order == 36
    assert get_group("sn", n=np.int64(4)).order == 24
    assert get_group("t2").size is None and get_group("sn").n is None


# ---- wrong-shaped inputs to act ---------------------------------------------------------------
@pytest.mark.parametrize("name,kw,g,x,rep,match", [
    ("c4", {}, 0, torch.zeros(5, 5), "image", r"x: rep image expects .*\(B, C, H, W\), got shape \(5, 5\)"),
    ("c4", {}, 0, torch.zeros(1, 5, 5), "regular", r"x: rep regular expects .*\(B, F\*4, H, W\)"),
    ("so3", {}, torch.eye(3), torch.zeros(4, 3), "points", r"x: rep points expects .*\(B, N, 3\)"),
    ("so3", {}, torch.eye(3), torch.zeros(1, 4, 4), "points", r"needs 3D points \(B, N, 3\)"),
    ("sn x o3", dict(n=4), (torch.arange(4), torch.eye(3)), torch.zeros(4, 3), "points",
     r"x: rep points expects .*\(B, N, 3\)"),
    ("sn", dict(n=4), torch.arange(4), torch.zeros(1, 4, 2), "graph", r"\(B, N, N \+ d\)"),
    ("so2", {}, torch.tensor(0.1), torch.zeros(1, 4, 3), "points", r"so2 acts on 2D points \(B, N, 2\)"),
])
def test_wrong_shaped_inputs_name_the_expected_shape(name, kw, g, x, rep, match):
    with pytest.raises(ValueError, match=match):
        get_group(name, **kw).act(g, x, rep)


def test_sn_element_length_must_match_x_without_n():
    with pytest.raises(ValueError, match="axis 1"):
        get_group("sn").act(torch.arange(3), torch.zeros(1, 4, 2), "set")


def test_elements_and_samples_are_valid(gen):
    for name, kw in [("t2", dict(size=3)), ("c4", {}), ("p4", dict(size=3)), ("sn", dict(n=4)),
                     ("c4 x sn", dict(n=3))]:
        G = get_group(name, **kw)
        G.validate(G.elements())
        G.validate(G.sample(5, gen))
        G.validate(G.identity)
    for name in ("so2", "so3", "o3"):
        G = get_group(name)
        G.validate(G.sample(50, gen))
        G.validate(G.identity)
    assert math.isclose(float(get_group("so2").compose(torch.tensor(6.0), torch.tensor(1.0))), 7.0 - 2 * math.pi,
                        rel_tol=1e-6)
