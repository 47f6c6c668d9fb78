"""Tiny IDX datasets written by the tests themselves (no network, no installed dataset needed)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

_STEMS = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx_bytes(arr: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic ``00 00 08 ndim``, big-endian int32 dims, raw data."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


def write_idx_split(folder: Path, train: bool, n: int = 8, size: int = 28, seed: int = 0,
                    gz_images: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Write ``n`` random ``size x size`` images (gzipped unless ``gz_images=False``) and raw labels
    under ``folder``; return ``(images, labels)``."""
    rng = np.random.default_rng(seed + (0 if train else 1))
    images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    img, lab = _STEMS[train]
    if gz_images:
        with gzip.open(folder / f"{img}.gz", "wb") as fh:
            fh.write(idx_bytes(images))
    else:
        (folder / img).write_bytes(idx_bytes(images))
    (folder / lab).write_bytes(idx_bytes(labels))
    return images, labels


def write_idx_dataset(folder: Path, n: int = 8, size: int = 28) -> dict:
    """Both splits (train: gzipped images; test: raw) of a tiny MNIST-format dataset."""
    return {"train": write_idx_split(folder, True, n, size, gz_images=True),
            "test": write_idx_split(folder, False, n, size, gz_images=False)}
