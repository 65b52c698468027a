"""The file rules: which paths can be samples, and how folders are walked.

One place for every source: the watcher, the reconciliation scan, capture sources and
the ``upload`` command all decide "is this a sample?" with these functions, so a hidden
or temporary name is never queued whichever way it arrives.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..config import WatchConfig
from .sidecar import SIDECAR_SUFFIX, is_sidecar

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")
VANISHED = "vanished before it could be queued"


def ignored_name(name: str) -> bool:
    """Hidden and temporary names are never samples (writers rename them into place)."""
    low = name.lower()
    return name.startswith(".") or low.endswith(TEMP_SUFFIXES) or low.endswith(SIDECAR_SUFFIX)


def matches(name: str, patterns: Sequence[str]) -> bool:
    low = name.lower()
    return any(fnmatch.fnmatchcase(low, p) for p in patterns)


def wanted(path: Path, watch: WatchConfig) -> bool:
    """Would this path be a sample of ``watch`` (or a sidecar that may release one)?"""
    if is_sidecar(path) and not path.name.startswith("."):
        return True
    if ignored_name(path.name) or not matches(path.name, watch.patterns):
        return False
    try:
        rel = path.relative_to(watch.path)
    except ValueError:
        return False
    if any(part.startswith(".") for part in rel.parts[:-1]):
        return False
    return watch.recursive or len(rel.parts) == 1


def walk(root: Path, recursive: bool) -> Iterator[Path]:
    """Regular files under ``root`` (no symlinked folders), skipping hidden folders."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc.strerror or exc)
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if recursive:
                        stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    yield Path(entry.path)
            except OSError:
                continue


def stat_sample(path: Path) -> os.stat_result | str:
    """The file's status if it can be a sample (regular, non-empty, readable), else why not."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return VANISHED
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size == 0:
        return "empty file"
    if not os.access(path, os.R_OK):
        return "not readable by the agent"
    return st
