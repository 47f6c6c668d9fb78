"""Devices, training precision and data loaders that keep an accelerator busy.

- :func:`resolve_device` maps ``"cpu" | "cuda" | "auto"`` (or ``"cuda:1"``) to a ``torch.device`` and fails
  early, naming the argument, when CUDA is asked for but absent.
- :func:`precision_context` is for **training only**: ``"bf16"`` runs the forward under
  ``torch.autocast`` (bfloat16 matmuls, float32 master weights and reductions), ``"tf32"`` lets CUDA
  matmuls/convolutions use TensorFloat-32 (a 10-bit mantissa), ``"fp32"`` changes nothing.
  Equivariance checks (:mod:`symclone.equivariance`) and closed-form solves must stay in fp32/fp64: bf16 has
  a relative rounding of 2⁻⁸ ≈ 4e-3, far above the 1e-6 tolerance of an exact check.
- :func:`tune_cpu_allocator` keeps freed large CPU tensors in the process heap (glibc ``mallopt``) so
  that the next step reuses resident pages instead of page-faulting fresh ``mmap`` memory; on this
  machine that makes a family-cloning step 1.9-2.8x faster (see docs/performance.md).
- :func:`device_of` is the device a module lives on (its first parameter's or buffer's; CPU for neither).
- :class:`RuntimeOptions` is the one home of the settings every training config shares (``seed``,
  ``device``, ``precision``, ``progress``): the configs of cloning, fine-tuning, symmetrization,
  teacher training and graph classification derive from it, so the fields mean and validate the same
  everywhere.
- :func:`make_loader` builds a ``DataLoader`` with a ``DistributedSampler`` under DDP, and pinned memory,
  worker prefetch and persistent workers on CUDA.

Examples
--------
>>> resolve_device("cpu")
device(type='cpu')
>>> import torch
>>> with precision_context("bf16", "cpu"):
...     y = torch.ones(2, 2) @ torch.ones(2, 2)
>>> y.dtype
torch.bfloat16
>>> with precision_context("fp32", "cpu"):
...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
torch.float32
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["RuntimeOptions", "check_device", "resolve_device", "precision_context", "make_loader", "PRECISIONS", "DEVICES", "seed_worker",
           "add_runtime_arguments", "tune_cpu_allocator", "cpu_allocator_tuned", "device_of", "check_precision"]

PRECISIONS = ("fp32", "bf16", "tf32")
DEVICES = ("cpu", "cuda", "auto")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available else ``cpu``; ``"cuda"``/``"cuda:i"`` must exist.

    Raises
    ------
    ValueError
        for an unknown name, or CUDA asked for on a machine without it (or with too few GPUs).
    """
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise ValueError(f"device: expected 'cpu', 'cuda', 'cuda:<i>' or 'auto', got {device!r}")
    name = device.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} requested but no CUDA device is available "
                             "(torch.cuda.is_available() is False); use --device cpu or --device auto")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device: {device!r} requested but only {torch.cuda.device_count()} "
                             "CUDA device(s) exist")
        return dev
    raise ValueError(f"device: expected 'cpu', 'cuda', 'cuda:<i>' or 'auto', got {device!r}")


def device_of(module: torch.nn.Module) -> torch.device:
    """The device of ``module``'s first parameter or buffer (CPU for a module with neither).

    Examples
    --------
    >>> device_of(torch.nn.Linear(2, 2))
    device(type='cpu')
    >>> device_of(torch.nn.ReLU())   # nothing to hold: CPU
    device(type='cpu')
    """
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def check_precision(precision: str) -> str:
    """``precision`` itself if it is one of :data:`PRECISIONS`, else a ``ValueError`` naming it.

    Examples
    --------
    >>> check_precision("bf16")
    'bf16'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    return precision


def check_device(device: str) -> str:
    """``device`` itself if it names a device :func:`resolve_device` understands, else a ``ValueError``.

    Accepted: ``"cpu"``, ``"auto"``, ``"cuda"`` and ``"cuda:<index>"``. Whether CUDA is present is checked
    later, when the device is resolved.

    Examples
    --------
    >>> check_device("cuda:1")
    'cuda:1'
    >>> check_device("gpu")
    Traceback (most recent call last):
    ...
    ValueError: device: expected 'cpu', 'cuda', 'cuda:<index>' or 'auto', got 'gpu'
    """
    if not isinstance(device, str) or not re.fullmatch(r"cpu|auto|cuda(:\d+)?", device):
        raise ValueError(f"device: expected 'cpu', 'cuda', 'cuda:<index>' or 'auto', got {device!r}")
    return device


@dataclass(frozen=True)
class RuntimeOptions:
    """Settings every training loop shares; the training configs derive from this class.

    Attributes
    ----------
    seed : seeds every random draw of the run (initialisations, data order, group samples); the same
        seed gives the same model on any machine at the same thread count.
    device : ``"cpu"``, ``"cuda"``, ``"cuda:<index>"`` or ``"auto"`` (CUDA when present); under
        ``torchrun`` the rank's device replaces it.
    precision : numerics of the *training* forward: ``"fp32"``, ``"bf16"`` (autocast) or ``"tf32"``
        (CUDA matmuls); evaluation, equivariance checks and closed-form solves stay fp32/fp64.
    progress : show progress (tqdm bars on a terminal, periodic log lines otherwise).

    A subclass that defines ``__post_init__`` calls ``super().__post_init__()``.

    Examples
    --------
    >>> RuntimeOptions(device="cuda:0").precision
    'fp32'
    >>> RuntimeOptions(seed=-1)
    Traceback (most recent call last):
    ...
    ValueError: seed: expected an integer >= 0, got -1
    """

    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    progress: bool = True

    def __post_init__(self) -> None:
        from .validation import check_int
        check_int(self.seed, "seed", minimum=0)
        check_device(self.device)
        check_precision(self.precision)


@contextlib.contextmanager
def precision_context(precision: str = "fp32", device: str | torch.device = "cpu") -> Iterator[None]:
    """Numerics for a *training* forward pass (see the module docstring; never wrap equivariance checks).

    ``fp32``: no change. ``bf16``: ``torch.autocast(device_type, dtype=torch.bfloat16)`` (on CPU and
    CUDA). ``tf32``: on CUDA sets ``torch.backends.cuda.matmul.allow_tf32`` and
    ``torch.backends.cudnn.allow_tf32`` for the duration (restored afterwards); on CPU it is fp32.
    """
    check_precision(precision)
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if precision == "fp32":
        yield
    elif precision == "bf16":
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
            yield
    else:
        if dev.type != "cuda":
            yield
            return
        old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def seed_worker(worker_id: int) -> None:
    """Seed numpy/random in a DataLoader worker from torch's per-worker seed (reproducible augmentation)."""
    import random

    import numpy as np

    s = torch.initial_seed() % 2 ** 32
    np.random.seed(s)
    random.seed(s)


def make_loader(dataset: Dataset, batch_size: int, device: str | torch.device = "cpu", distributed: bool = False,
                shuffle: bool = True, seed: int = 0, num_workers: Optional[int] = None, drop_last: bool = False,
                rank: Optional[int] = None, world_size: Optional[int] = None) -> DataLoader:
    """A ``DataLoader`` for training on ``device``.

    ``batch_size`` is **per process**; under DDP the global batch is ``batch_size * world_size``.
    With ``distributed`` a ``DistributedSampler(shuffle, seed, drop_last)`` shards the data (call
    ``loader.sampler.set_epoch(epoch)`` every epoch; :func:`symclone.distributed.epoch_batches` does it).
    On CUDA: ``pin_memory=True``, ``num_workers`` default 4, ``prefetch_factor=4`` and
    ``persistent_workers=True``; on CPU the default is 0 workers (the main process; this machine's cores
    are better spent on the maths).

    Examples
    --------
    >>> from torch.utils.data import TensorDataset
    >>> dl = make_loader(TensorDataset(torch.arange(10.0)), 4, "cpu", shuffle=False)
    >>> [b[0].tolist() for b in dl][0]
    [0.0, 1.0, 2.0, 3.0]
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    dev = resolve_device(device)
    on_cuda = dev.type == "cuda"
    workers = (4 if on_cuda else 0) if num_workers is None else int(num_workers)
    gen = torch.Generator().manual_seed(int(seed))
    sampler = None
    if distributed:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=int(seed),
                                     drop_last=drop_last)
    kw: dict = {}
    if workers > 0:
        kw.update(prefetch_factor=4, persistent_workers=True, worker_init_fn=seed_worker)
    return DataLoader(dataset, batch_size=int(batch_size), shuffle=(shuffle and sampler is None), sampler=sampler,
                      num_workers=workers, pin_memory=on_cuda, drop_last=drop_last, generator=gen, **kw)


def add_runtime_arguments(parser, precision: bool = True) -> None:
    """Add ``--device cpu|cuda|auto`` (and ``--precision fp32|bf16|tf32``) to an argparse parser."""
    parser.add_argument("--device", default="auto", help="cpu | cuda | cuda:<i> | auto (default: auto)")
    if precision:
        parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                            help="training numerics (equivariance checks always run in fp32/fp64)")


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_ALLOCATOR = {"tuned": False}


def _libc():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c") or "libc.so.6"
    lib = ctypes.CDLL(name)
    return lib if hasattr(lib, "mallopt") else None


def tune_cpu_allocator(enable: bool = True, mmap_threshold: int = 1 << 30) -> bool:
    """Serve CPU tensors below ``mmap_threshold`` bytes from the heap and never trim it (``enable``), or go
    back to per-allocation ``mmap`` for anything above 128 KiB and release free memory (``enable=False``).

    Why: glibc serves allocations above its (dynamic, at most 32 MiB) mmap threshold with fresh ``mmap``
    pages and unmaps them on free, so every training step page-faults its large activations again
    (~4 KiB per fault). Keeping them in the heap is what CUDA's caching allocator does on GPUs. Cost: the
    process keeps its peak resident memory. Only glibc (Linux) is affected; elsewhere this returns False.

    Examples
    --------
    >>> ok = tune_cpu_allocator(True)
    >>> cpu_allocator_tuned() == ok
    True
    """
    try:
        lib = _libc()
    except OSError:  # pragma: no cover - no C library to talk to
        lib = None
    if lib is None:
        return False
    if enable:
        ok = bool(lib.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and \
            bool(lib.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))
    else:
        ok = bool(lib.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)) and bool(lib.mallopt(_M_TRIM_THRESHOLD, 128 * 1024))
        if hasattr(lib, "malloc_trim"):
            lib.malloc_trim(0)
    _ALLOCATOR["tuned"] = bool(enable and ok)
    return ok


def cpu_allocator_tuned() -> bool:
    """Whether :func:`tune_cpu_allocator` is in effect."""
    return _ALLOCATOR["tuned"]
