"""One progress reporter for every training loop: a tqdm bar on a terminal, log lines elsewhere.

``progress_bar(total, desc, enabled)`` returns an object with ``update(n=1, **postfix)``, ``close()`` and
context-manager support. What it shows depends on where stderr goes:

* ``enabled=False``: nothing;
* stderr is a terminal: a tqdm bar (carriage returns are fine there);
* otherwise (a log file, CI, a batch job): one ``INFO`` line ``desc: 40/100 (40%) loss=0.12`` at most
  every ``log_every`` seconds and one at the end, so log files hold no carriage returns and no bar
  fragments.

``enabled=None`` (the default) follows the terminal rule; commands pass ``enabled=not --no-progress``.
Only rank 0 of a multi-process run should report: pass ``enabled=ctx.is_main and ...``.

Examples
--------
>>> with progress_bar(3, "demo", enabled=False) as bar:
...     for _ in range(3):
...         bar.update(1, loss=0.5)
>>> bar.n
3
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Any, Iterable, Iterator, Optional

__all__ = ["progress_bar", "track", "ProgressBar", "on_terminal"]

log = logging.getLogger("symclone.progress")


def on_terminal() -> bool:
    """Whether stderr is an interactive terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class ProgressBar:
    """See the module docstring; build it with :func:`progress_bar`."""

    def __init__(self, total: Optional[int], desc: str, enabled: Optional[bool] = None, initial: int = 0,
                 log_every: float = 30.0, leave: bool = False):
        self.total, self.desc, self.n = total, desc, int(initial)
        self.log_every = float(log_every)
        self._postfix: dict[str, Any] = {}
        self._bar = None
        self._logging = False
        self._last = time.monotonic()
        if enabled is False:
            return
        if on_terminal():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, leave=leave, dynamic_ncols=True)
        else:
            self._logging = True

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Advance by ``n`` steps; ``postfix`` values (loss, error, ...) are shown beside the count."""
        self.n += n
        if postfix:
            self._postfix.update(postfix)
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: _fmt(v) for k, v in postfix.items()}, refresh=False)
        elif self._logging and time.monotonic() - self._last >= self.log_every:
            self._emit()

    def _emit(self) -> None:
        self._last = time.monotonic()
        count = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else str(self.n)
        extra = " ".join(f"{k}={_fmt(v)}" for k, v in self._postfix.items())
        log.info("%s: %s%s", self.desc, count, f" {extra}" if extra else "")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._logging:
            self._emit()
            self._logging = False

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: Optional[int], desc: str, enabled: Optional[bool] = None, initial: int = 0,
                 log_every: float = 30.0, leave: bool = False) -> ProgressBar:
    """A :class:`ProgressBar` (tqdm on a terminal, periodic log lines otherwise, nothing if disabled)."""
    return ProgressBar(total, desc, enabled, initial, log_every, leave)


def track(iterable: Iterable, desc: str, enabled: Optional[bool] = None, total: Optional[int] = None,
          log_every: float = 30.0) -> Iterator:
    """Iterate over ``iterable`` while reporting progress (like ``tqdm(iterable)``)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with progress_bar(total, desc, enabled, log_every=log_every) as bar:
        for item in iterable:
            yield item
            bar.update(1)
