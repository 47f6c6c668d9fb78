"""The fast grid-group actions of the symmetrization hot path against the implementation they
replaced and against torch's own ops, bit for bit; the cheap orbit canonicalizer's exact C4 equivariance.

* ``rot_roll_batched`` (quarter turns by block, shifts as row slices) equals the old masked ``rot90`` /
  materialised-index ``gather`` actions (copied below) and a per-sample loop of ``torch.rot90`` /
  ``torch.roll``, for random per-input draws of c4 / p4 / t2 on images, regular fields and extra axes —
  values and gradients.
* ``transform`` reading the ``B`` un-repeated inputs equals ``transform`` on the repeated batch.
* the orbit scores satisfy ``ℓ(rot90 x) = roll(ℓ(x), 1)`` exactly (``torch.equal``), so the canonical c4
  wrapper is exactly equivariant; control: a plain score net without the orbit is not.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from symclone.groups import get_group
from symclone.groups._image_ops import rot_roll_batched
from symclone.symmetrize import C4Sampler, GroupSample, Symmetrized, repeat_batch, transform
from symclone.symmetrize._action import reads_inputs
from symclone.symmetrize._scorenets import C4OrbitScores


# ----------------------------------------------------------------- the former implementation
def _old_roll_batched(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    B, H, W = x.shape[0], x.shape[-2], x.shape[-1]
    rows = (torch.arange(H)[None, :] - shift[:, :1]) % H
    cols = (torch.arange(W)[None, :] - shift[:, 1:2]) % W
    lead = (B,) + (1,) * (x.ndim - 3)
    out = torch.gather(x, -2, rows.view(*lead, H, 1).expand(*x.shape[:-2], H, W).contiguous())
    return torch.gather(out, -1, cols.view(*lead, 1, W).expand(*x.shape[:-2], H, W).contiguous())


def _old_rot90_batched(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    k = k % 4
    for r in range(4):
        mask = k == r
        if bool(mask.any()):
            out[mask] = torch.rot90(x[mask], r, dims=(-2, -1))
    return out


def _old_roll_orientations(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    B, C = x.shape[0], x.shape[1]
    xf = x.reshape(B, C // 4, 4, *x.shape[2:])
    idx = (torch.arange(4)[None, :] - k[:, None]) % 4
    idx = idx.view(B, 1, 4, *([1] * (x.ndim - 2))).expand_as(xf)
    return torch.gather(xf, 2, idx).reshape(x.shape)


def _old_act(name: str, g: torch.Tensor, x: torch.Tensor, regular: bool) -> torch.Tensor:
    if name == "t2":
        return _old_roll_batched(x, g)
    k = g if name == "c4" else g[:, 0]
    if regular:
        x = _old_roll_orientations(x, k)
    x = _old_rot90_batched(x, k)
    return x if name == "c4" else _old_roll_batched(x, g[:, 1:])


def _torch_loop(name: str, g: torch.Tensor, x: torch.Tensor, regular: bool) -> torch.Tensor:
    """Per sample with torch.rot90 / torch.roll (the independent reference)."""
    out = []
    for b in range(x.shape[0]):
        z = x[b]
        k = 0 if name == "t2" else int(g[b] if name == "c4" else g[b, 0])
        z = torch.rot90(z, k, (-2, -1))
        if regular:
            z = torch.roll(z.reshape(z.shape[0] // 4, 4, *z.shape[1:]), k, 1).reshape(z.shape)
        if name != "c4":
            t = g[b] if name == "t2" else g[b, 1:]
            z = torch.roll(z, (int(t[0]), int(t[1])), (-2, -1))
        out.append(z)
    return torch.stack(out)


CASES = [("c4", "image", (2, 6, 6)), ("c4", "regular", (8, 5, 5)), ("p4", "image", (1, 7, 7)),
         ("p4", "regular", (4, 6, 6)), ("p4", "image", (2, 3, 5, 5)), ("t2", "image", (3, 4, 6)),
         ("t2", "regular", (4, 5, 5))]


def _group(name: str, shape: tuple):
    return get_group(name) if name == "c4" else get_group(name, size=tuple(shape[-2:]) if name == "t2" else shape[-1])


@pytest.mark.parametrize("name,rep,shape", CASES)
def test_batched_action_equals_the_old_one_and_torch_ops(name, rep, shape):
    G = _group(name, shape)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, *shape, generator=gen)
    g = G.sample(64, gen)
    new = G.act(g, x, rep)
    assert torch.equal(new, _old_act(name, g, x, rep == "regular"))
    assert torch.equal(new, _torch_loop(name, g, x, rep == "regular"))
    # the gradient is the inverse permutation, exactly as autograd of the torch ops gives it
    w = torch.randn(new.shape, generator=gen)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (G.act(g, xa, rep) * w).sum().backward()
    (_torch_loop(name, g, xb, rep == "regular") * w).sum().backward()
    assert torch.equal(xa.grad, xb.grad)
    # control: another draw moves the values elsewhere
    assert not torch.equal(new, G.act(G.sample(64, gen), x, rep))


@pytest.mark.parametrize("name,rep,shape", CASES)
@pytest.mark.parametrize("inverse", [False, True])
def test_transform_from_unrepeated_inputs_equals_the_repeated_batch(name, rep, shape, inverse):
    G = _group(name, shape)
    gen = torch.Generator().manual_seed(1)
    B, k = 5, 3
    x = torch.randn(B, *shape, generator=gen, requires_grad=True)
    s = GroupSample(g=G.sample(k * B, gen), k=k)
    assert reads_inputs(G, s, rep)
    y = transform(G, s, x, rep, inverse=inverse)
    xr = x.detach().clone().requires_grad_(True)
    ref = transform(G, s, repeat_batch(xr, k), rep, inverse=inverse)  # the per-sample path
    gi = G.inverse(s.g) if inverse else s.g
    assert torch.equal(ref, _old_act(name, gi, repeat_batch(x.detach(), k), rep == "regular"))
    assert torch.equal(y, ref)
    w = torch.randn(y.shape, generator=gen)
    (y * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-6, atol=1e-6)  # sums over k in another order


def test_symmetrized_p4_random_draws_equal_the_old_path():
    """The whole uniform p4 forward (k random draws per input) against the old actions on the repeated batch."""
    size, B, k = 6, 4, 5
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(size * size, size * size), nn.Tanh(),
                        nn.Linear(size * size, size * size), nn.Unflatten(1, (1, size, size)))
    f = Symmetrized(mlp, "p4", "image", "image", sampler="uniform", k=k, group_kw={"size": size})
    x = torch.randn(B, 1, size, size)
    out = f(x, generator=torch.Generator().manual_seed(3))
    G = f.group
    g = G.sample(k * B, torch.Generator().manual_seed(3))  # the same draws
    y = mlp(_old_act("p4", G.inverse(g), repeat_batch(x, k), False))
    ref = _old_act("p4", g, y, False).view(k, B, 1, size, size).sum(0) * 1.0 / k
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


def test_candidate_weights_shortcut_equals_the_weighted_sum():
    """Without a gradient the straight-through sum Σ_m w_m c_m·x is the action of g; with one, constant
    candidate columns act unbatched — the same values."""
    G = get_group("c4")
    x = torch.randn(6, 1, 5, 5)
    r = torch.tensor([0, 1, 2, 3, 1, 2])
    logits = torch.randn(6, 4, requires_grad=True)
    soft = torch.softmax(logits, -1)
    w = torch.nn.functional.one_hot(r, 4).float() + (soft - soft.detach())
    s = GroupSample(g=r, k=1, candidate_weights=w, candidates=torch.arange(4).expand(6, 4))
    with torch.no_grad():
        fast = transform(G, s, x, "image", inverse=True)
    slow = transform(G, s, x, "image", inverse=True)
    assert slow.requires_grad
    assert torch.equal(fast, slow.detach())
    assert torch.equal(fast, _torch_loop("c4", (-r) % 4, x, False))


# ---------------------------------------------------------------------------- the orbit canonicalizer
def _rot_fields(x: torch.Tensor, r: int, regular: bool) -> torch.Tensor:
    y = torch.rot90(x, r, (-2, -1))
    return y.reshape(x.shape[0], -1, 4, *x.shape[2:]).roll(r, 2).reshape(x.shape) if regular else y


@pytest.mark.parametrize("regular,channels,size,grid", [(False, 1, 28, 7), (False, 2, 9, 4), (True, 8, 6, 3)])
def test_orbit_scores_are_exactly_c4_equivariant(regular, channels, size, grid):
    torch.manual_seed(0)
    net = C4OrbitScores(channels, hidden=16, grid=grid, regular_input=regular)
    x = torch.randn(300, channels, size, size)
    with torch.no_grad():
        base = net(x)
        for r in (1, 2, 3):
            assert torch.equal(net(_rot_fields(x, r, regular)), base.roll(r, -1))
    smp = C4Sampler("c4", in_channels=channels, hidden=16, grid=grid, regular_input=regular, deterministic=True)
    g = smp.sample(x, 1).g
    assert torch.equal(smp.sample(_rot_fields(x, 1, regular), 1).g, (g + 1) % 4)


def test_canonical_c4_default_is_the_orbit_and_exactly_equivariant_with_a_failing_control():
    size = 8
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(size * size, size * size), nn.Tanh(),
                          nn.Linear(size * size, size * size), nn.Unflatten(1, (1, size, size)))
    f = Symmetrized(model, "c4", "image", "image", sampler="canonical").eval()
    assert isinstance(f.sampler.net, C4OrbitScores)
    x = torch.randn(500, 1, size, size)
    with torch.no_grad():
        for r in (1, 3):
            assert torch.equal(f(torch.rot90(x, r, (-2, -1))), torch.rot90(f(x), r, (-2, -1)))

        class Plain(nn.Module):  # control: four logits from the unrotated image, no orbit
            def __init__(self):
                super().__init__()
                self.in_channels = 1
                self.lin = nn.Linear(size * size, 4)

            def forward(self, z):
                return self.lin(z.flatten(1))

        f.sampler.net = Plain()
        g = f.sampler.sample(x, 1).g
        agree = (f.sampler.sample(torch.rot90(x, 1, (-2, -1)), 1).g == (g + 1) % 4).float().mean()
        assert agree < 0.5, float(agree)
        assert not torch.allclose(f(torch.rot90(x, 1, (-2, -1))), torch.rot90(f(x), 1, (-2, -1)), atol=1e-3)


def test_sampler_nets_options():
    assert isinstance(C4Sampler("c4", deterministic=True).net, C4OrbitScores)
    assert type(C4Sampler("c4", deterministic=True, net="escnn").net).__name__ == "C4Net"
    assert type(C4Sampler("c4").net).__name__ == "C4Net"                          # learned: escnn
    assert isinstance(C4Sampler("c4", net="orbit").net, C4OrbitScores)
    assert type(C4Sampler("p4", size=4, deterministic=True).net).__name__ == "C4Net"
    with pytest.raises(ValueError, match="p4 needs net='escnn'"):
        C4Sampler("p4", size=4, net="orbit")
    with pytest.raises(ValueError, match="layers, kernel_size"):
        C4Sampler("c4", deterministic=True, kernel_size=3)
    with pytest.raises(ValueError, match="grid"):
        C4Sampler("c4", net="escnn", grid=4)
    with pytest.raises(ValueError, match="net"):
        C4Sampler("c4", net="cnn")
    with pytest.raises(ValueError, match="odd quarter turns"):
        rot_roll_batched(torch.zeros(2, 1, 3, 4), torch.tensor([1, 0]), None)
