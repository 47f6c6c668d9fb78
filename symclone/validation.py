"""Early, named checks of user input: numbers, output folders and constructor keywords.

Every check raises a ``ValueError`` whose message starts with the argument's name and says what was
expected, so the command line can print it as one line (exit status 2) before anything is written.

Examples
--------
>>> check_int(4, "batch_size", minimum=1)
4
>>> check_int(0, "batch_size", minimum=1)
Traceback (most recent call last):
...
ValueError: batch_size: expected an integer >= 1, got 0
>>> check_float(float("nan"), "lr", positive=True)
Traceback (most recent call last):
...
ValueError: lr: expected a finite number > 0, got nan
>>> check_keywords(dict(chanels=1), ["channels", "depth"], "teacher cnn")
Traceback (most recent call last):
...
ValueError: teacher cnn: unknown option 'chanels' (did you mean 'channels'?); valid options: channels, depth
"""
from __future__ import annotations

import difflib
import inspect
import math
import numbers
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

__all__ = ["check_int", "check_float", "check_keywords", "accepted_keywords", "check_out_dir", "check_choice"]


def check_int(value: Any, name: str, minimum: Optional[int] = None, allow_none: bool = False) -> Optional[int]:
    """``value`` as an ``int`` if it is an integer (not a bool or a float) ``>= minimum``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}: expected an integer{_bound(minimum, '>=')}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected an integer{_bound(minimum, '>=')}, got {value!r}")
    return int(value)


def check_float(value: Any, name: str, positive: bool = False, minimum: Optional[float] = None,
                allow_none: bool = False) -> Optional[float]:
    """``value`` as a finite ``float`` (``> 0`` with ``positive``, ``>= minimum`` with ``minimum``)."""
    if value is None and allow_none:
        return None
    what = "a finite number" + (" > 0" if positive else _bound(minimum, ">="))
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    if (positive and value <= 0) or (minimum is not None and value < minimum):
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return float(value)


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``, else a ``ValueError`` listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}"
                         + _suggest(value, [str(c) for c in choices]))
    return value


def _bound(minimum: Optional[float], op: str) -> str:
    return "" if minimum is None else f" {op} {minimum}"


def _suggest(word: Any, options: list[str]) -> str:
    close = difflib.get_close_matches(str(word), options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def accepted_keywords(fn: Callable) -> Optional[list[str]]:
    """The keyword names ``fn`` (a function or a class) accepts, or ``None`` if it takes ``**kwargs``."""
    sig = inspect.signature(fn)
    names = []
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            return None
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
            names.append(p.name)
    return names


def check_keywords(kwargs: dict, valid: Optional[Iterable[str]], what: str) -> None:
    """Refuse keys of ``kwargs`` that are not in ``valid`` (``None``: anything goes), suggesting a close one."""
    if valid is None:
        return
    valid = list(valid)
    for key in kwargs:
        if key not in valid:
            raise ValueError(f"{what}: unknown option {key!r}{_suggest(key, valid)}; valid options: "
                             f"{', '.join(sorted(valid))}")


def check_out_dir(path: Any, name: str = "--out") -> Path:
    """A usable output folder: a non-empty path that is a folder or does not exist yet, inside a folder
    this process may write to. Nothing is created."""
    if path is None or str(path).strip() == "":
        raise ValueError(f"{name}: expected a folder path (e.g. runs/NAME), got {str(path)!r}")
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"{name}: {p} exists and is not a folder")
    probe = p
    while not probe.exists():  # the nearest existing ancestor must be a writable folder
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{name}: cannot create {p}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: cannot write to {probe} (permission denied)")
    return p
