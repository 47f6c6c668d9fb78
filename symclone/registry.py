"""Name -> constructor registries for teachers and students (timm-style ``create_model``).

Examples
--------
>>> reg = Registry("toy", package=None)
>>> @reg.register("double")
... class Double:
...     def __init__(self, k=2): self.k = k
>>> reg.create("double", k=3).k
3
>>> reg.names()
['double']
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Optional

__all__ = ["Registry", "TEACHERS", "STUDENTS", "register_teacher", "create_teacher", "list_teachers",
           "register_student", "create_student", "list_students"]


class Registry:
    """A registry of constructors, populated by importing ``package`` on first use."""

    def __init__(self, kind: str, package: Optional[str]):
        self.kind = kind
        self.package = package
        self._entries: dict[str, Callable[..., Any]] = {}
        self._loaded = package is None

    def register(self, name: str) -> Callable:
        def deco(obj):
            self._entries[name] = obj
            obj.registry_name = name
            return obj
        return deco

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self.package)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> Callable[..., Any]:
        self._load()
        if name not in self._entries:
            raise ValueError(f"{self.kind}: unknown {self.kind} {name!r}; expected one of {self.names()}")
        return self._entries[name]

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build ``name`` with ``kwargs``; an unknown keyword is a ``ValueError`` naming the valid ones."""
        from .validation import accepted_keywords, check_keywords

        ctor = self.get(name)
        check_keywords(kwargs, accepted_keywords(ctor), f"{self.kind} {name}")
        return ctor(**kwargs)


TEACHERS = Registry("teacher", "symclone.teachers")
STUDENTS = Registry("student", "symclone.students")


def register_teacher(name: str) -> Callable:
    """Class decorator: make a teacher available as ``create_teacher(name)``."""
    return TEACHERS.register(name)


def create_teacher(name: str, **kwargs: Any) -> Any:
    """Build a registered teacher by name (see :func:`list_teachers`)."""
    return TEACHERS.create(name, **kwargs)


def list_teachers() -> list[str]:
    """Names accepted by :func:`create_teacher`, sorted.

    Examples
    --------
    >>> "cnn" in list_teachers() and "gcnn_c4" in list_teachers()
    True
    """
    return TEACHERS.names()


def register_student(name: str) -> Callable:
    """Class decorator: make a student available as ``create_student(name)``."""
    return STUDENTS.register(name)


def create_student(name: str, **kwargs: Any) -> Any:
    """Build a registered student by name (see :func:`list_students`)."""
    return STUDENTS.create(name, **kwargs)


def list_students() -> list[str]:
    """Names accepted by :func:`create_student`, sorted.

    Examples
    --------
    >>> [n for n in ("mlp", "transformer", "blocks") if n in list_students()]
    ['mlp', 'transformer', 'blocks']
    """
    return STUDENTS.names()
