"""The optimisers of symclone's training loops: SGD with momentum, or AdamW (fused where supported).

Examples
--------
>>> import torch
>>> opt = make_optimizer([torch.nn.Parameter(torch.zeros(2))], "adam", 1e-3, 0.0)
>>> type(opt).__name__
'AdamW'
"""
from __future__ import annotations

import torch

__all__ = ["make_optimizer", "fused_adamw_supported"]


def _fused_devices() -> set[str]:
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # pragma: no cover - older torch: fused AdamW on CUDA only
        return {"cuda"}
    return set(_get_fused_kernels_supported_devices())


def fused_adamw_supported(params: list[torch.Tensor]) -> bool:
    """Whether ``AdamW(fused=True)`` runs on ``params``: real floating-point tensors, all on one device of
    a type this torch build has fused optimizer kernels for (CUDA, and CPU since torch 2.4)."""
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    if not tensors or not all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in tensors):
        return False
    devices = {t.device for t in tensors}
    return len(devices) == 1 and next(iter(devices)).type in _fused_devices()


def make_optimizer(params: list[torch.nn.Parameter], kind: str, lr: float, weight_decay: float
                   ) -> torch.optim.Optimizer:
    """SGD (momentum 0.9) or AdamW; AdamW uses the fused kernel (one multi-tensor update, measured faster
    on CPU and GPU) where :func:`fused_adamw_supported`, else the default implementation. Both compute the
    same update up to float rounding, and DDP only touches gradients, so it works with either."""
    params = list(params)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if fused_adamw_supported(params):
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError, ValueError):  # pragma: no cover - a build without the kernel
            pass
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
