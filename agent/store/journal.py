"""A durable, bounded record of capture commands: no command id runs twice.

MQTT QoS 1 delivers *at least* once, and operators re-send commands; the id is what makes
a capture happen once. The journal lives next to the queue (``commands.db``, its own file
so the queue's schema stays the queue's) and remembers each id with its progress, its
capture file, its queue row once the file is queued, and where to send its events, so a
restart can finish reporting on captures it had started. Old entries are pruned: at most
``max_rows``, none older than ``keep_seconds``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .sqlite import Database

KEEP_SECONDS = 7 * 86400
MAX_ROWS = 10_000
OPEN_STATES = ("accepted", "captured", "queued")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY,
    received_at REAL NOT NULL,
    source TEXT,
    state TEXT NOT NULL,
    path TEXT,
    reply_topic TEXT,
    correlation BLOB
);
CREATE INDEX IF NOT EXISTS commands_age ON commands (received_at);
"""
_COLUMNS = "id, received_at, source, state, path, reply_topic, correlation, row_id"


def _setup(db: sqlite3.Connection) -> None:
    db.executescript(_SCHEMA)
    columns = {r[1] for r in db.execute("PRAGMA table_info(commands)")}
    if "row_id" not in columns:  # journals written before captures were tracked by row
        db.execute("ALTER TABLE commands ADD COLUMN row_id INTEGER")


@dataclass(frozen=True)
class Entry:
    id: str
    received_at: float
    source: str | None
    state: str
    path: str | None
    reply_topic: str | None
    correlation: bytes | None
    row_id: int | None = None


class CommandJournal:
    def __init__(
        self,
        path: Path,
        *,
        keep_seconds: float = KEEP_SECONDS,
        max_rows: int = MAX_ROWS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.keep_seconds = keep_seconds
        self.max_rows = max_rows
        self.clock = clock
        self._inserts = 0
        self.db = Database(path, what="command journal", setup=_setup, timeout=10.0)
        self.prune()

    def claim(
        self,
        command_id: str,
        source: str | None,
        reply_topic: str | None,
        correlation: bytes | None,
        state: str = "accepted",
    ) -> Entry | None:
        """Record a new id and return None; for a known id, return its entry (no change)."""
        with self.db.reading() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO commands (id, received_at, source, state, reply_topic,"
                " correlation) VALUES (?,?,?,?,?,?)",
                (command_id, self.clock(), source, state, reply_topic, correlation),
            )
            if cur.rowcount:
                self._inserts += 1
                if self._inserts % 100 == 0:
                    self._prune(db)
                return None
            row = db.execute(f"SELECT {_COLUMNS} FROM commands WHERE id=?",
                             (command_id,)).fetchone()  # fmt: skip
        return Entry(*row)

    def update(self, command_id: str, state: str, *, path: str | None = None,
               row_id: int | None = None) -> None:  # fmt: skip
        with self.db.reading() as db:
            db.execute(
                "UPDATE commands SET state=?, path=coalesce(?, path),"
                " row_id=coalesce(?, row_id) WHERE id=?",
                (state, path, row_id, command_id),
            )

    def open_entries(self) -> list[Entry]:
        """Commands a previous run did not finish reporting on (bounded by ``max_rows``)."""
        marks = ",".join("?" * len(OPEN_STATES))
        with self.db.reading() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM commands WHERE state IN ({marks})"
                              " ORDER BY received_at", OPEN_STATES).fetchall()  # fmt: skip
        return [Entry(*r) for r in rows]

    def prune(self) -> None:
        with self.db.reading() as db:
            self._prune(db)

    def _prune(self, db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM commands WHERE received_at < ?",
                   (self.clock() - self.keep_seconds,))  # fmt: skip
        db.execute("DELETE FROM commands WHERE id IN (SELECT id FROM commands"
                   " ORDER BY received_at DESC LIMIT -1 OFFSET ?)", (self.max_rows,))  # fmt: skip

    def close(self) -> None:
        self.db.close()
