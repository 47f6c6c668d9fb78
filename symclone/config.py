"""Frozen dataclass configs with dotted overrides (``--distill.lr=3e-4``).

Examples
--------
>>> from dataclasses import dataclass, field
>>> @dataclass(frozen=True)
... class Opt:
...     lr: float = 1e-3
...     steps: int = 100
>>> @dataclass(frozen=True)
... class Run:
...     name: str = "demo"
...     opt: Opt = field(default_factory=Opt)
>>> apply_overrides(Run(), ["opt.lr=3e-4", "name=x"])
Run(name='x', opt=Opt(lr=0.0003, steps=100))
"""
from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Iterable

__all__ = ["apply_overrides", "to_dict", "from_dict", "parse_value"]


def parse_value(text: str, typ: Any) -> Any:
    """Parse ``text`` into ``typ`` (bool/int/float/str/tuple, Optional, or JSON)."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin is typing.Union or (origin is not None and str(origin) == "types.UnionType"):
        if text.lower() in ("none", "null"):
            return None
        non_none = [a for a in args if a is not type(None)]
        return parse_value(text, non_none[0])
    if typ is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if typ in (int, float, str):
        return typ(text)
    if origin in (tuple, list):
        vals = json.loads(text) if text.startswith("[") else [v for v in text.split(",") if v]
        inner = args[0] if args else str
        return tuple(parse_value(str(v), inner) for v in vals)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(cfg: Any, overrides: Iterable[str]) -> Any:
    """Return a copy of the (nested, frozen) dataclass ``cfg`` with ``a.b=value`` overrides."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override: expected 'key=value' (e.g. distill.lr=3e-4), got {item!r}")
        key, text = item.split("=", 1)
        cfg = _set(cfg, key.strip().lstrip("-").split("."), text)
    return cfg


def _set(cfg: Any, path: list[str], text: str) -> Any:
    if not dataclasses.is_dataclass(cfg):
        raise ValueError(f"override: {'.'.join(path)!r} does not name a config field")
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    name = path[0]
    if name not in fields:
        raise ValueError(f"override: unknown field {name!r} in {type(cfg).__name__}; "
                         f"expected one of {sorted(fields)}")
    if len(path) > 1:
        return dataclasses.replace(cfg, **{name: _set(getattr(cfg, name), path[1:], text)})
    try:
        hints = typing.get_type_hints(type(cfg))
    except (NameError, TypeError):  # unresolvable forward references: fall back to the value's type
        hints = {}
    current = getattr(cfg, name)
    typ = hints.get(name, type(current) if current is not None else str)
    try:
        value = parse_value(text, typ)
    except ValueError as err:
        raise ValueError(f"override: {name}={text!r}: {err}") from None
    return dataclasses.replace(cfg, **{name: value})


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict) -> Any:
    """Rebuild a nested dataclass from :func:`to_dict` output (unknown keys are an error)."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):
        hints = {}
    kwargs = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for k, v in data.items():
        if k not in names:
            raise ValueError(f"config: unknown field {k!r} for {cls.__name__}")
        t = hints.get(k)
        if dataclasses.is_dataclass(t) and isinstance(v, dict):
            v = from_dict(t, v)
        elif isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    return cls(**kwargs)
