"""Base datasets: Fashion-MNIST / MNIST from IDX files, Gaussian images, random point clouds."""
from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

__all__ = ["FASHION_MNIST_DIRS", "find_fashion_mnist", "read_idx", "load_fashion_mnist", "load_mnist",
           "GaussianImages", "RandomPointClouds", "load_image_dataset", "DatasetMissingError"]

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class DatasetMissingError(FileNotFoundError):
    """A dataset's files are not on this machine; the message says how to get them."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array (big-endian header, uint8 data)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"path: {path} is not an IDX file (bad magic number)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if data[2] != 0x08:
        raise ValueError(f"path: {path} has IDX type {data[2]:#x}; only unsigned bytes (0x08) are supported")
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"path: {path} is truncated ({arr.size} values, header says {dims})")
    return arr.reshape(dims)


def _find_file(root: Path, stem: str) -> Optional[Path]:
    for sub in ("", "raw", "FashionMNIST/raw", "MNIST/raw"):
        for suffix in ("", ".gz"):
            p = root / sub / (stem + suffix)
            if p.exists():
                return p
    return None


def find_fashion_mnist(root: Optional[str | os.PathLike] = None) -> Path:
    """Locate Fashion-MNIST IDX files: ``root`` if given, else the Debian package's folder."""
    candidates = [Path(root)] if root is not None else [Path(d) for d in FASHION_MNIST_DIRS]
    for c in candidates:
        if _find_file(c, _FILES[True][0]) is not None:
            return c
    where = root if root is not None else FASHION_MNIST_DIRS[0]
    raise DatasetMissingError(
        f"data_root: Fashion-MNIST IDX files not found under {where}. Install them with "
        "'apt-get install dataset-fashion-mnist' (Debian) or pass --data-root to a folder holding "
        "train-images-idx3-ubyte(.gz) and friends.")


@functools.lru_cache(maxsize=4)
def _decoded_split(root: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Decode (gunzip + parse) one split once per process; the arrays are read-only."""
    img_stem, lab_stem = _FILES[train]
    images = read_idx(_find_file(Path(root), img_stem))
    labels = read_idx(_find_file(Path(root), lab_stem))
    return images, labels


def _tensors_from_idx(root: Path, train: bool, limit: Optional[int]) -> TensorDataset:
    images, labels = _decoded_split(str(root), train)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return TensorDataset(x, y)


def load_fashion_mnist(train: bool = True, root: Optional[str] = None,
                       limit: Optional[int] = None) -> TensorDataset:
    """Fashion-MNIST as a ``TensorDataset`` of ``(x (1, 28, 28) in [0, 1], label)``."""
    return _tensors_from_idx(find_fashion_mnist(root), train, limit)


def load_mnist(train: bool = True, root: Optional[str] = None, download: bool = False,
               limit: Optional[int] = None) -> TensorDataset:
    """MNIST through torchvision (downloaded only when ``download=True``)."""
    root = root or os.path.join(os.path.expanduser("~"), ".cache", "symclone", "mnist")
    try:
        from torchvision.datasets import MNIST
        ds = MNIST(root, train=train, download=download)
    except RuntimeError:
        raise DatasetMissingError(
            f"data_root: MNIST not found under {root}. Pass --data-root to a folder with "
            "MNIST/raw/*-ubyte files, or allow the download (--download / download=True).") from None
    x = ds.data.float().div(255.0).unsqueeze(1)
    y = ds.targets.long()
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return TensorDataset(x, y)


class _SeededGaussian(Dataset):
    """``n`` samples drawn on demand: sample ``i`` comes from its own generator seeded with
    ``seed · 1_000_003 + i`` (deterministic per index, no storage); label 0."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self._draw(torch.Generator().manual_seed(self.seed * 1_000_003 + i)), 0

    def _draw(self, g: torch.Generator) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover


class GaussianImages(_SeededGaussian):
    """``n`` i.i.d. N(0, 1) images of shape ``(channels, size, size)`` (the paper's cloning input).

    Deterministic per index (seeded), so the dataset needs no storage.

    >>> ds = GaussianImages(4, size=8, seed=0); ds[1][0].shape
    torch.Size([1, 8, 8])
    >>> torch.equal(ds[1][0], ds[1][0])
    True
    """

    def __init__(self, n: int, size: int = 28, channels: int = 1, seed: int = 0):
        if n < 1 or size < 1 or channels < 1:
            raise ValueError(f"n, size, channels: expected positive integers, got {n}, {size}, {channels}")
        super().__init__(n, seed)
        self.size, self.channels = size, channels

    def _draw(self, g):
        return torch.randn(self.channels, self.size, self.size, generator=g)


class RandomPointClouds(_SeededGaussian):
    """``n`` Gaussian point clouds of ``n_points`` points in ``dim`` dimensions, centred.

    >>> RandomPointClouds(3, n_points=5)[0][0].shape
    torch.Size([5, 3])
    """

    def __init__(self, n: int, n_points: int = 5, dim: int = 3, seed: int = 0):
        if n < 1 or n_points < 1 or dim < 1:
            raise ValueError(f"n, n_points, dim: expected positive integers, got {n}, {n_points}, {dim}")
        super().__init__(n, seed)
        self.n_points, self.dim = n_points, dim

    def _draw(self, g):
        x = torch.randn(self.n_points, self.dim, generator=g)
        return x - x.mean(0, keepdim=True)


def load_image_dataset(name: str, train: bool = True, root: Optional[str] = None,
                       n: int = 1024, size: int = 28, seed: int = 0, limit: Optional[int] = None,
                       download: bool = False) -> Dataset:
    """``"fashion-mnist" | "mnist" | "gaussian"`` by name."""
    if name == "fashion-mnist":
        return load_fashion_mnist(train, root, limit)
    if name == "mnist":
        return load_mnist(train, root, download, limit)
    if name == "gaussian":
        return GaussianImages(n, size=size, seed=seed if train else seed + 1)
    raise ValueError(f"data: unknown dataset {name!r}; expected 'fashion-mnist', 'mnist' or 'gaussian'")
