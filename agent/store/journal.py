"""A durable, bounded record of capture commands: no command id runs twice.

MQTT QoS 1 delivers *at least* once, and operators re-send commands; the id is what makes
a capture happen once. The journal lives next to the queue (``commands.db``, SQLite WAL,
its own file so the queue's schema stays the queue's) and remembers each id with its
progress, its capture file and where to send its events, so a restart can finish
reporting on captures it had started. Old entries are pruned: at most ``max_rows``, none
older than ``keep_seconds``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import QueueError

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


@dataclass(frozen=True)
class Entry:
    id: str
    received_at: float
    source: str | None
    state: str
    path: str | None
    reply_topic: str | None
    correlation: bytes | None


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
        self._lock = threading.Lock()
        self._inserts = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise QueueError(f"{path}: cannot open the command journal: {exc}") from None
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
        with self._lock:
            try:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO commands (id, received_at, source, state, reply_topic,"
                    " correlation) VALUES (?,?,?,?,?,?)",
                    (command_id, self.clock(), source, state, reply_topic, correlation),
                )
                if cur.rowcount:
                    self._inserts += 1
                    if self._inserts % 100 == 0:
                        self._prune_locked()
                    return None
                row = self._db.execute(
                    "SELECT id, received_at, source, state, path, reply_topic, correlation"
                    " FROM commands WHERE id=?",
                    (command_id,),
                ).fetchone()
            except sqlite3.Error as exc:
                raise QueueError(f"{self.path}: {exc}") from None
        return Entry(*row)

    def update(self, command_id: str, state: str, path: str | None = None) -> None:
        with self._lock:
            try:
                self._db.execute(
                    "UPDATE commands SET state=?, path=coalesce(?, path) WHERE id=?",
                    (state, path, command_id),
                )
            except sqlite3.Error as exc:
                raise QueueError(f"{self.path}: {exc}") from None

    def open_entries(self) -> list[Entry]:
        """Commands a previous run did not finish reporting on (bounded by ``max_rows``)."""
        marks = ",".join("?" * len(OPEN_STATES))
        with self._lock:
            rows = self._db.execute(
                "SELECT id, received_at, source, state, path, reply_topic, correlation"
                f" FROM commands WHERE state IN ({marks}) ORDER BY received_at",
                OPEN_STATES,
            ).fetchall()
        return [Entry(*r) for r in rows]

    def prune(self) -> None:
        with self._lock:
            self._prune_locked()

    def _prune_locked(self) -> None:
        try:
            self._db.execute(
                "DELETE FROM commands WHERE received_at < ?", (self.clock() - self.keep_seconds,)
            )
            self._db.execute(
                "DELETE FROM commands WHERE id IN (SELECT id FROM commands"
                " ORDER BY received_at DESC LIMIT -1 OFFSET ?)",
                (self.max_rows,),
            )
        except sqlite3.Error as exc:
            raise QueueError(f"{self.path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()
