"""Closed-form cloning of linear layers followed by a fixed pointwise nonlinearity.

**Function mode** (ridge regression on pre-activations). With inputs ``X`` (rows ``vec(h_{l-1})``)
and teacher pre-activations ``Y``, the student's affine map ``[b W]`` minimises

    ‖[1 X] [b W]ᵀ − Y‖² + λ ‖W‖²   ⇒   (X̃ᵀX̃ + λ I') θ = X̃ᵀ Y,   X̃ = [1 X]

``X̃ᵀX̃`` and ``X̃ᵀY`` are accumulated in float64 over batches (in-place ``addmm``, so the
``d × d`` Gram matrix is the only large buffer: 315 MB for ``d = 6273``) and the system is solved by
Cholesky with the relative ridge ``λ = ridge · mean diag(X̃ᵀX̃)`` (raised ×10 only if the factorisation
fails). The data fit is exact for a teacher layer that is affine in its input once the inputs span
``R^d``: the engine draws ``closed_form_oversample · d`` samples (see :mod:`._engine`). The residual
uses ``θᵀ(X̃ᵀX̃)θ = θᵀX̃ᵀY − θᵀΛθ`` at the solution, so no second ``d² × out`` product is needed.

**Family mode** (blocks student). A teacher layer that is affine in its parameters, ``z = Σ_p k̃_p
(M_p x + m_p)``, is probed on the basis kernels ``k̃ = e_p``. With ``Σ = E[x̃ x̃ᵀ] = L Lᵀ`` and
``k̃ ~ N(0, I)``, the expected squared error of ``Σ_b (H k̃)_b (W_b x + c_b)`` is
``‖S − Ŝ‖²_F`` with ``S = [vec([m_p M_p] L)]_p``, so the best ``B`` blocks are the top-``B`` SVD of
``S`` (Eckart–Young): exact when ``B ≥ rank S`` (``B = 9`` for a 3×3 conv). For C4 regular outputs
``S`` is built from orientation 0 and each ``A_r`` solves ``H A_r = diag(σ)⁻¹ U_Bᵀ S_r``. The solve
runs on sparse basis maps and ``P × P`` Gram matrices (:mod:`._sparse_maps`); :func:`family_svd_solve`
is its dense-input form.

Examples
--------
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

import numpy as np
import torch

__all__ = ["RidgeAccumulator", "cholesky_solve_ridge", "teacher_affine_maps", "family_svd_solve",
           "ridge_cholesky"]

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
        self._lower_only = False  # xtx holds only its lower triangle (BLAS syrk updates)

    def update(self, X: torch.Tensor, Y: torch.Tensor) -> None:
        """Add the rows ``X (N, in_dim)``, ``Y (N, out_dim)`` to ``X̃ᵀX̃``, ``X̃ᵀY``, ``‖Y‖²`` (float64)."""
        if X.ndim != 2 or X.shape[1] != self.in_dim or Y.shape != (X.shape[0], self.out_dim):
            raise ValueError(f"X, Y: expected (N, {self.in_dim}) and (N, {self.out_dim}), got "
                             f"{tuple(X.shape)} and {tuple(Y.shape)}")
        X, Y = X.to(self.xtx), Y.to(self.xtx)
        if self.bias:
            X = torch.cat([torch.ones(X.shape[0], 1, dtype=X.dtype, device=X.device), X], 1)
        if _syrk_update(self.xtx, X):
            self._lower_only = True
        else:
            self.xtx.addmm_(X.T, X)
        self.xty.addmm_(X.T, Y)
        self.yty += (Y * Y).sum()
        self.n += X.shape[0]

    def solve(self, ridge: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W (out, in), b (out,) or None)`` in float64."""
        if self._lower_only:
            _symmetrize_lower(self.xtx)
            self._lower_only = False
        theta, self.ridge_diagonal = ridge_cholesky(self.xtx, self.xty, ridge, skip_first=self.bias)
        self.theta = theta
        if self.bias:
            return theta[1:].T.contiguous(), theta[0].contiguous()
        return theta.T.contiguous(), None

    @property
    def ridge_used(self) -> float:
        """The largest diagonal term added by the last :meth:`solve` (absolute)."""
        return float(self.ridge_diagonal.max())

    def relative_residual(self) -> float:
        """``‖Y − X̃θ‖ / ‖Y‖`` on the accumulated data, from the sufficient statistics.

        At the solution of ``(X̃ᵀX̃ + Λ) θ = X̃ᵀY``: ``‖Y − X̃θ‖² = ‖Y‖² − ⟨θ, X̃ᵀY⟩ − ⟨θ, Λθ⟩``.
        """
        t = self.theta
        res = self.yty - (t * self.xty).sum() - (self.ridge_diagonal[:, None] * t * t).sum()
        return float(res.clamp_min(0).sqrt() / self.yty.sqrt().clamp_min(1e-300))


def _syrk_update(G: torch.Tensor, X: torch.Tensor) -> bool:
    """``tril(G) += tril(XᵀX)`` in place with BLAS ``dsyrk`` (half the flops of ``XᵀX``) for a C-contiguous
    float64 CPU ``G``; ``False`` (nothing done) elsewhere. The upper triangle is left stale: call
    :func:`_symmetrize_lower` before using ``G``."""
    if G.device.type != "cpu" or G.dtype != torch.float64 or not G.is_contiguous():
        return False
    try:
        from scipy.linalg import blas
    except ImportError:  # pragma: no cover - scipy is a dependency
        return False
    g = G.numpy().T  # Fortran-ordered view: its upper triangle is G's lower triangle
    x = X.contiguous().numpy()  # (N, d) C-order = Xᵀ in Fortran order -> trans=1 gives XᵀX
    out = blas.dsyrk(1.0, x, beta=1.0, c=g, trans=1, lower=0, overwrite_c=1)
    if not np.shares_memory(out, g):  # pragma: no cover - f2py copied: write back
        G.copy_(torch.from_numpy(np.ascontiguousarray(out.T)))
    return True


def _symmetrize_lower(G: torch.Tensor) -> None:
    """Copy the lower triangle of ``G`` onto its upper triangle, in place (after :func:`_syrk_update`)."""
    G.tril_()
    G.add_(torch.tril(G, -1).T)


def ridge_cholesky(xtx: torch.Tensor, xty: torch.Tensor, ridge: float, skip_first: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``(XᵀX + Λ) θ = XᵀY``, ``Λ = λ D``, ``λ = ridge · mean diag(XᵀX)`` (``D`` = identity, bias
    row excluded when ``skip_first``; ``ridge = 0`` adds ``10⁻¹⁴ · mean diag`` on every row). The ridge
    is raised ×10 until Cholesky succeeds. Returns ``(θ, diag Λ)``; ``XᵀX`` is left unchanged."""
    d = xtx.shape[0]
    scale = float(torch.diagonal(xtx).mean()) or 1.0
    D = torch.ones(d, dtype=xtx.dtype, device=xtx.device)
    if skip_first:
        D[0] = 0.0
    lam = ridge * scale
    buf = torch.empty_like(xtx)
    for _ in range(12):
        added = D * lam if lam > 0 else torch.full_like(D, 1e-14 * scale)
        buf.copy_(xtx)
        buf.diagonal().add_(added)
        L, info = torch.linalg.cholesky_ex(buf)
        if int(info) == 0:
            del buf
            return torch.cholesky_solve(xty, L), added
        buf = L  # reuse the failed factor's memory for the next try
        lam = max(lam * 10, 1e-12 * scale)
        log.debug("ridge: Cholesky failed, raising lambda to %.3e", lam)
    raise ValueError("ridge: the Gram matrix is not positive definite even with a large ridge; "
                     "check the inputs (NaN/constant features?)")


def cholesky_solve_ridge(xtx: torch.Tensor, xty: torch.Tensor, ridge: float, skip_first: bool = False
                         ) -> torch.Tensor:
    """``θ`` of :func:`ridge_cholesky`."""
    return ridge_cholesky(xtx, xty, ridge, skip_first)[0]


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
    and the predicted relative error ``sqrt(Σ_{b>B} σ_b² / Σ σ_b²)`` (orientation 0). The dense-input
    form of :func:`._sparse_maps.family_blocks_solve` (``B ≥ P`` gives ``H = I``, ``W_b = T_b``).
    """
    from ._family_solve import family_blocks_solve
    from ._sparse_maps import SparseAffineMaps

    P, out, d = T.shape
    sol = family_blocks_solve(SparseAffineMaps.from_dense(T), second_moment.double(), blocks, orientations, fields)
    O = out // orientations
    return {"W": sol.dense_W(blocks, O, d - 1), "c": sol.c, "H": sol.H, "A": sol.A,
            "singular_values": sol.singular_values, "predicted_rel_error": sol.predicted_rel_error}
