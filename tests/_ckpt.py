"""Edit a checkpoint's embedded metadata in place (tests that inject corrupt or mismatched states)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from safetensors.torch import load, save

from symclone.io import META_KEY, load_checkpoint


def set_meta(stem: str | Path, meta: Any) -> None:
    """Rewrite ``<stem>.safetensors`` with the same tensors and ``meta`` (a JSON value, or raw text) as its
    metadata; ``<stem>.json`` is left as it is (loading ignores it)."""
    st = Path(stem).with_suffix(".safetensors")
    tensors = load(st.read_bytes())
    text = meta if isinstance(meta, str) else json.dumps(meta)
    st.write_bytes(save(tensors, metadata={META_KEY: text}))


def edit_meta(stem: str | Path, fn: Callable[[dict], None]) -> None:
    """Apply ``fn`` to the checkpoint's metadata dict and write it back."""
    _, meta = load_checkpoint(stem)
    fn(meta)
    set_meta(stem, meta)
