"""Closed-form cloning of linear layers followed by a fixed pointwise nonlinearity.

**Function mode** (ridge regression on pre-activations). With inputs ``X`` (rows ``vec(h_{l-1})``)
and teacher pre-activations ``Y``, the student's affine map ``[b W]`` minimises

    ‖[1 X] [b W]ᵀ − Y‖² + λ ‖W‖²   ⇒   (X̃ᵀX̃ + λ I') θ = X̃ᵀ Y,   X̃ = [1 X]

``X̃ᵀX̃`` and ``X̃ᵀY`` are accumulated in float64 over batches and the system is solved by Cholesky.

**Family mode** (blocks student). A teacher layer that is affine in its parameters, ``z = Σ_p k̃_p
(M_p x + m_p)``, is probed on the basis kernels ``k̃ = e_p``. With ``Σ = E[x̃ x̃ᵀ] = L Lᵀ`` and
``k̃ ~ N(0, I)``, the expected squared error of ``Σ_b (H k̃)_b (W_b x + c_b)`` is
``‖S − Ŝ‖²_F`` with ``S = [vec([m_p M_p] L)]_p``, so the best ``B`` blocks are the top-``B`` SVD of
``S`` (Eckart–Young): exact when ``B ≥ rank S`` (``B = 9`` for a 3×3 conv). For C4 regular outputs
``S`` is built from orientation 0 and each ``A_r`` solves ``H A_r = diag(σ)⁻¹ U_Bᵀ S_r``.

>>> import torch
>>> acc = RidgeAccumulator(3, 2)
>>> X = torch.randn(50, 3); W = torch.randn(2, 3)
>>> acc.update(X, X @ W.T + 1.0)
>>> W_hat, b_hat = acc.solve(ridge=0.0)
>>> torch.allclose(W_hat, W.double(), atol=1e-8), torch.allclose(b_hat, torch.ones(2, dtype=torch.float64))
(True, True)
"""
from __future__ import annotations

import logging
from typing import Any

import torch

__all__ = ["RidgeAccumulator", "cholesky_solve_ridge", "teacher_affine_maps", "family_svd_solve"]

log = logging.getLogger(__name__)


class RidgeAccumulator:
    """Running ``X̃ᵀX̃``, ``X̃ᵀY`` (float64) for an affine least-squares fit ``Y ≈ X Wᵀ + b``."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, device: str | torch.device = "cpu"):
        d = in_dim + int(bias)
        self.bias, self.in_dim, self.out_dim = bias, in_dim, out_dim
        self.xtx = torch.zeros(d, d, dtype=torch.float64, device=device)
        self.xty = torch.zeros(d, out_dim, dtype=torch.float64, device=device)
        self.yty = torch.zeros((), dtype=torch.float64, device=device)
        self.n = 0

    def update(self, X: torch.Tensor, Y: torch.Tensor) -> None:
        if X.ndim != 2 or X.shape[1] != self.in_dim or Y.shape != (X.shape[0], self.out_dim):
            raise ValueError(f"X, Y: expected (N, {self.in_dim}) and (N, {self.out_dim}), got "
                             f"{tuple(X.shape)} and {tuple(Y.shape)}")
        X, Y = X.to(self.xtx), Y.to(self.xtx)
        if self.bias:
            X = torch.cat([torch.ones(X.shape[0], 1, dtype=X.dtype, device=X.device), X], 1)
        self.xtx += X.T @ X
        self.xty += X.T @ Y
        self.yty += (Y * Y).sum()
        self.n += X.shape[0]

    def solve(self, ridge: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W (out, in), b (out,) or None)`` in float64."""
        theta = cholesky_solve_ridge(self.xtx, self.xty, ridge, skip_first=self.bias)
        self.theta = theta
        if self.bias:
            return theta[1:].T.contiguous(), theta[0].contiguous()
        return theta.T.contiguous(), None

    def relative_residual(self) -> float:
        """``‖Y − X̃θ‖ / ‖Y‖`` on the accumulated data, from the sufficient statistics."""
        t = self.theta
        res = self.yty - 2 * (t * self.xty).sum() + (t * (self.xtx @ t)).sum()
        return float(res.clamp_min(0).sqrt() / self.yty.sqrt().clamp_min(1e-300))


def cholesky_solve_ridge(xtx: torch.Tensor, xty: torch.Tensor, ridge: float, skip_first: bool = False
                         ) -> torch.Tensor:
    """Solve ``(XᵀX + λ D) θ = XᵀY`` with ``λ = ridge · mean diag(XᵀX)`` (``D`` = identity, bias row
    excluded when ``skip_first``); the ridge is raised ×10 until Cholesky succeeds."""
    d = xtx.shape[0]
    scale = float(torch.diagonal(xtx).mean()) or 1.0
    D = torch.ones(d, dtype=xtx.dtype, device=xtx.device)
    if skip_first:
        D[0] = 0.0
    lam = ridge * scale
    for _ in range(12):
        L, info = torch.linalg.cholesky_ex(xtx + torch.diag(D * lam + (1e-14 * scale if lam == 0 else 0.0)))
        if int(info) == 0:
            return torch.cholesky_solve(xty, L)
        lam = max(lam * 10, 1e-12 * scale)
        log.debug("ridge: Cholesky failed, raising lambda to %.3e", lam)
    raise ValueError("ridge: the Gram matrix is not positive definite even with a large ridge; "
                     "check the inputs (NaN/constant features?)")


@torch.no_grad()
def teacher_affine_maps(teacher: Any, l: int, scale: float, chunk: int = 256) -> torch.Tensor:
    """``T (P, out_dim, in_dim + 1)`` float64 with ``T[p] = [m_p M_p]``: the pre-activation of layer
    ``l`` for the parameter vector ``scale · e_p`` as an affine map of ``vec(h)`` (bias column first)."""
    shape_in = tuple(teacher.feature_shapes[l - 1])
    I = int(torch.tensor(shape_in).prod())
    P = int(teacher.num_layer_params(l))
    own = teacher.layer_params(l)
    dtype, device = own.dtype, own.device
    out = []
    eye = torch.eye(P, dtype=dtype, device=device) * scale
    basis = torch.cat([torch.zeros(1, I, dtype=dtype, device=device),
                       torch.eye(I, dtype=dtype, device=device)]).reshape(I + 1, *shape_in)
    for i in range(0, P, max(1, chunk // 16)):
        params = eye[i:i + max(1, chunk // 16)]
        cols = []
        for j in range(0, I + 1, chunk):
            z = teacher.layer_forward(l, basis[j:j + chunk], params=params, pre_activation=True)
            cols.append(z.reshape(params.shape[0], z.shape[1], -1).double())
        z = torch.cat(cols, 1)  # (p, I + 1, out)
        z[:, 1:] -= z[:, :1]
        out.append(z.transpose(1, 2))
    return torch.cat(out)


@torch.no_grad()
def family_svd_solve(T: torch.Tensor, second_moment: torch.Tensor, blocks: int, orientations: int,
                     fields: int) -> dict:
    """Optimal blocks from the teacher's affine maps ``T (P, out, I+1)`` and ``E[x̃x̃ᵀ]`` ``(I+1, I+1)``.

    Returns ``W (B, O, I)``, ``c (B, O)``, ``H (B, P)``, ``A (R-1, P, P)`` (float64), the singular values
    and the predicted relative error ``sqrt(Σ_{b>B} σ_b² / Σ σ_b²)`` (orientation 0).
    """
    P, out, d = T.shape
    R = orientations
    eps = 1e-10 * float(torch.diagonal(second_moment).mean())
    Lc = torch.linalg.cholesky(second_moment + eps * torch.eye(d, dtype=second_moment.dtype,
                                                              device=second_moment.device))
    Tr = T.reshape(P, fields, R, out // (fields * R), d)  # rows (field, r, pixel)

    def weighted(r: int) -> torch.Tensor:
        return (Tr[:, :, r].reshape(P, -1, d) @ Lc).reshape(P, -1)  # (P, O*(I+1))

    S0 = weighted(0)
    gram = S0 @ S0.T  # (P, P)
    evals, V = torch.linalg.eigh(gram)
    order = torch.argsort(evals, descending=True)
    evals, V = evals[order].clamp_min(0), V[:, order]
    sig = evals.sqrt()
    Bk = min(blocks, P)
    keep = sig[:Bk] > sig[0] * 1e-9
    U = (S0.T @ V[:, :Bk]) / torch.where(keep, sig[:Bk], torch.ones_like(sig[:Bk]))  # (O*(I+1), Bk)
    U[:, ~keep] = 0
    O = out // R
    Wt = (U * sig[:Bk]).T.reshape(Bk, O, d)
    # undo the whitening: W_aug = Ŵ L^{-1}
    W_aug = torch.linalg.solve_triangular(Lc, Wt.reshape(-1, d), upper=False, left=False).reshape(Bk, O, d)
    H = V[:, :Bk].T.contiguous()  # (Bk, P)
    A = []
    for r in range(1, R):
        C = (U.T @ weighted(r).T) / torch.where(keep, sig[:Bk], torch.ones_like(sig[:Bk]))[:, None]
        A.append(H.T @ C)
    total = float((sig ** 2).sum()) or 1.0
    pred = float((sig[Bk:] ** 2).sum() / total) ** 0.5
    W = T.new_zeros(blocks, O, d - 1)
    c = T.new_zeros(blocks, O)
    Hf = T.new_zeros(blocks, P)
    W[:Bk], c[:Bk], Hf[:Bk] = W_aug[:, :, 1:], W_aug[:, :, 0], H
    A_t = torch.stack(A) if A else T.new_zeros(0, P, P)
    return {"W": W, "c": c, "H": Hf, "A": A_t, "singular_values": sig.tolist(), "predicted_rel_error": pred}
