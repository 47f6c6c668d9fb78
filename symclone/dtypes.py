"""A scoped torch default dtype.

escnn 1.0.11 cannot build an ``R2Conv`` under a float64 default dtype (docs/design.md §10), while e3nn
builds its so(3) generators in the default dtype; both need the default switched for one call.

Examples
--------
>>> with default_dtype(torch.float64):
...     torch.zeros(1).dtype
torch.float64
>>> torch.get_default_dtype()
torch.float32
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["default_dtype"]


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Set ``torch``'s default dtype to ``dtype`` inside the block, restoring the old one after."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)
