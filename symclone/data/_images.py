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

__all__ = ["FASHION_MNIST_DIRS", "MNIST_DEFAULT_ROOT", "find_fashion_mnist", "read_idx", "load_fashion_mnist",
           "load_mnist", "GaussianImages", "RandomPointClouds", "load_image_dataset", "DatasetMissingError"]

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


#: sub-folders searched under a data root, per dataset (torchvision keeps its files in ``<Name>/raw``)
_SUBDIRS = {"fashion-mnist": ("", "raw", "FashionMNIST/raw"), "mnist": ("", "raw", "MNIST/raw")}
MNIST_DEFAULT_ROOT = os.path.join(os.path.expanduser("~"), ".cache", "symclone", "mnist")


def _find_file(root: Path, stem: str, subdirs: tuple[str, ...] = _SUBDIRS["fashion-mnist"]) -> Optional[Path]:
    for sub in subdirs:
        for suffix in ("", ".gz"):
            p = root / sub / (stem + suffix)
            if p.exists():
                return p
    return None


def _split_files(root: Path, train: bool, dataset: str) -> Optional[tuple[Path, Path]]:
    """The (images, labels) IDX files of one split under ``root``, or ``None`` if either is missing."""
    found = tuple(_find_file(root, stem, _SUBDIRS[dataset]) for stem in _FILES[train])
    return None if None in found else found  # type: ignore[return-value]


def find_fashion_mnist(root: Optional[str | os.PathLike] = None) -> Path:
    """Locate Fashion-MNIST IDX files: ``root`` if given, else the Debian package's folder.

    ``root`` may hold the files directly, or in ``raw/`` or ``FashionMNIST/raw/`` (torchvision's layout);
    each file may be gzipped. A missing dataset raises :class:`DatasetMissingError` saying how to get it.

    Examples
    --------
    >>> import tempfile
    >>> find_fashion_mnist(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    symclone.data._images.DatasetMissingError: data_root: Fashion-MNIST IDX files not found under ...
    """
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
def _decoded_split(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode (gunzip + parse) one split once per process; the arrays are read-only."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"data_root: {images_path} / {labels_path} do not form an image split: expected "
                         f"images (N, H, W) and labels (N,), got {images.shape} and {labels.shape}")
    return images, labels


def _tensors_from_idx(root: Path, train: bool, limit: Optional[int], dataset: str = "fashion-mnist"
                      ) -> TensorDataset:
    files = _split_files(root, train, dataset)
    if files is None:
        split = "training" if train else "test"
        raise DatasetMissingError(f"data_root: the {split} split ({' and '.join(_FILES[train])}, optionally .gz) "
                                  f"of {dataset} is not under {root}")
    images, labels = _decoded_split(str(files[0]), str(files[1]))
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return TensorDataset(x, y)


def load_fashion_mnist(train: bool = True, root: Optional[str | os.PathLike] = None,
                       limit: Optional[int] = None) -> TensorDataset:
    """Fashion-MNIST as a ``TensorDataset`` of ``(x (1, 28, 28) in [0, 1], label)``.

    ``root`` (the CLI's ``--data-root``) overrides the Debian folder ``/usr/share/datasets/fashion-mnist``.
    """
    return _tensors_from_idx(find_fashion_mnist(root), train, limit)


def load_mnist(train: bool = True, root: Optional[str | os.PathLike] = None, download: bool = False,
               limit: Optional[int] = None) -> TensorDataset:
    """MNIST as a ``TensorDataset`` of ``(x (1, 28, 28) in [0, 1], label)``.

    Read from IDX files under ``root`` (directly, in ``raw/`` or torchvision's ``MNIST/raw/``; default
    ``~/.cache/symclone/mnist``). Only with ``download=True`` (the CLI's ``--download``) are missing files
    fetched, through ``torchvision.datasets.MNIST(root, download=True)``; otherwise a missing dataset
    raises :class:`DatasetMissingError` saying how to get it.

    Examples
    --------
    >>> import tempfile
    >>> load_mnist(root=tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    symclone.data._images.DatasetMissingError: data_root: MNIST not found under ...
    """
    root = Path(root if root is not None else MNIST_DEFAULT_ROOT)
    if _split_files(root, train, "mnist") is None:
        if not download:
            raise DatasetMissingError(
                f"data_root: MNIST not found under {root} (looked for {_FILES[train][0]}(.gz) in it, in raw/ "
                "and in MNIST/raw/). Pass --data-root to a folder holding the MNIST IDX files, or pass "
                "--download (download=True) to fetch them with torchvision.")
        try:
            from torchvision.datasets import MNIST

            MNIST(str(root), train=train, download=True)
        except (RuntimeError, OSError) as err:
            raise DatasetMissingError(f"download: fetching MNIST into {root} failed ({err}); copy the IDX files "
                                      "there by hand and pass --data-root") from None
    return _tensors_from_idx(root, train, limit, dataset="mnist")


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

    Examples
    --------
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

    Examples
    --------
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
    """``"fashion-mnist" | "mnist" | "gaussian"`` by name; ``root`` and ``download`` reach the file loaders
    (``download`` only applies to MNIST; Gaussian images ignore both).

    Examples
    --------
    >>> load_image_dataset("gaussian", n=3, size=5)[2][0].shape
    torch.Size([1, 5, 5])
    """
    if name == "fashion-mnist":
        return load_fashion_mnist(train, root, limit)
    if name == "mnist":
        return load_mnist(train, root, download, limit)
    if name == "gaussian":
        return GaussianImages(n, size=size, seed=seed if train else seed + 1)
    raise ValueError(f"data: unknown dataset {name!r}; expected 'fashion-mnist', 'mnist' or 'gaussian'")
