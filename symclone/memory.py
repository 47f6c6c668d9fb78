"""How much memory a solve may use: the limit comes from the machine, not from a fixed size.

``available_memory_bytes(device)`` is the memory the OS (``MemAvailable`` in ``/proc/meminfo``,
else ``sysconf``) or the CUDA driver (``mem_get_info``) reports as free now; a problem *fits* when
its estimated peak is at most ``MEMORY_FRACTION`` of that. ``memory_obstacle`` turns a problem that
does not fit into a message naming its size, for a ``ValueError`` or a recorded fallback reason.

Examples
--------
>>> format_bytes(315_000_000), format_bytes(2048)
('315 MB', '2.05 kB')
>>> memory_obstacle("a test", 10, available=1000) is None
True
>>> memory_obstacle("a test", 10_000, available=1000)
'a test needs 10 kB but only 800 B of memory may be used (80% of the 1 kB available)'
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import torch

__all__ = ["MEMORY_FRACTION", "available_memory_bytes", "format_bytes", "memory_obstacle"]

log = logging.getLogger(__name__)

#: share of the currently available memory one solve may plan to use
MEMORY_FRACTION = 0.8


def available_memory_bytes(device: str | torch.device | None = None) -> Optional[int]:
    """Free memory in bytes on ``device`` now (host RAM for ``None``/CPU), or ``None`` if unknown.

    Host: ``MemAvailable`` from ``/proc/meminfo`` (Linux), else ``SC_AVPHYS_PAGES · SC_PAGE_SIZE``.
    CUDA: the free memory reported by ``torch.cuda.mem_get_info``.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(dev)[0])
        except (RuntimeError, AssertionError) as err:  # no driver / no device
            log.debug("cuda mem_get_info failed: %s", err)
            return None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """``n`` bytes as a short decimal string (``'1.42 GB'``)."""
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"  # pragma: no cover


def memory_obstacle(what: str, need_bytes: float, device: str | torch.device | None = None,
                    available: Optional[int] = None, fraction: float = MEMORY_FRACTION) -> Optional[str]:
    """``None`` when ``need_bytes ≤ fraction · available`` (``available`` defaults to
    :func:`available_memory_bytes` of ``device``; unknown memory counts as enough), else a message
    ``"<what> needs X but only Y of memory may be used (...)"``."""
    avail = available_memory_bytes(device) if available is None else available
    if avail is None or need_bytes <= fraction * avail:
        return None
    return (f"{what} needs {format_bytes(need_bytes)} but only {format_bytes(fraction * avail)} of memory may "
            f"be used ({fraction:.0%} of the {format_bytes(avail)} available)")
