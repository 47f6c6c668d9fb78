"""The fused canonical O(3) / S_n × O(3) frame path equals the previous computation.

Checked against references kept here: ``PointNet.features`` (the unfused message network over all N²
pairs with the diagonal masked), the previous ``FrameSampler`` sample (features, principal frame,
permutation), the batched-matmul permutation of ``permute_by_matrix`` and the per-block O(3) action on
irreps. Control: an identity "frame" makes the same wrapper non-equivariant, so the equivariance check
below can fail.
"""
from __future__ import annotations

import pytest
import torch

from symclone.groups import act_o3, get_group, irreps_blocks
from symclone.symmetrize import FrameSampler, GroupSample, PairTransformer, PointNet, Symmetrized, transform
from symclone.symmetrize import _frames
from symclone.symmetrize._frames import point_features
from symclone.symmetrize._perm import permutation_entropy, straight_through_permutation

F64 = torch.float64
NBODY = "irreps:1x1o+1x1o+1x0e"


def reference_sample(smp: FrameSampler, x: torch.Tensor):
    """``(p, Q)`` of a canonical principal-frame sampler as computed before the fused path (unfused features)."""
    xk = x.to(F64)
    h, u = smp.net.features(xk)
    rel = smp.net.relative(u.to(h.dtype))
    E = _frames.principal_axes(rel.flatten(1, 2), proper=False)
    M = torch.eye(3, dtype=h.dtype) + smp.rotation(h.mean(dim=1)).view(-1, 3, 3)
    Q = (E @ _frames.gram_schmidt(M, proper=True)).to(x.dtype)
    p, P, P_soft = straight_through_permutation(smp.net.scores(h), smp.tau, smp.iters)
    return p, Q, smp.entropy_weight * permutation_entropy(P_soft)


@pytest.mark.parametrize("rep,D", [(NBODY, 7), ("points", 3), ("irreps:2x1o+1x0e+1x1e+1x0o", 14)])
@pytest.mark.parametrize("N", [1, 2, 5])
def test_point_features_equal_pointnet_features_with_gradients(rep, D, N):
    torch.manual_seed(0)
    net = PointNet(rep, n_vectors=0, relative=True)
    x = torch.randn(6, N, D, dtype=F64, requires_grad=True)
    h0, u0 = net.features(x)
    g0 = torch.autograd.grad(h0.square().sum(), [x, *net.parameters()], allow_unused=True)
    h1, u1 = point_features(net, x)
    g1 = torch.autograd.grad(h1.square().sum(), [x, *net.parameters()], allow_unused=True)
    assert torch.equal(u0, u1)
    torch.testing.assert_close(h1, h0, rtol=1e-13, atol=1e-15)
    for a, b in zip(g1, g0):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("group", ["o3", "sn x o3"])
def test_fused_sample_equals_the_previous_frame_computation(group):
    torch.manual_seed(0)
    f = Symmetrized(PairTransformer(dim=16, depth=1, heads=2), group, NBODY, "points", sampler="canonical",
                    group_kw={"n": 5} if group.startswith("sn") else None).eval()
    x = f.centering.split(torch.randn(200, 5, 7))[0]
    with torch.no_grad():
        s = f.sampler.sample(x, 1)
        p_ref, Q_ref, aux_ref = reference_sample(f.sampler, x)
    Q = s.g[1] if isinstance(s.g, tuple) else s.g
    torch.testing.assert_close(Q, Q_ref, rtol=0, atol=1e-6)       # float32 elements of a float64 frame
    if isinstance(s.g, tuple):
        assert torch.equal(s.g[0], p_ref)
        assert torch.equal(s.perm_matrix, torch.nn.functional.one_hot(p_ref, 5).transpose(1, 2).float())
        torch.testing.assert_close(s.aux_loss, aux_ref.float(), rtol=1e-3, atol=1e-15)   # ≈ −2e-13 both


def test_hard_permutation_and_merged_o3_blocks_equal_the_matmul_forms():
    torch.manual_seed(0)
    G = get_group("sn x o3", n=5)
    p = torch.argsort(torch.rand(8, 5), dim=1)
    P = torch.nn.functional.one_hot(p, 5).transpose(1, 2).float()
    Q = G.factors[1].sample(8).float()
    s = GroupSample(g=(p, Q), k=1, perm_matrix=P)
    x = torch.randn(8, 5, 7)
    for inverse in (False, True):
        Pm = P.transpose(1, 2) if inverse else P
        Qm = Q.transpose(1, 2) if inverse else Q
        px = Pm @ x
        ref = torch.cat([px[..., :3] @ Qm.transpose(1, 2), px[..., 3:6] @ Qm.transpose(1, 2), px[..., 6:]], -1)
        assert torch.equal(transform(G, s, x, NBODY, inverse=inverse), ref)
    # merged runs of equal irreps: the same numbers as one matmul per block
    for irreps in ("1x1o+1x1o+1x0e", "1x1o+2x1o", "1x1e+1x1e+1x0o+1x0o+1x1o"):
        xi = torch.randn(8, 5, sum(m * (2 * l + 1) for _, m, l, _ in irreps_blocks(irreps)))
        det = torch.linalg.det(Q)[:, None, None]
        parts = []
        for start, mul, l, par in irreps_blocks(irreps):
            seg = xi[..., start:start + mul * (2 * l + 1)]
            if l == 1:
                seg = (seg.unflatten(-1, (mul, 3)) @ Q.transpose(1, 2)[:, None]).flatten(-2)
            parts.append(seg * det if (l == 0) == (par == -1) else seg)
        torch.testing.assert_close(act_o3(Q, xi, "irreps:" + irreps), torch.cat(parts, -1), rtol=1e-6, atol=1e-6)


class _IdentityFrame(FrameSampler):
    """Control: the canonical sampler with its frame replaced by the identity (not equivariant)."""

    def frame_of(self, h, u):
        return torch.eye(3, dtype=h.dtype).expand(h.shape[0], 3, 3)


def _worst_error(f, x: torch.Tensor, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    Q, R = torch.linalg.qr(torch.randn(x.shape[0], 3, 3, generator=gen, dtype=F64))
    Q = Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)
    perm = torch.argsort(torch.rand(*x.shape[:2], generator=gen), dim=1)
    xd = x.double()
    gx = torch.cat([xd[..., :3] @ Q.transpose(1, 2), xd[..., 3:6] @ Q.transpose(1, 2), xd[..., 6:]], -1)
    gx = torch.gather(gx, 1, perm[..., None].expand(-1, -1, 7)).float()
    with torch.no_grad():
        y, y_g = f(x).double(), f(gx).double()
    g_y = torch.gather(y @ Q.transpose(1, 2), 1, perm[..., None].expand(-1, -1, 3))
    return float(((y_g - g_y).flatten(1).norm(dim=1) / g_y.flatten(1).norm(dim=1)).max())


def test_fused_canonical_pair_transformer_is_exact_and_an_identity_frame_is_not():
    torch.manual_seed(0)
    model = PairTransformer(dim=16, depth=1, heads=2)
    f = Symmetrized(model, "sn x o3", NBODY, "points", sampler="canonical", group_kw={"n": 5}).eval()
    x = torch.randn(300, 5, 7, generator=torch.Generator().manual_seed(1))
    assert _worst_error(f, x, 2) <= 1e-4
    ctrl = Symmetrized(model, f.group, NBODY, "points",
                       sampler=_IdentityFrame(f.group, NBODY, deterministic=True)).eval()
    assert _worst_error(ctrl, x, 2) > 1e-2


def test_training_gradients_reach_the_sampler_as_before(monkeypatch):
    torch.manual_seed(0)
    f = Symmetrized(PairTransformer(dim=16, depth=1, heads=2), "sn x o3", NBODY, "points", sampler="canonical",
                    group_kw={"n": 5}).train()
    x = torch.randn(32, 5, 7)

    def grads():
        f.zero_grad()
        y, aux = f.forward_with_aux(x)
        (y.square().mean() + aux).backward()
        return [p.grad.clone() for p in f.sampler.parameters() if p.grad is not None]

    fused = grads()
    monkeypatch.setattr(_frames, "point_features", lambda net, xk: net.features(xk))
    ref = grads()
    assert len(fused) == len(ref) > 0
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
