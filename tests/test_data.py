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


# --- --data-root / --download: missing data is a clear error; the root reaches the loaders -----------

def test_missing_mnist_under_data_root_says_how_to_get_it(tmp_path):
    from symclone.data import load_image_dataset, load_mnist
    for load in (lambda: load_mnist(root=str(tmp_path)), lambda: load_image_dataset("mnist", root=str(tmp_path))):
        with pytest.raises(DatasetMissingError, match="--download") as err:
            load()
        assert str(tmp_path) in str(err.value) and "--data-root" in str(err.value)
    assert not any(tmp_path.iterdir())          # nothing fetched or created without --download


@pytest.mark.parametrize("data, hint", [("fashion-mnist", "apt-get install dataset-fashion-mnist"),
                                        ("mnist", "--download")])
def test_cli_clone_missing_dataset_under_data_root(tmp_path, capsys, data, hint):
    from symclone.cli import main
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["clone", "--teacher", "cnn", "--student", "mlp", "--out", str(tmp_path / "run"), "--data", data,
               "--data-root", str(empty), "--teacher.channels=1", "--teacher.depth=1", "--teacher.size=6",
               "--distill.n_train=8", "--distill.n_eval=4", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and hint in err and str(empty) in err and "--data-root" in err


def test_data_root_reaches_the_loaders(tmp_path):
    from _idx import write_idx_dataset, write_idx_split
    from symclone.data import load_image_dataset, load_mnist
    from symclone.distill._feeds import base_inputs
    from symclone.registry import create_teacher

    ref = write_idx_dataset(tmp_path / "fm", n=8, size=12)
    x, y = load_fashion_mnist(train=True, root=str(tmp_path / "fm")).tensors
    assert torch.equal(x, torch.from_numpy(ref["train"][0]).float().div(255).unsqueeze(1))
    assert torch.equal(y, torch.from_numpy(ref["train"][1]).long())
    xt, _ = load_image_dataset("fashion-mnist", train=False, root=str(tmp_path / "fm"), limit=5).tensors
    assert torch.equal(xt, torch.from_numpy(ref["test"][0][:5]).float().div(255).unsqueeze(1))
    # MNIST in torchvision's layout (<root>/MNIST/raw), read without torchvision and without download
    imgs, _ = write_idx_split(tmp_path / "mn" / "MNIST" / "raw", train=False, n=8, size=12, seed=5)
    xm, _ = load_mnist(train=False, root=str(tmp_path / "mn")).tensors
    assert torch.equal(xm, torch.from_numpy(imgs).float().div(255).unsqueeze(1))
    # DistillConfig.data_root's path into cloning: base_inputs(root=...)
    t = create_teacher("cnn", channels=1, depth=1, size=12)
    xb = base_inputs(t, "fashion-mnist", 6, seed=0, root=str(tmp_path / "fm"))
    assert torch.equal(xb, x[:6])
    with pytest.raises(ValueError, match="shape"):     # a 28x28 teacher rejects the 12x12 images
        base_inputs(create_teacher("cnn", channels=1, depth=1), "fashion-mnist", 6, seed=0,
                    root=str(tmp_path / "fm"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train-images-idx3-ubyte").write_bytes((tmp_path / "fm" / "train-labels-idx1-ubyte")
                                                                 .read_bytes())
    (tmp_path / "bad" / "train-labels-idx1-ubyte").write_bytes((tmp_path / "fm" / "train-labels-idx1-ubyte")
                                                                 .read_bytes())
    with pytest.raises(ValueError, match="images"):     # labels file where images belong: named, not a crash
        load_fashion_mnist(root=str(tmp_path / "bad"))


def test_cli_clone_data_root_and_download_reach_the_loader(tmp_path, monkeypatch, capsys):
    import json
    import sys
    import types
    from pathlib import Path

    from _idx import write_idx_dataset
    from symclone.cli import main

    write_idx_dataset(tmp_path / "fm", n=8, size=12)
    common = ["clone", "--teacher", "cnn", "--student", "mlp", "--teacher.channels=1", "--teacher.depth=1",
              "--teacher.size=12", "--distill.n_train=8", "--distill.n_eval=4", "--no-progress"]
    out = tmp_path / "run"
    # 12x12 images: only the files under --data-root fit this teacher (the installed 28x28 set would not)
    assert main(common + ["--out", str(out), "--data", "fashion-mnist", "--data-root", str(tmp_path / "fm")]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"] == "fashion-mnist" and cfg["distill"]["data_root"] == str(tmp_path / "fm")
    assert cfg["distill"]["download"] is False

    calls = []

    class FakeMNIST:                         # stands in for torchvision's downloader: no network in tests
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            write_idx_dataset(Path(root) / "MNIST" / "raw", n=8, size=12)

    monkeypatch.setitem(sys.modules, "torchvision.datasets", types.SimpleNamespace(MNIST=FakeMNIST))
    root = tmp_path / "mnist"
    assert main(common + ["--out", str(tmp_path / "m"), "--data", "mnist", "--data-root", str(root),
                          "--download"]) == 0
    assert calls and all(c[0] == str(root) and c[2] is True for c in calls)
    capsys.readouterr()
