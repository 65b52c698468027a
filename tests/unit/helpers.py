"""Small helpers shared by the unit tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge_uploader.config import Config, parse_config
from edge_uploader.store.queue import NewFile


def make_config(data: dict[str, Any] | None = None, base: Path | None = None) -> Config:
    """A config from a dict, without touching the file system."""
    return parse_config(data or {}, "test.toml", base or Path("/"), check_dirs=False)


def new_file(path: Path | str, **over: Any) -> NewFile:
    """A ``NewFile`` for ``path``; size and mtime come from the file when it exists."""
    p = Path(path)
    if "size" not in over and p.exists():
        st = os.stat(p)
        size, mtime_ns = st.st_size, st.st_mtime_ns
    else:
        size, mtime_ns = 10, 1_000_000_000
    fields: dict[str, Any] = {
        "path": str(p), "size": size, "mtime_ns": mtime_ns, "source": "test",
        "label": None, "category": "training", "metadata": {"site": "lab"},
    }  # fmt: skip
    fields.update(over)
    return NewFile(**fields)
