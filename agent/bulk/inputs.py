"""What an ``upload`` command names: its options, its batch id, and the files it means.

``candidates`` turns PATH arguments (files, folders, globs) or an ``info.labels`` file into
intake ``Item``s lazily, one at a time, so a folder of 50,000 files never becomes a list
in memory. Inputs that cannot be samples are reported through a callback with the file
and the reason, and the rest proceeds.

The batch id is derived from the command's inputs (resolved paths and options, not the
files found), so running the same command again after a kill resumes the same batch.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from ..config import DEFAULT_PATTERNS, Concurrency, Config, TaggingConfig
from ..core.files import ignored_name, matches
from ..core.intake import Item
from ..core.sidecar import SIDECAR_SUFFIX
from ..core.tagger import UNSET, Context
from .infofile import BadEntry, read_info_file

MAX_UPLOAD_BYTES = 100_000_000
"""The ingestion service's documented limit per file (100 MB); larger files are refused."""
SOURCE = "upload"

Report = Callable[[str, str], None]
"""Called with (file or input, reason) for every input that is not queued."""


@dataclass(frozen=True)
class UploadRequest:
    """The ``upload`` command's inputs, validated by the CLI."""

    paths: tuple[str, ...] = ()
    info_file: Path | None = None
    category: str | None = None
    label: str | None = None
    """None: the service infers the label from the file name; "": unlabeled."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    session: str | None = None
    allow_duplicates: bool = False
    concurrency: Concurrency | None = None
    give_up_after: float = 60.0
    captured_at: bool = True
    """False (``--no-captured-at``): no derived ``captured_at``, so files of one session
    agree on metadata and share requests."""
    max_bytes_per_second: int | None = None
    category_from_folder: bool = False
    """``--category-from-folder``: a file below a folder named ``training``, ``testing`` or
    ``anomaly`` goes to that category (``category`` is the fallback)."""


def run_config(config: Config, request: UploadRequest) -> Config:
    """The config as this command runs it: its options replace the config's values."""
    if request.concurrency is not None:
        config = replace(config, ingestion=replace(config.ingestion,
                                                   concurrency=request.concurrency))  # fmt: skip
    if not request.captured_at:
        config = replace(config, tagging=TaggingConfig(captured_at=False))
    # upload windows are the daemon's: a person running the command means now (the cap and
    # the daily budget still hold)
    link = replace(config.ingestion.link, upload_windows=())
    if request.max_bytes_per_second is not None:
        link = replace(link, max_bytes_per_second=request.max_bytes_per_second)
    return replace(config, ingestion=replace(config.ingestion, link=link))


def batch_id(request: UploadRequest, config: Config) -> str:
    """A stable id for this command: the same inputs and options give the same batch."""
    doc = {
        "v": 1,
        "paths": sorted(_absolute(p) for p in request.paths),
        "info_file": _absolute(str(request.info_file)) if request.info_file else None,
        "category": request.category,
        "label": request.label,
        "metadata": dict(sorted(request.metadata.items())),
        "session": request.session,
        "allow_duplicates": request.allow_duplicates,
        "config": config.source,
    }
    if request.category_from_folder:  # kept out when off: the ids of earlier runs stay
        doc["category_from_folder"] = True
    if not request.captured_at:  # other metadata: another batch (kept out when on, so the
        doc["captured_at"] = False  # ids of earlier runs stay the same)
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8")).hexdigest()
    return f"upload-{digest[:16]}"


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))  # noqa: PTH100 - symlinks kept as named


def run_metadata(request: UploadRequest, config: Config) -> dict[str, str]:
    """Metadata the command adds to every file: ``--metadata`` and the session group key."""
    metadata = dict(request.metadata)
    if request.session is not None:
        metadata[config.ingestion.group_key] = request.session
    return metadata


def candidates(request: UploadRequest, config: Config, batch: str | None,
               report: Report) -> Iterator[Item]:  # fmt: skip
    """The intake items this command names, lazily; bad inputs go to ``report``."""
    base = Context(
        label=UNSET if request.label is None else request.label,
        category=request.category,
        metadata=run_metadata(request, config),
    )
    if request.info_file is not None:
        yield from _from_info_file(request, config, base, batch, report)
        return
    for arg in request.paths:
        for path, explicit, root, no_sidecar in _expand(arg, report):
            st = _usable(path, explicit, report)
            if st is False:
                continue
            context = base
            if request.category_from_folder:
                context = replace(base, category=folder_category(path, root) or base.category)
            yield Item(path=path, context=context, source=SOURCE,
                       allow_duplicates=request.allow_duplicates, batch=batch,
                       stat=st, no_sidecar=no_sidecar)  # fmt: skip


FOLDER_CATEGORIES = ("training", "testing", "anomaly")
"""Folder names ``--category-from-folder`` reads (the official uploader's ``--directory``
layout, ``training/`` and ``testing/``, plus ``anomaly``)."""


def folder_category(path: Path, root: Path) -> str | None:
    """The category named by the nearest folder holding ``path``, from its own folder up
    to ``root`` (the folder named on the command line) and no further."""
    for folder in path.parents:
        if folder.name.lower() in FOLDER_CATEGORIES:
            return folder.name.lower()
        if folder == root or folder == folder.parent:
            return None
    return None


INFO_LABELS = "info.labels"


def info_labels_of(paths: tuple[str, ...]) -> Path | None:
    """``DIR/info.labels`` when the only PATH is a folder that holds one (the Edge Impulse
    Python SDK's ``upload_directory`` reads it the same way), else None."""
    if len(paths) != 1:
        return None
    folder = Path(os.path.expanduser(paths[0]))
    found = folder / INFO_LABELS
    return found if folder.is_dir() and found.is_file() else None


Found = tuple[Path, bool, Path, bool]
"""A file, whether it was named explicitly, the folder it was found in, and whether that
folder's listing showed it has no sidecar."""


def _expand(arg: str, report: Report) -> Iterator[Found]:
    """The files of one PATH argument: a file, a folder or a glob."""
    path = Path(os.path.expanduser(arg))
    if path.is_dir():
        yield from _walk(path, report)
        return
    if path.exists() or path.is_symlink():
        real = Path(os.path.realpath(path))
        yield real, True, real.parent, False
        return
    if not glob.has_magic(arg):
        report(arg, "no such file or folder")
        return
    found = False
    for match in glob.iglob(os.path.expanduser(arg), recursive=True):  # noqa: PTH207 - lazy
        found = True
        m = Path(match)
        if m.is_dir():
            yield from _walk(m, report)
        else:
            real = Path(os.path.realpath(m))
            yield real, False, real.parent, False
    if not found:
        report(arg, "no file matches this pattern")


def _walk(folder: Path, report: Report) -> Iterator[Found]:
    """Regular files under ``folder``, streamed in directory order.

    Unlike ``core.files.walk`` (sorted, for the daemon's scans) nothing is listed ahead: a flat
    folder of 200,000 files costs no more memory than one of 200 (sorting the entries of
    a 50,000-file folder alone costs about 13 MB). Hidden names and symbolic links are
    skipped, as in the daemon. A folder is listed twice: first for the names of its
    sidecars (few, usually none), so a file without one is not asked for it (an open that
    fails costs as much as the read of a small file).
    """
    root = os.path.realpath(folder)
    base = Path(root)
    stack = [root]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                sidecars = {e.name for e in entries if e.name.endswith(SIDECAR_SUFFIX)}
            with os.scandir(current) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith("."):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            yield (
                                Path(entry.path),
                                False,
                                base,
                                name + SIDECAR_SUFFIX not in sidecars,
                            )
                    except OSError:
                        continue
        except OSError as exc:
            report(current, f"cannot list the folder: {exc.strerror or exc}")


def _accepted(name: str) -> bool:
    return matches(name, DEFAULT_PATTERNS)  # ``*.ext`` patterns: one set lookup there


def _usable(path: Path, explicit: bool, report: Report) -> os.stat_result | Literal[False] | None:
    """Filter names (silently inside folders and globs, with a message when named): False
    if the file is not sent, else its status (None: it could not be read; intake says why),
    which intake then uses instead of asking again."""
    name = path.name
    if name.endswith(SIDECAR_SUFFIX) or name.lower().endswith(".labels"):
        if explicit:
            report(str(path), "a sidecar or labels file, not a sample")
        return False
    if not _accepted(name) or (not explicit and ignored_name(name)):
        if explicit:
            kinds = " ".join(p.lstrip("*") for p in DEFAULT_PATTERNS)
            report(str(path), f"not a file type the ingestion service accepts ({kinds})")
        return False
    try:
        st = os.stat(path, follow_symlinks=False)  # a named path is already resolved
    except OSError:
        return None  # intake reports what is wrong with it
    return False if _over_limit(path, st.st_size, report) else st


def too_large(path: Path, report: Report) -> bool:
    """Report and refuse a file over the service's 100 MB limit (it would be refused)."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return False  # intake reports what is wrong with it
    return _over_limit(path, size, report)


def _over_limit(path: Path, size: int, report: Report) -> bool:
    if size > MAX_UPLOAD_BYTES:
        report(str(path), f"{size / 1e6:.1f} MB, over the ingestion service's limit of "
               f"{MAX_UPLOAD_BYTES // 1_000_000} MB per file")  # fmt: skip
        return True
    return False


def _from_info_file(request: UploadRequest, config: Config, base: Context, batch: str | None,
                    report: Report) -> Iterator[Item]:  # fmt: skip
    assert request.info_file is not None
    for entry in read_info_file(request.info_file):
        if isinstance(entry, BadEntry):
            report(entry.where, entry.reason)
            continue
        if too_large(entry.path, report):
            continue
        metadata = {**request.metadata, **entry.metadata}
        if request.session is not None:
            metadata[config.ingestion.group_key] = request.session
        context = Context(
            label=base.label if entry.label is UNSET else entry.label,
            category=entry.category or request.category,
            metadata=metadata,
        )
        extra: dict[str, object] | None = {"parts": list(entry.parts)} if entry.parts else None
        yield Item(path=entry.path, context=context, source=SOURCE,
                   allow_duplicates=request.allow_duplicates, upload_name=entry.upload_name,
                   extra=extra, batch=batch)  # fmt: skip
