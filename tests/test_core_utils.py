from dataclasses import dataclass, field

import pytest
import torch

from symclone.config import apply_overrides, from_dict, to_dict
from symclone.io import CheckpointError, load_checkpoint, save_checkpoint
from symclone.registry import Registry


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    sizes: tuple = (1, 2)
    flag: bool = False


@dataclass(frozen=True)
class Outer:
    name: str = "a"
    inner: Inner = field(default_factory=Inner)


def test_overrides_and_roundtrip():
    cfg = apply_overrides(Outer(), ["inner.lr=0.5", "inner.flag=true", "name=b"])
    assert cfg.inner.lr == 0.5 and cfg.inner.flag is True and cfg.name == "b"
    assert from_dict(Outer, to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="unknown field 'lrr'"):
        apply_overrides(Outer(), ["inner.lrr=1"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(Outer(), ["inner.lr"])


def test_checkpoint_roundtrip_and_corruption(tmp_path):
    stem = tmp_path / "ck"
    save_checkpoint(stem, {"w": torch.randn(3, 3)}, {"step": 7})
    t, meta = load_checkpoint(stem)
    assert meta == {"step": 7} and t["w"].shape == (3, 3)
    (tmp_path / "ck.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(stem)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    assert not list(tmp_path.glob("*.tmp"))


def test_registry_unknown_name():
    reg = Registry("widget", package=None)
    with pytest.raises(ValueError, match="unknown widget 'x'"):
        reg.create("x")
