"""Group axioms and action laws for every group, and independent references."""
import math

import pytest
import torch

from symclone.groups import get_group, list_groups, parse_rep

# (group name, kwargs, rep, per-sample input shape)
CASES = [
    ("t2", dict(size=(6, 5)), "image", (2, 6, 5)),
    ("t2", dict(size=6), "regular", (8, 6, 6)),
    ("c4", {}, "image", (2, 5, 5)),
    ("c4", {}, "regular", (8, 5, 5)),
    ("p4", dict(size=5), "image", (2, 5, 5)),
    ("p4", dict(size=6), "regular", (8, 6, 6)),
    ("so3", {}, "points", (5, 3)),
    ("so3", {}, "irreps:2x0e+1x1o+1x2e", (4, 10)),
    ("o3", {}, "points", (5, 3)),
    ("o3", {}, "irreps:1x0e+1x0o+1x1o+1x1e+1x2o", (4, 13)),
    ("sn", dict(n=5), "set", (5, 2)),
    ("sn", dict(n=5), "points", (5, 3)),
    ("sn", dict(n=4), "graph", (4, 6)),
    ("sn x o3", dict(n=5), "points", (5, 3)),
    ("sn x so3", dict(n=4), "irreps:1x0e+1x1o", (4, 4)),
    ("so2", {}, "points", (5, 2)),
]


def _close(a, b):
    return torch.allclose(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name,kw,rep,shape", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_action_laws(name, kw, rep, shape, gen):
    G = get_group(name, **kw)
    x = torch.randn(3, *shape, generator=gen, dtype=torch.float64)
    g, h = G.sample(3, gen), G.sample(3, gen)
    # batched elements: one per sample
    assert _close(G.act(g, G.act(h, x, rep), rep), G.act(G.compose(g, h), x, rep))
    assert _close(G.act(G.identity, x, rep), x)
    assert _close(G.act(G.inverse(g), G.act(g, x, rep), rep), x)
    # single element applied to the whole batch equals the batched action with that element repeated
    g0 = G.index(g, 0)
    rep_b = tuple(t.expand(3, *t.shape) for t in g0) if isinstance(g0, tuple) else g0.expand(3, *g0.shape)
    assert _close(G.act(g0, x, rep), G.act(rep_b, x, rep))


@pytest.mark.parametrize("name,kw", [("t2", dict(size=3)), ("c4", {}), ("p4", dict(size=3)), ("sn", dict(n=4))])
def test_finite_group_axioms(name, kw):
    G = get_group(name, **kw)
    els = G.elements()
    assert len(els) == G.order
    e = G.identity
    for i in range(0, len(els), max(1, len(els) // 7)):
        a = els[i]
        assert G.equal(G.compose(a, e), a) and G.equal(G.compose(e, a), a)
        assert G.equal(G.compose(a, G.inverse(a)), e)
        for j in range(0, len(els), max(1, len(els) // 5)):
            b = els[j]
            for c in els[:: max(1, len(els) // 3)]:
                assert G.equal(G.compose(G.compose(a, b), c), G.compose(a, G.compose(b, c)))
    # closure + distinctness: the orbit of a random image under all elements has |G| distinct images
    if name != "sn":
        x = torch.randn(1, 1, 3, 3, dtype=torch.float64)
        orbit = {tuple(G.act(g, x).flatten().tolist()) for g in els}
        assert len(orbit) == G.order


def test_product_elements_and_order():
    G = get_group("c4 x sn", n=3)
    assert G.order == 24
    els = G.elements()
    assert els[0].shape == (24,) and els[1].shape == (24, 3)


def test_image_actions_match_torch(gen):
    x = torch.randn(2, 3, 7, 7, generator=gen)
    c4, t2, p4 = get_group("c4"), get_group("t2", size=7), get_group("p4", size=7)
    for k in range(4):
        assert torch.equal(c4.act(torch.tensor(k), x), torch.rot90(x, k, dims=(-2, -1)))
    # elements are canonical shifts 0..H-1: 4 is -3 mod 7
    assert torch.equal(t2.act(torch.tensor([2, 4]), x), torch.roll(x, (2, -3), dims=(-2, -1)))
    g = torch.tensor([3, 1, 4])
    assert torch.equal(p4.act(g, x), torch.roll(torch.rot90(x, 3, dims=(-2, -1)), (1, 4), dims=(-2, -1)))
    # per-sample elements
    ks = torch.tensor([1, 3])
    out = c4.act(ks, x)
    for b in range(2):
        assert torch.equal(out[b], torch.rot90(x[b], int(ks[b]), dims=(-2, -1)))


def test_so2_quarter_turn_equals_rot90_and_is_approximate_otherwise(gen):
    G = get_group("so2")
    x = torch.randn(1, 1, 9, 9, generator=gen)
    assert torch.allclose(G.act(torch.tensor(math.pi / 2), x), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(G.act(torch.tensor(math.pi), x), torch.rot90(x, 2, dims=(-2, -1)), atol=1e-5)
    y = G.act(torch.tensor(0.3), x)
    assert y.shape == x.shape and not torch.allclose(y, x)


def test_regular_action_matches_escnn(gen):
    from escnn import gspaces
    from escnn import nn as enn

    r2 = gspaces.rot2dOnR2(4)
    ft = enn.FieldType(r2, [r2.regular_repr] * 3)
    x = torch.randn(2, 12, 6, 6, generator=gen)
    G = get_group("c4")
    for k in range(4):
        ref = enn.GeometricTensor(x, ft).transform(r2.fibergroup.element(k)).tensor
        assert torch.allclose(G.act(torch.tensor(k), x, "regular"), ref, atol=1e-6)
    # trivial fields (images) too
    ft0 = enn.FieldType(r2, [r2.trivial_repr] * 2)
    xi = x[:, :2]
    for k in range(4):
        ref = enn.GeometricTensor(xi, ft0).transform(r2.fibergroup.element(k)).tensor
        assert torch.allclose(G.act(torch.tensor(k), xi, "image"), ref, atol=1e-6)


def test_irreps_action_matches_e3nn(gen):
    from e3nn import o3

    irreps = "2x0e+1x1o+1x2e+1x1e"
    G = get_group("o3")
    Q = G.sample(4, gen)
    x = torch.randn(4, 3, o3.Irreps(irreps).dim, generator=gen, dtype=torch.float64)
    y = G.act(Q, x, f"irreps:{irreps}")
    torch.set_default_dtype(torch.float64)
    try:
        D = o3.Irreps(irreps).D_from_matrix(Q)
    finally:
        torch.set_default_dtype(torch.float32)
    assert torch.allclose(y, torch.einsum("bij,bnj->bni", D, x), atol=1e-12)
    # points rotate like the 1o irrep in e3nn's basis
    p = torch.randn(4, 5, 3, generator=gen, dtype=torch.float64)
    assert torch.allclose(G.act(Q, p, "points"), G.act(Q, p, "irreps:1x1o"), atol=1e-12)


def test_sn_graph_action_is_conjugation(gen):
    G = get_group("sn", n=5)
    A = (torch.rand(2, 5, 5, generator=gen) > 0.5).double()
    A = A + A.transpose(1, 2)
    X = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    g = G.sample(2, gen)
    P = torch.stack([torch.eye(5, dtype=torch.float64)[:, gi] for gi in g])  # P e_j = e_{g(j)}
    out = G.act(g, torch.cat([A, X], 2), "graph")
    assert torch.allclose(out, torch.cat([P @ A @ P.transpose(1, 2), P @ X], 2))


@pytest.mark.parametrize("call,match", [
    (lambda: get_group("z7"), "unknown group"),
    (lambda: parse_rep("vector"), "unknown representation"),
    (lambda: parse_rep("irreps:"), "irreps string"),
    (lambda: get_group("c4").act(0, torch.randn(1, 6, 5, 5), "regular"), "divisible by 4"),
    (lambda: get_group("c4").act(0, torch.randn(1, 1, 5, 6)), "square"),
    (lambda: get_group("c4").act(0, torch.randn(5, 5)), r"\(B, C, H, W\)"),
    (lambda: get_group("t2", size=28).act(torch.tensor([1, 1]), torch.randn(1, 1, 32, 32)), "28x28"),
    (lambda: get_group("c4").act(0, torch.randn(1, 5, 3), "points"), "does not act on rep points"),
    (lambda: get_group("so3").act(torch.eye(3), torch.randn(1, 5, 2), "points"), "3D points"),
    (lambda: get_group("so3").act(torch.eye(3), torch.randn(1, 5, 5), "irreps:1x1o"), "has dim 3"),
    (lambda: get_group("sn", n=4).act(torch.arange(4), torch.randn(1, 5, 2), "set"), "axis 1"),
    (lambda: get_group("c4").act(torch.tensor([1, 2, 3]), torch.randn(2, 1, 5, 5)), "batch of 3"),
    (lambda: get_group("t2").sample(2), "size"),
    (lambda: get_group("so2").elements(), "continuous"),
    (lambda: get_group("so3").act(torch.eye(3), torch.randn(1, 1, 3), "irreps:3x9q"), "invalid e3nn irreps"),
])
def test_bad_input_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_list_groups():
    assert {"t2", "c4", "p4", "so2", "so3", "o3", "sn"} <= set(list_groups())
