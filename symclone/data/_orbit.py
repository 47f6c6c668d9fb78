"""Orbit datasets: ``(x, g, g·x)`` triples with exact group actions."""
from __future__ import annotations

from typing import Optional

import torch
from torch.utils.data import Dataset

from ..groups import Group, RepLike, get_group, parse_rep

__all__ = ["OrbitDataset"]


class OrbitDataset(Dataset):
    """Wrap a base dataset; item ``i`` is ``(x, g, g·x)`` with ``g`` drawn uniformly from ``group``.

    ``g`` is a deterministic function of ``(seed, i)``, so epochs are reproducible. Items of the base
    dataset may be tensors or ``(tensor, label)`` pairs; the label is dropped.

    Examples
    --------
    >>> from symclone.data import GaussianImages
    >>> ds = OrbitDataset(GaussianImages(8, size=6), "c4")
    >>> x, g, gx = ds[0]
    >>> torch.equal(gx, torch.rot90(x, int(g), dims=(-2, -1)))
    True
    """

    def __init__(self, base: Dataset, group: str | Group, rep: RepLike = "image", seed: int = 0,
                 size: Optional[int] = None):
        self.base = base
        self.rep = parse_rep(rep)
        first = self._x(0)
        if isinstance(group, str) and size is None and self.rep.is_image:
            size = tuple(first.shape[-2:])
        self.group = get_group(group, size=size, n=first.shape[0] if self.rep.kind != "image" else None) \
            if isinstance(group, str) else group
        if not self.group.acts_on(self.rep):
            raise ValueError(f"rep: group {self.group.name!r} does not act on rep {self.rep}")
        self.seed = seed

    def _x(self, i: int) -> torch.Tensor:
        item = self.base[i]
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"base: items must be tensors or (tensor, label) pairs, got {type(x).__name__}")
        return x

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x = self._x(i)
        gen = torch.Generator().manual_seed(self.seed * 7_919 + i)
        g = self.group.index(self.group.sample(1, gen), 0)
        gx = self.group.act(g, x.unsqueeze(0), self.rep, validate=False)[0]  # g comes from group.sample
        return x, g, gx
