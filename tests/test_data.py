import gzip

import numpy as np
import pytest
import torch

from conftest import fashion_mnist_available
from symclone.data import (DatasetMissingError, GaussianImages, OrbitDataset, RandomPointClouds,
                           load_fashion_mnist, read_idx)


def test_orbit_dataset_is_exact_and_deterministic():
    ds = OrbitDataset(GaussianImages(5, size=7), "p4")
    for i in range(5):
        x, g, gx = ds[i]
        ref = torch.roll(torch.rot90(x, int(g[0]), dims=(-2, -1)), (int(g[1]), int(g[2])), dims=(-2, -1))
        assert torch.equal(gx, ref)
    assert all(torch.equal(a, b) for a, b in zip(ds[2], ds[2]))


def test_orbit_points():
    ds = OrbitDataset(RandomPointClouds(3, n_points=4), "sn x o3", rep="points")
    x, (p, Q), gx = ds[0]
    assert torch.allclose(gx, x[torch.argsort(p)] @ Q.T.float(), atol=1e-6)


def test_idx_reader_roundtrip(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(tmp_path / "a-idx3-ubyte.gz", "wb") as fh:
        fh.write(header + arr.tobytes())
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03")
    with pytest.raises(ValueError, match="IDX"):
        read_idx(tmp_path / "bad")


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetMissingError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(root=str(tmp_path))


@pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST not installed")
def test_fashion_mnist_loads():
    ds = load_fashion_mnist(train=False, limit=100)
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and 0 <= x.min() and x.max() <= 1 and 0 <= int(y) < 10
    assert len(load_fashion_mnist(train=False)) == 10000


def test_seeded_gaussian_datasets_are_per_index_deterministic_and_validated():
    a, b = GaussianImages(4, size=5, seed=1), GaussianImages(4, size=5, seed=2)
    assert torch.equal(a[3][0], GaussianImages(4, size=5, seed=1)[3][0])
    assert not torch.equal(a[3][0], b[3][0]) and not torch.equal(a[2][0], a[3][0])
    pc = RandomPointClouds(3, n_points=6, dim=2, seed=0)[1][0]
    assert pc.shape == (6, 2) and pc.mean(0).abs().max() < 1e-6      # centred
    with pytest.raises(IndexError):
        a[4]
    with pytest.raises(ValueError, match="n_points"):
        RandomPointClouds(3, n_points=0)
    with pytest.raises(ValueError, match="size"):
        GaussianImages(3, size=0)
