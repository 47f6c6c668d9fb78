"""Analysis of learned weights and functions (docs/design.md §7).

* :func:`structure_residual` / :func:`project` — Reynolds projection onto G-equivariant linear
  maps (fast strided paths for t2, c4, p4 on images and C4 regular fields; any finite group
  through ``group.act``).
* :func:`recover_kernel`, :func:`orientation_agreement` — filter banks from dense matrices.
* :func:`toeplitz_report` — residual, kernel agreement, footprint energy, IPR (also on the data support).
* :func:`equivariance_error` (re-export of the shared checker), :func:`lie_derivative` and
  :func:`relative_lie_derivative` (forward-mode AD, MATH attention backend, or float64 finite differences).
* :func:`analyze_run` — figures, ``report.md`` and structure metrics for a clone run directory;
  :func:`analyze_models` — the same for an in-memory teacher/student pair.
* ``symclone.analysis.plots`` — matplotlib figures (imported lazily).

Examples
--------
>>> import torch
>>> W = torch.randn(128, 16, dtype=torch.float64)
>>> 0.8 < structure_residual(W, "c4", (1, 4, 4), (8, 4, 4), out_rep="regular") < 0.95
True
"""
from symclone.equivariance import equivariance_error

from ._analyze_run import analyze_models, analyze_run
from ._kernels import fit_kernel_matrix, orientation_agreement, recover_kernel
from ._lie import lie_derivative, lie_generator, relative_lie_derivative
from ._reynolds import project, structure_residual
from ._toeplitz import ipr, kernel_similarity, toeplitz_report

__all__ = ["structure_residual", "project", "recover_kernel", "orientation_agreement", "fit_kernel_matrix",
           "toeplitz_report", "ipr", "kernel_similarity", "equivariance_error", "lie_derivative",
           "lie_generator", "relative_lie_derivative", "analyze_run", "analyze_models"]
