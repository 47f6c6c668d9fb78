"""mkdocs hook: a source tree in which ``symclone.teachers`` etc. exist where the API reader looks.

``teachers/``, ``students/`` and ``analysis/`` install as ``symclone.teachers`` … through
``[tool.setuptools.package-dir]``; the static reader of mkdocstrings only knows folders. Before the
build this hook lays out ``.cache/api_src/symclone/`` as symbolic links: every entry of ``symclone/``
plus the three mapped folders, so ``::: symclone.teachers`` resolves without importing anything.
"""
from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / ".cache" / "api_src"
MAPPED = ("teachers", "students", "analysis")


def on_startup(**kwargs) -> None:
    """Build the staging tree (idempotent; rebuilt on every build)."""
    pkg = STAGE / "symclone"
    if STAGE.exists():
        shutil.rmtree(STAGE)
    pkg.mkdir(parents=True)
    for entry in (ROOT / "symclone").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for name in MAPPED:
        (pkg / name).symlink_to(ROOT / name)
