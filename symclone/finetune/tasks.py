"""Downstream tasks that reward retaining or breaking a symmetry (docs/design.md §6).

Three tasks from the symmetry-cloning paper, built on any 10-class image set (Fashion-MNIST by
default; MNIST when its files are present; explicit tensors for tests):

``c4-generalisation`` (10 classes, group ``c4``)
    train on upright images; test split ``"rotated"`` rotates every test image by ``k * 90``
    degrees with ``k ~ U{0,1,2,3}`` drawn once per sample (seeded); split ``"upright"`` is the
    plain test set.
``c4-breaking`` (20 classes, group ``c4``)
    every sample is rotated by ``k * 90`` degrees, ``k ~ U{0..3}``; label ``y`` if ``k in {0, 1}``
    and ``y + 10`` if ``k in {2, 3}``. A C4-invariant model sees ``x`` and ``rot180(x)`` as the
    same input, so it cannot beat 50 % on the rotation half of the label ("invariant ceiling").
``t2-breaking`` (20 classes, group ``t2`` on the 48x48 canvas)
    the 28x28 image is placed on a zero 48x48 canvas at row ``v`` and column ``10 - s`` (label
    ``y``, "shift left") or ``10 + s`` (label ``y + 10``, "shift right"), with
    ``v ~ U{0..15}``, ``s ~ U{5..15}`` and the direction a fair coin. Column 10 centres the image
    horizontally; pixels pushed past the canvas edge are cut (zero-fill translation, no wrap).
    A translation-invariant model cannot tell left from right: invariant ceiling 50 %.

Transforms are stored per sample (``Task.params``) and applied per batch, so a 60k-sample task
costs no more memory than the base images.

Examples
--------
>>> x = torch.rand(8, 1, 28, 28); y = torch.arange(8) % 10
>>> t = task_from_tensors("c4-breaking", x, y, x, y, seed=0)
>>> t.num_classes, sorted(t.test)
(20, ['test'])
>>> xb, yb = t.train.batch(torch.arange(8))
>>> k = t.train.params["k"]
>>> bool(torch.equal(yb, y + 10 * (k >= 2).long()))
True
>>> bool(torch.equal(xb[0], torch.rot90(x[0], int(k[0]), dims=(-2, -1))))
True
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..data import DatasetMissingError, load_fashion_mnist, load_mnist
from ..groups import Group, get_group
from ..groups import roll_batched, rot90_batched

__all__ = ["TASKS", "TaskSplit", "Task", "make_task", "task_from_tensors", "load_base"]

log = logging.getLogger(__name__)

TASKS = ("c4-generalisation", "c4-breaking", "t2-breaking")
CANVAS = 48
CENTRE_COL = (CANVAS - 28) // 2  # 10
SHIFT_RANGE = (5, 15)             # horizontal shift |s|, inclusive
VSHIFT_RANGE = (0, 15)            # vertical offset v, inclusive


@dataclass
class TaskSplit:
    """Base images + per-sample transform parameters; ``batch(idx)`` materialises ``(x, y)``.

    ``kind`` is ``"identity"``, ``"rot"`` (params ``k``), ``"rot-break"`` (params ``k``; label
    ``y + 10 * (k >= 2)``) or ``"shift-break"`` (params ``v``, ``s`` signed: ``< 0`` left, ``> 0``
    right; label ``y + 10 * (s > 0)``).
    """

    x: torch.Tensor
    y: torch.Tensor
    kind: str
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def labels(self) -> torch.Tensor:
        """Labels of every sample: the base label, plus 10 for the symmetry-breaking half of a 20-class task."""
        if self.kind == "rot-break":
            return self.y + 10 * (self.params["k"] >= 2).long()
        if self.kind == "shift-break":
            return self.y + 10 * (self.params["s"] > 0).long()
        return self.y

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of the samples ``idx`` (a 1-D long tensor)."""
        x = self.x[idx]
        if self.kind in ("rot", "rot-break"):
            x = rot90_batched(x, self.params["k"][idx])
        elif self.kind == "shift-break":
            x = place_on_canvas(x, self.params["v"][idx], CENTRE_COL + self.params["s"][idx])
        return x, self.labels[idx]

    def tensors(self, limit: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of the first ``limit`` samples (all when ``None``), transformed as in training."""
        n = len(self) if limit is None else min(limit, len(self))
        return self.batch(torch.arange(n))


def place_on_canvas(x: torch.Tensor, row: torch.Tensor, col: torch.Tensor,
                    canvas: int = CANVAS) -> torch.Tensor:
    """Paste each (C, h, w) image on a zero ``canvas x canvas`` image with its top-left corner at
    ``(row, col)`` (may be negative or overflow: the outside part is cut).

    Examples
    --------
    >>> x = torch.ones(1, 1, 2, 2)
    >>> out = place_on_canvas(x, torch.tensor([1]), torch.tensor([-1]), canvas=4)
    >>> out[0, 0].tolist()
    [[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """
    B, C, h, w = x.shape
    m = max(h, w)
    big = torch.zeros(B, C, canvas + 2 * m, canvas + 2 * m, dtype=x.dtype, device=x.device)
    big[:, :, m:m + h, m:m + w] = x
    big = roll_batched(big, torch.stack([row.long(), col.long()], dim=-1))
    return big[:, :, m:m + canvas, m:m + canvas].contiguous()


@dataclass
class Task:
    """A downstream task: train split, named test splits, classes and the symmetry at stake."""

    name: str
    num_classes: int
    group: Group
    input_shape: tuple
    train: TaskSplit
    test: dict
    invariant_ceiling: Optional[float] = None
    primary: str = "test"

    def describe(self) -> dict:
        """JSON-ready summary: name, classes, group, input shape, split sizes, primary split, ceiling."""
        return {"name": self.name, "num_classes": self.num_classes, "group": self.group.name,
                "input_shape": list(self.input_shape), "n_train": len(self.train),
                "n_test": {k: len(v) for k, v in self.test.items()}, "primary": self.primary,
                "invariant_ceiling": self.invariant_ceiling}


def _check(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ValueError(f"{name}: expected images of shape (N, 1, 28, 28), got {tuple(x.shape)}")
    if y.shape != (x.shape[0],) or y.dtype != torch.long:
        raise ValueError(f"{name}: expected long labels of shape ({x.shape[0]},), got {tuple(y.shape)} {y.dtype}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) > 9):
        raise ValueError(f"{name}: labels must be in 0..9 (a 10-class base set), got {int(y.min())}..{int(y.max())}")


def _split(x, y, task: str, gen: torch.Generator, test: bool) -> TaskSplit:
    n = y.shape[0]
    if task == "c4-generalisation":
        if not test:
            return TaskSplit(x, y, "identity")
        return TaskSplit(x, y, "rot", {"k": torch.randint(0, 4, (n,), generator=gen)})
    if task == "c4-breaking":
        return TaskSplit(x, y, "rot-break", {"k": torch.randint(0, 4, (n,), generator=gen)})
    v = torch.randint(VSHIFT_RANGE[0], VSHIFT_RANGE[1] + 1, (n,), generator=gen)
    mag = torch.randint(SHIFT_RANGE[0], SHIFT_RANGE[1] + 1, (n,), generator=gen)
    sign = torch.randint(0, 2, (n,), generator=gen) * 2 - 1
    return TaskSplit(x, y, "shift-break", {"v": v, "s": sign * mag})


def task_from_tensors(name: str, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                      y_test: torch.Tensor, seed: int = 0) -> Task:
    """Build task ``name`` from base images ``(N, 1, 28, 28)`` in [0, 1] and labels 0..9."""
    if name not in TASKS:
        raise ValueError(f"task: unknown task {name!r}; expected one of {TASKS}")
    _check(x_train, y_train, "x_train/y_train")
    _check(x_test, y_test, "x_test/y_test")
    g_tr = torch.Generator().manual_seed(1000 + seed)
    g_te = torch.Generator().manual_seed(2000 + seed)
    train = _split(x_train, y_train, name, g_tr, test=False)
    if name == "c4-generalisation":
        test = {"rotated": _split(x_test, y_test, name, g_te, test=True),
                "upright": TaskSplit(x_test, y_test, "identity")}
        return Task(name, 10, get_group("c4"), (1, 28, 28), train, test, None, "rotated")
    test = {"test": _split(x_test, y_test, name, g_te, test=True)}
    if name == "c4-breaking":
        return Task(name, 20, get_group("c4"), (1, 28, 28), train, test, 0.5)
    return Task(name, 20, get_group("t2", size=CANVAS), (1, CANVAS, CANVAS), train, test, 0.5)


def load_base(dataset: str = "fashion-mnist", n_train: Optional[int] = None, n_test: Optional[int] = None,
              root: Optional[str] = None, seed: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Base images: ``"fashion-mnist"``, ``"mnist"`` (falls back to Fashion-MNIST with a warning when
    its files are absent) or ``"synthetic"`` (random images, for tests). ``n_train`` samples are a
    seeded random subset of the training set (class-balanced in expectation)."""
    if dataset == "synthetic":
        g = torch.Generator().manual_seed(seed)
        n_tr, n_te = n_train or 64, n_test or 32
        mk = lambda n: (torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))
        return (*mk(n_tr), *mk(n_te))
    if dataset == "mnist":
        try:
            tr, te = load_mnist(True, root), load_mnist(False, root)
        except DatasetMissingError:
            log.warning("MNIST files not found; using Fashion-MNIST instead")
            return load_base("fashion-mnist", n_train, n_test, None, seed)
    elif dataset == "fashion-mnist":
        tr, te = load_fashion_mnist(True, root), load_fashion_mnist(False, root)
    else:
        raise ValueError(f"dataset: expected 'fashion-mnist', 'mnist' or 'synthetic', got {dataset!r}")
    x_tr, y_tr = tr.tensors
    x_te, y_te = te.tensors
    g = torch.Generator().manual_seed(seed)
    if n_train is not None:
        if not 0 < n_train <= len(y_tr):
            raise ValueError(f"n_train: expected 1..{len(y_tr)}, got {n_train}")
        idx = torch.randperm(len(y_tr), generator=g)[:n_train]
        x_tr, y_tr = x_tr[idx], y_tr[idx]
    if n_test is not None:
        x_te, y_te = x_te[:n_test], y_te[:n_test]
    return x_tr, y_tr, x_te, y_te


def make_task(name: str, dataset: str = "fashion-mnist", n_train: Optional[int] = None,
              n_test: Optional[int] = None, root: Optional[str] = None, seed: int = 0) -> Task:
    """Task ``name`` (one of :data:`TASKS`) on ``dataset``; ``n_train``/``n_test`` subsample."""
    if name not in TASKS:
        raise ValueError(f"task: unknown task {name!r}; expected one of {TASKS}")
    return task_from_tensors(name, *load_base(dataset, n_train, n_test, root, seed), seed=seed)
