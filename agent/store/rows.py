"""What the queue holds: the states a file moves through and the records read and written.

A row is one version of one file: ``(path, size, mtime_ns)`` is unique, so a rescan never
queues a known file twice, and a file rewritten in place is a new row.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ..text import safe_name, shown


def db_path(path: str) -> str | bytes:
    """How a path is stored: as text, or, for a name that is not valid UTF-8 (its bytes
    decoded with ``surrogateescape``), as its raw bytes. SQLite cannot store such a string
    as text, and one such name must not stop the batch it arrives in."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def db_text(text: str | None) -> str | None:
    """A reason as stored: one naming such a path has its undecodable bytes escaped."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return shown(text)
    return text


def path_from_db(value: str | bytes) -> str:
    """The path ``db_path`` stored, as the ``str`` the rest of the agent uses."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


class State(IntEnum):
    PENDING = 0
    UPLOADING = 1
    DELIVERED = 2
    DEAD = 3
    HELD = 4
    GONE = 5

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class NewFile:
    """A file to queue, tagged."""

    path: str
    size: int
    mtime_ns: int
    source: str
    label: str | None
    category: str
    metadata: dict[str, str]
    state: State = State.PENDING
    last_error: str | None = None
    after_upload: str = "keep"
    move_to: str | None = None
    allow_duplicates: bool = False
    upload_name: str | None = None
    extra: dict[str, Any] | None = None
    batch: str | None = None
    priority: int = 0
    """Higher leases first (``[[watch]] priority``)."""


@dataclass(frozen=True)
class Row:
    id: int
    path: str
    size: int
    mtime_ns: int
    state: State
    source: str
    label: str | None
    category: str
    metadata: dict[str, str]
    upload_name: str | None
    extra: dict[str, Any] | None
    after_upload: str
    move_to: str | None
    allow_duplicates: bool
    batch: str | None
    attempts: int
    next_attempt_at: float
    last_error: str | None
    sha256: str | None
    sample_id: int | None
    enqueued_at: float
    delivered_at: float | None
    priority: int = 0

    @property
    def file_name(self) -> str:
        """The name sent to the service: valid UTF-8, no control characters."""
        return safe_name(self.upload_name or self.path.rpartition("/")[2])


ROW_COLUMNS = (
    "id, path, size, mtime_ns, state, source, label, category, metadata, upload_name, extra, "
    "after_upload, move_to, allow_duplicates, batch, attempts, next_attempt_at, last_error, "
    "sha256, sample_id, enqueued_at, delivered_at, priority"
)


def to_row(r: sqlite3.Row | tuple[Any, ...]) -> Row:
    return Row(
        id=r[0], path=path_from_db(r[1]), size=r[2], mtime_ns=r[3], state=State(r[4]), source=r[5],
        label=r[6], category=r[7], metadata=json.loads(r[8]), upload_name=r[9],
        extra=json.loads(r[10]) if r[10] else None, after_upload=r[11], move_to=r[12],
        allow_duplicates=bool(r[13]), batch=r[14], attempts=r[15], next_attempt_at=r[16],
        last_error=r[17], sha256=r[18], sample_id=r[19], enqueued_at=r[20], delivered_at=r[21],
        priority=r[22],
    )  # fmt: skip


@dataclass(frozen=True)
class Result:
    """What happened to one leased row; written back by ``settle``."""

    row_id: int
    state: State
    error: str | None = None
    next_attempt_at: float = 0.0
    sha256: str | None = None
    sample_id: int | None = None
    count_attempt: bool = True
    bytes_sent: int = 0


@dataclass(frozen=True)
class Recorded:
    """What ``Queue.record`` did with one file."""

    row_id: int
    new: bool
    """A new version was recorded (False: the version was known; its row is ``row_id``)."""
    state: State
    """The row's state now (a known held row re-tagged by an ``upload`` re-run is pending)."""
    released: bool = False
    """A known held row that the new tags made sendable."""
    joined: bool = False
    """A known row that joined the file's batch (an ``upload`` with other options)."""
