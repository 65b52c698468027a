"""The file rules: which paths can be samples, and how folders are walked.

One place for every source: the watcher, the reconciliation scan, capture sources and
the ``upload`` command all decide "is this a sample?" with these functions, so a hidden
or temporary name is never queued whichever way it arrives.
"""

from __future__ import annotations

import fnmatch
import functools
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


def sync_folder(folder: Path) -> None:
    """fsync a folder: the names created in, renamed into or removed from it are durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ignored_name(name: str) -> bool:
    """Hidden and temporary names are never samples (writers rename them into place)."""
    low = name.lower()
    return name.startswith(".") or low.endswith(TEMP_SUFFIXES) or low.endswith(SIDECAR_SUFFIX)


def matches(name: str, patterns: Sequence[str]) -> bool:
    low = name.lower()
    suffixes, others = _split_patterns(tuple(patterns))
    dot = low.rfind(".")
    if dot > 0 and low[dot:] in suffixes:
        return True
    return any(fnmatch.fnmatchcase(low, p) for p in others)


@functools.lru_cache(maxsize=64)
def _split_patterns(patterns: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    """``*.ext`` patterns as a set of suffixes (one lookup per name, not a match per
    pattern: a scan asks this of every file), and the rest as they are."""
    simple = {p[1:] for p in patterns if p.startswith("*.") and not any(c in p[1:] for c in "*?[")}
    return frozenset(simple), tuple(p for p in patterns if p[1:] not in simple)


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
    """Regular files under ``root`` in name order (no symlinked folders), skipping hidden
    folders. Only the names of one folder are held at a time (about 60 bytes a file, not
    the 300 of a directory entry): 20,000 files dropped into one folder cost a megabyte."""
    for folder, files, _ in walk_folders(root, recursive):
        for name in files:
            yield folder / name


def walk_folders(root: Path, recursive: bool) -> Iterator[tuple[Path, list[str], list[str]]]:
    """``walk`` a folder at a time: each folder, the sorted names of its regular files, and
    the names of what is neither a file nor a folder there (links, FIFOs, devices), so a
    caller sees which files have a sidecar without asking the file system for each."""
    stack = [root]
    while stack:
        folder = stack.pop()
        files, folders, others = _listing(folder)
        yield folder, files, others
        if recursive:
            stack.extend(folder / name for name in folders)


def _listing(folder: Path) -> tuple[list[str], list[str], list[str]]:
    """The sorted names of the regular files and of the folders (not links) in ``folder``,
    and the names of the rest."""
    files: list[str] = []
    folders: list[str] = []
    others: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.name)
                    elif entry.is_file(follow_symlinks=False):
                        files.append(entry.name)
                    else:
                        others.append(entry.name)
                except OSError:
                    others.append(entry.name)
                    continue
    except OSError as exc:
        log.warning("cannot list %s: %s", folder, exc.strerror or exc)
    files.sort()
    folders.sort(reverse=True)  # popped from the stack in name order
    return files, folders, others


def stat_sample(path: Path, st: os.stat_result | None = None) -> os.stat_result | str:
    """The file's status if it can be a sample (regular, non-empty, readable), else why not.
    ``st``: its status (not following a link) as the caller just read it."""
    if st is None:
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
