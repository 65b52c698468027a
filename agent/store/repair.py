"""Setting a damaged queue file aside and starting a new one (``queue rebuild``).

The damaged file is moved, never deleted: ``queue.db`` becomes
``queue.db.damaged-<UTC time>`` (with its ``-wal`` and ``-shm`` beside it under the same
new name, so SQLite still pairs them). What can be read of it is kept: the rows of
delivered files, read in row order until the first damaged page, are copied into the new
queue, so files that are still in a watched folder are not sent again. Everything else
is rebuilt by the daemon's reconciliation scan, which queues every file of a watched
folder that the queue does not know.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import QueueError
from .queue import Queue
from .rows import State

SIDE_FILES = ("-wal", "-shm")


@dataclass(frozen=True)
class Rebuilt:
    aside: Path
    """Where the damaged file now is."""
    moved: tuple[Path, ...]
    """Every file moved (the queue and its ``-wal``/``-shm``, as they were)."""
    kept: int
    """Delivered rows read from the damaged file into the new queue."""
    note: str
    """Why reading the damaged file stopped, or ""."""


def set_aside(path: Path, now: float | None = None) -> tuple[Path, tuple[Path, ...]]:
    """Move ``path`` and its side files to ``<path>.damaged-<UTC time>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    moved = []
    for suffix in ("", *SIDE_FILES):
        src = Path(f"{path}{suffix}")
        if not src.exists():
            continue
        try:
            src.rename(f"{aside}{suffix}")
        except OSError as exc:
            raise QueueError(f"{src}: cannot move it aside to {aside}{suffix}:"
                             f" {exc.strerror}") from None  # fmt: skip
        moved.append(src)
    return aside, tuple(moved)


def rebuild(path: Path) -> Rebuilt:
    """Set ``path`` aside, create a new queue there and copy into it the delivered rows
    that can still be read from the old one."""
    aside, moved = set_aside(path)
    queue = Queue(path)
    try:
        kept, note = _copy_delivered(aside, queue)
        queue.sync()
    finally:
        queue.close()
    return Rebuilt(aside, moved, kept, note)


def _copy_delivered(aside: Path, queue: Queue) -> tuple[int, str]:
    """Delivered rows of the damaged file, in row order until the first unreadable page;
    how many, and why reading stopped early ("" if it did not)."""
    with queue.reading() as db:
        columns = [r[1] for r in db.execute("PRAGMA table_info(files)") if r[1] != "id"]
    try:
        old = sqlite3.connect(f"file:{aside}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return 0, str(exc)
    stopped = [""]

    def readable(cursor: sqlite3.Cursor) -> Iterator[tuple[object, ...]]:
        try:
            yield from cursor
        except sqlite3.Error as exc:
            stopped[0] = str(exc)

    kept = 0
    try:
        have = {r[1] for r in old.execute("PRAGMA table_info(files)")}
        wanted = [c for c in columns if c in have]
        cursor = old.execute(f"SELECT {', '.join(wanted)} FROM files WHERE state=? ORDER BY id",
                             (int(State.DELIVERED),))  # fmt: skip
        # OR IGNORE: a damaged file may hold the same file twice; one bad row must not
        # undo the copy of every other
        insert = (f"INSERT OR IGNORE INTO files ({', '.join(wanted)})"
                  f" VALUES ({', '.join('?' * len(wanted))})")  # fmt: skip
        with queue.transaction() as db:
            for row in readable(cursor):
                kept += db.execute(insert, row).rowcount
    except (sqlite3.Error, QueueError) as exc:
        stopped[0] = str(exc)
    finally:
        with contextlib.suppress(sqlite3.Error):
            old.close()
    return kept, stopped[0]
