"""Inputs for cloning: base samples, orbit pairs ``(x, g·x)`` and teacher features.

Examples
--------
>>> import torch
>>> from symclone.registry import create_teacher
>>> t = create_teacher("cnn", channels=2, depth=1, size=6)
>>> x = base_inputs(t, "gaussian", 4, seed=0)
>>> x.shape, orbit_inputs(t, x, seed=0).shape
(torch.Size([4, 1, 6, 6]), torch.Size([8, 1, 6, 6]))
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch.utils.data import Dataset, TensorDataset

from symclone.data import OrbitDataset, load_image_dataset

__all__ = ["base_inputs", "orbit_inputs", "teacher_input", "batched"]


def _check_shape(x: torch.Tensor, teacher: Any, what: str) -> torch.Tensor:
    want = tuple(teacher.feature_shapes[0])
    if tuple(x.shape[1:]) != want:
        raise ValueError(f"data: {what} gives samples of shape {tuple(x.shape[1:])}, but the teacher expects "
                         f"inputs of shape {want}")
    return x


def base_inputs(teacher: Any, data: Any, n: int, seed: int, train: bool = True,
                root: Optional[str] = None, download: bool = False) -> torch.Tensor:
    """``n`` input samples for ``teacher``: ``data`` is ``None``/``"gaussian"`` (i.i.d. N(0, 1), point clouds
    centred), a dataset name (``"fashion-mnist"``, ``"mnist"``), a ``Dataset`` or a tensor ``(N, ...)``.

    ``root`` and ``download`` (``DistillConfig.data_root`` / ``download``, the CLI's ``--data-root`` /
    ``--download``) are passed to :func:`symclone.data.load_image_dataset` for a dataset name."""
    shape = tuple(teacher.feature_shapes[0])
    gen = torch.Generator().manual_seed(seed * 2 + (0 if train else 1))
    if data is None or data == "gaussian":
        x = torch.randn(n, *shape, generator=gen)
        if teacher.reps[0].kind in ("points", "irreps") and len(shape) == 2 and shape[1] == 3:
            x = x - x.mean(1, keepdim=True)
        return x
    if isinstance(data, str):
        ds = load_image_dataset(data, train=train, root=root, limit=n, download=download)
        return _check_shape(ds.tensors[0][:n].float(), teacher, repr(data))
    if isinstance(data, torch.Tensor):
        return _check_shape(data[:n].float(), teacher, "the tensor")
    if isinstance(data, Dataset):
        if isinstance(data, TensorDataset):
            return _check_shape(data.tensors[0][:n].float(), teacher, "the dataset")
        items = [data[i] for i in range(min(n, len(data)))]
        xs = [it[0] if isinstance(it, (tuple, list)) else it for it in items]
        return _check_shape(torch.stack(xs).float(), teacher, "the dataset")
    raise ValueError(f"data: expected None, 'gaussian', 'fashion-mnist', 'mnist', a Dataset or a tensor, "
                     f"got {type(data).__name__}")


def orbit_inputs(teacher: Any, x: torch.Tensor, seed: int) -> torch.Tensor:
    """``[x; g·x]`` with one random ``g`` of ``teacher.group`` per sample: item ``i`` of ``OrbitDataset``
    (``g`` drawn from the generator seeded ``seed · 7919 + i``), with the group acting once on the batch."""
    if x.shape[0] == 0:
        return x
    ds = OrbitDataset(TensorDataset(x[:1]), teacher.group, rep=teacher.reps[0], seed=seed)  # validates the rep
    group = ds.group
    draws = [group.sample(1, torch.Generator().manual_seed(seed * 7_919 + i)) for i in range(x.shape[0])]
    g = tuple(torch.cat(parts) for parts in zip(*draws)) if isinstance(draws[0], tuple) else torch.cat(draws)
    gx = group.act(g, x, teacher.reps[0])
    return torch.cat([x, gx])


@torch.no_grad()
def teacher_input(teacher: Any, l: int, x: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Teacher feature ``l - 1`` of the inputs ``x`` (``x`` itself for ``l = 1``)."""
    if l == 1:
        return x
    outs = []
    for i in range(0, x.shape[0], chunk):
        h = x[i:i + chunk]
        for j in range(1, l):
            h = teacher.layer_forward(j, h)
        outs.append(h)
    return torch.cat(outs)


def batched(n: int, batch_size: int, gen: torch.Generator) -> torch.Tensor:
    """A random batch of indices into ``n`` samples."""
    return torch.randint(0, n, (min(batch_size, n),), generator=gen)
