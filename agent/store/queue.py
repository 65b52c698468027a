"""The durable queue: one SQLite file in WAL mode, an acknowledgement state machine.

Nothing is deleted on dequeue. A row moves::

    pending ──lease──► uploading ──ack──► delivered
       ▲                  │  └──────────► dead        (permanent refusal, with the reason)
       └──── retry ───────┘                            (transient: attempts+1, next_attempt_at)
    held    a sidecar or metadata problem; re-tagged when the sidecar changes
    gone    the file vanished or changed before it was sent (a newer version is queued)

A row is one version of one file: ``(path, size, mtime_ns)`` is unique, so a rescan never
queues a known file twice, and a file rewritten in place is queued again.

Durability: ``synchronous=NORMAL`` (the last commits may roll back on power loss; the
reconciliation scan re-finds those files and ``x-disallow-duplicates`` makes a resend
harmless). The one commit that must be durable first is ``delivered`` for a file that will
then be deleted or moved: ``settle(..., durable=True)`` syncs before returning.

All writes happen in short transactions batched by the caller (a burst of enqueues, a
round of results), so the cost per file stays small. One connection, guarded by a lock,
serves every thread of the process.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from ..errors import QueueError

SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    state INTEGER NOT NULL,
    source TEXT NOT NULL,
    label TEXT,
    category TEXT NOT NULL,
    metadata TEXT NOT NULL,
    upload_name TEXT,
    extra TEXT,
    after_upload TEXT NOT NULL DEFAULT 'keep',
    move_to TEXT,
    allow_duplicates INTEGER NOT NULL DEFAULT 0,
    batch TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    sha256 TEXT,
    sample_id INTEGER,
    enqueued_at REAL NOT NULL,
    delivered_at REAL,
    local_done INTEGER NOT NULL DEFAULT 1,
    bytes INTEGER NOT NULL DEFAULT 0,
    UNIQUE (path, size, mtime_ns)
);
CREATE INDEX IF NOT EXISTS files_due ON files (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS files_state ON files (state);
CREATE INDEX IF NOT EXISTS files_path ON files (path);
CREATE INDEX IF NOT EXISTS files_delivered ON files (delivered_at) WHERE delivered_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS files_batch ON files (batch) WHERE batch IS NOT NULL;
CREATE TABLE IF NOT EXISTS agent_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_MIGRATIONS: dict[int, str] = {
    # 1 -> 2: the project side. Deletion sync (a local file of a delivered sample went;
    # delete the sample after a grace period) and resumable metadata backfill jobs.
    2: """
CREATE INDEX IF NOT EXISTS files_sample ON files (sample_id) WHERE sample_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS files_sha256 ON files (sha256) WHERE sha256 IS NOT NULL;
CREATE TABLE IF NOT EXISTS remote_deletes (
    row_id INTEGER PRIMARY KEY,
    sample_id INTEGER NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT,
    state INTEGER NOT NULL,
    noticed_at REAL NOT NULL,
    due_at REAL NOT NULL,
    confirmed INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    done_at REAL
);
CREATE INDEX IF NOT EXISTS remote_deletes_due ON remote_deletes (state, due_at);
CREATE INDEX IF NOT EXISTS remote_deletes_done ON remote_deletes (done_at)
    WHERE done_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS backfill_jobs (
    job TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created_at REAL NOT NULL,
    selected_at REAL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS backfill_items (
    job TEXT NOT NULL,
    sample_id INTEGER NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    detail TEXT,
    PRIMARY KEY (job, sample_id)
) WITHOUT ROWID;
""",
    # 2 -> 3: the upload command leases, counts and recovers one batch's rows.
    3: """
CREATE INDEX IF NOT EXISTS files_batch_due ON files (batch, state, next_attempt_at)
    WHERE batch IS NOT NULL;
""",
}
"""Schema steps: ``_MIGRATIONS[n]`` takes a version ``n - 1`` file to version ``n``."""


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

    @property
    def file_name(self) -> str:
        return self.upload_name or Path(self.path).name


_ROW_COLUMNS = (
    "id, path, size, mtime_ns, state, source, label, category, metadata, upload_name, extra, "
    "after_upload, move_to, allow_duplicates, batch, attempts, next_attempt_at, last_error, "
    "sha256, sample_id, enqueued_at, delivered_at"
)


def _row(r: sqlite3.Row | tuple[Any, ...]) -> Row:
    return Row(
        id=r[0], path=r[1], size=r[2], mtime_ns=r[3], state=State(r[4]), source=r[5],
        label=r[6], category=r[7], metadata=json.loads(r[8]), upload_name=r[9],
        extra=json.loads(r[10]) if r[10] else None, after_upload=r[11], move_to=r[12],
        allow_duplicates=bool(r[13]), batch=r[14], attempts=r[15], next_attempt_at=r[16],
        last_error=r[17], sha256=r[18], sample_id=r[19], enqueued_at=r[20], delivered_at=r[21],
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


class Queue:
    """The queue file. Thread-safe; every method is one short transaction."""

    def __init__(self, path: Path, *, clock: Any = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._migrate()
            self._keep_owner()
        except sqlite3.Error as exc:
            raise QueueError(f"{path}: cannot open the queue: {exc}") from None
        except OSError as exc:
            raise QueueError(f"{path}: cannot create the queue folder: {exc.strerror}") from None

    # -- plumbing ------------------------------------------------------------------------
    def _keep_owner(self) -> None:
        """Root opening the service's queue (``status`` run with sudo) must not leave the
        ``-wal``/``-shm`` files owned by root: the service could no longer open its queue."""
        if os.geteuid() != 0:
            return
        st = self.path.stat()
        if st.st_uid == 0:
            return
        for suffix in ("-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            with contextlib.suppress(OSError):
                if side.stat().st_uid != st.st_uid:
                    os.chown(side, st.st_uid, st.st_gid)

    def _migrate(self) -> None:
        """Bring the file to ``SCHEMA_VERSION`` in one transaction (a crash leaves it as it
        was). The version is read again under the write lock, so two processes opening an
        old file at once migrate it once."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise QueueError(
                f"{self.path}: written by a newer edge-uploader (schema {version}); upgrade"
            )
        if version == SCHEMA_VERSION:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                script = _SCHEMA + "".join(
                    _MIGRATIONS[v] for v in range(max(version, 1) + 1, SCHEMA_VERSION + 1)
                )
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _write(self) -> _Tx:
        return _Tx(self)

    def transaction(self) -> _Tx:
        """A write transaction for modules that keep their own tables in this file
        (``agent.ledger``): ``with queue.transaction() as db: db.execute(...)``."""
        return _Tx(self)

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the queue's lock, for short reads of such tables."""
        with self._lock:
            yield self._db

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            self._db.close()

    def integrity_check(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    # -- start-up --------------------------------------------------------------------
    def recover(self, batch: str | None = None) -> int:
        """Return rows left ``uploading`` by a crash to ``pending``; how many there were.

        With ``batch``, only that batch's rows (an ``upload`` command recovering its own
        run while a daemon may be uploading other rows of the same file).
        """
        scope, args = ("", ()) if batch is None else (" AND batch=?", (batch,))
        with self._write() as db:
            cur = db.execute(
                f"UPDATE files SET state=? WHERE state=?{scope}",
                (State.PENDING, State.UPLOADING, *args),
            )
            return cur.rowcount

    def unfinished_local_actions(self) -> list[Row]:
        """Delivered rows whose delete/move did not happen (a crash right after delivery)."""
        with self._lock:
            cur = self._db.execute(
                f"SELECT {_ROW_COLUMNS} FROM files WHERE state=? AND local_done=0",
                (State.DELIVERED,),
            )
            return [_row(r) for r in cur.fetchall()]

    def mark_local_done(self, row_ids: Iterable[int]) -> None:
        with self._write() as db:
            db.executemany("UPDATE files SET local_done=1 WHERE id=?", [(i,) for i in row_ids])

    # -- intake --------------------------------------------------------------------------
    def known(self, path: str, size: int, mtime_ns: int) -> bool:
        with self._lock:
            cur = self._db.execute(
                "SELECT 1 FROM files WHERE path=? AND size=? AND mtime_ns=?",
                (path, size, mtime_ns),
            )
            return cur.fetchone() is not None

    def enqueue_many(self, files: Sequence[NewFile]) -> list[int]:
        """Insert new versions; a known ``(path, size, mtime_ns)`` is skipped. New row ids."""
        now = self._clock()
        ids: list[int] = []
        with self._write() as db:
            for f in files:
                cur = db.execute(
                    "INSERT OR IGNORE INTO files (path, size, mtime_ns, state, source, label,"
                    " category, metadata, upload_name, extra, after_upload, move_to,"
                    " allow_duplicates, batch, last_error, next_attempt_at, enqueued_at,"
                    " local_done) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,1)",
                    (
                        f.path, f.size, f.mtime_ns, int(f.state), f.source, f.label, f.category,
                        json.dumps(f.metadata, ensure_ascii=False), f.upload_name,
                        json.dumps(f.extra) if f.extra else None, f.after_upload, f.move_to,
                        int(f.allow_duplicates), f.batch, f.last_error, now, now,
                    ),
                )  # fmt: skip
                if cur.rowcount:
                    ids.append(int(cur.lastrowid or 0))
                    # an older version still held for its sidecar will never be sent
                    db.execute(
                        "UPDATE files SET state=?, last_error=? WHERE path=? AND state=?"
                        " AND id<?",
                        (State.GONE, "superseded by a newer version of the file", f.path,
                         State.HELD, cur.lastrowid),
                    )  # fmt: skip
                elif f.batch is not None:
                    db.execute(
                        "UPDATE files SET batch=? WHERE path=? AND size=? AND mtime_ns=?",
                        (f.batch, f.path, f.size, f.mtime_ns),
                    )
        return ids

    def retag(self, row_id: int, f: NewFile) -> None:
        """Replace the tags of a held row (its sidecar was fixed) and make it pending."""
        with self._write() as db:
            db.execute(
                "UPDATE files SET state=?, label=?, category=?, metadata=?, last_error=?,"
                " next_attempt_at=? WHERE id=? AND state=?",
                (
                    int(f.state), f.label, f.category, json.dumps(f.metadata, ensure_ascii=False),
                    f.last_error, self._clock(), row_id, State.HELD,
                ),
            )  # fmt: skip

    def held_for(self, path: str) -> list[Row]:
        with self._lock:
            cur = self._db.execute(
                f"SELECT {_ROW_COLUMNS} FROM files WHERE path=? AND state=?", (path, State.HELD)
            )
            return [_row(r) for r in cur.fetchall()]

    # -- delivery ------------------------------------------------------------------------
    def lease(self, limit: int, now: float | None = None, *, batch: str | None = None) -> list[Row]:
        """Mark up to ``limit`` due pending rows as uploading and return them, oldest due first.

        With ``batch``, only rows of that batch (the ``upload`` command's own run).
        """
        if limit <= 0:
            return []
        now = self._clock() if now is None else now
        scope, args = ("", ()) if batch is None else (" AND batch=?", (batch,))
        with self._write() as db:
            cur = db.execute(
                f"UPDATE files SET state=? WHERE id IN (SELECT id FROM files WHERE state=?"
                f"{scope} AND next_attempt_at<=? ORDER BY next_attempt_at, id LIMIT ?)"
                f" RETURNING {_ROW_COLUMNS}",
                (State.UPLOADING, State.PENDING, *args, now, limit),
            )
            rows = [_row(r) for r in cur.fetchall()]
        rows.sort(key=lambda r: (r.next_attempt_at, r.id))
        return rows

    def settle(self, results: Sequence[Result], *, durable: bool = False) -> None:
        """Write back a round of results in one transaction; ``durable`` syncs it first."""
        if not results:
            return
        now = self._clock()
        with self._lock:
            if durable:
                self._db.execute("PRAGMA synchronous=FULL")
            try:
                with self._write() as db:
                    for r in results:
                        self._settle_one(db, r, now)
            finally:
                if durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")

    def _settle_one(self, db: sqlite3.Connection, r: Result, now: float) -> None:
        attempts = "attempts + 1" if r.count_attempt else "attempts"
        delivered = r.state == State.DELIVERED
        db.execute(
            f"UPDATE files SET state=?, attempts={attempts}, last_error=?, next_attempt_at=?,"
            " sha256=coalesce(?, sha256), sample_id=coalesce(?, sample_id),"
            " delivered_at=CASE WHEN ? THEN ? ELSE delivered_at END,"
            " local_done=CASE WHEN ? AND after_upload!='keep' THEN 0 ELSE local_done END,"
            " bytes=bytes+? WHERE id=?",
            (
                int(r.state), r.error, r.next_attempt_at, r.sha256, r.sample_id,
                delivered, now, delivered, r.bytes_sent, r.row_id,
            ),
        )  # fmt: skip

    def next_due(self, *, batch: str | None = None) -> float | None:
        """When the earliest pending row (of ``batch``, if given) becomes due; None if none."""
        scope, args = ("", ()) if batch is None else (" AND batch=?", (batch,))
        with self._lock:
            value = self._db.execute(
                f"SELECT min(next_attempt_at) FROM files WHERE state=?{scope}",
                (State.PENDING, *args),
            ).fetchone()[0]
            return None if value is None else float(value)

    def requeue(self, row_ids: Iterable[int]) -> None:
        """Give leased rows back without counting an attempt (a stop, an auth pause)."""
        with self._write() as db:
            db.executemany(
                "UPDATE files SET state=? WHERE id=? AND state=?",
                [(State.PENDING, i, State.UPLOADING) for i in row_ids],
            )

    # -- operator care -------------------------------------------------------------------
    def retry(self, *, state: State, row_ids: Sequence[int] | None = None,
              reason_contains: str | None = None, batch: str | None = None) -> int:  # fmt: skip
        """Make rows of ``state`` pending and due now; returns how many."""
        where, args = self._select(state, row_ids, reason_contains, batch)
        with self._write() as db:
            cur = db.execute(
                f"UPDATE files SET state=?, next_attempt_at=?, attempts=0 WHERE {where}",
                (State.PENDING, self._clock(), *args),
            )
            return cur.rowcount

    def drop(self, *, state: State, row_ids: Sequence[int] | None = None,
             reason_contains: str | None = None, batch: str | None = None) -> int:  # fmt: skip
        where, args = self._select(state, row_ids, reason_contains, batch)
        with self._write() as db:
            return db.execute(f"DELETE FROM files WHERE {where}", args).rowcount

    def retry_now(self, *, batch: str | None = None) -> int:
        """Skip every backoff wait: all pending rows (of ``batch``, if given) become due now."""
        scope, args = ("", ()) if batch is None else (" AND batch=?", (batch,))
        now = self._clock()
        with self._write() as db:
            cur = db.execute(
                f"UPDATE files SET next_attempt_at=? WHERE state=? AND next_attempt_at>?{scope}",
                (now, State.PENDING, now, *args),
            )
            return cur.rowcount

    @staticmethod
    def _select(
        state: State, row_ids: Sequence[int] | None, reason_contains: str | None,
        batch: str | None = None,
    ) -> tuple[str, tuple[Any, ...]]:  # fmt: skip
        where = "state=?"
        args: list[Any] = [int(state)]
        if batch is not None:
            where += " AND batch=?"
            args.append(batch)
        if row_ids is not None:
            where += f" AND id IN ({','.join('?' * len(row_ids))})"
            args.extend(row_ids)
        if reason_contains:
            where += " AND instr(last_error, ?) > 0"
            args.append(reason_contains)
        return where, tuple(args)

    # -- reading -------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self._lock:
            cur = self._db.execute("SELECT state, count(*) FROM files GROUP BY state")
            got = {State(s).label: n for s, n in cur.fetchall()}
        return {s.label: got.get(s.label, 0) for s in State}

    def oldest_pending(self) -> float | None:
        with self._lock:
            value = self._db.execute(
                "SELECT min(enqueued_at) FROM files WHERE state IN (?, ?)",
                (State.PENDING, State.UPLOADING),
            ).fetchone()[0]
            return None if value is None else float(value)

    def rows(self, state: State | None = None, *, batch: str | None = None,
             limit: int | None = None) -> Iterator[Row]:  # fmt: skip
        """Stream rows (never the whole table in memory), oldest first.

        Pages are keyed on ``id``; with a state filter ``files_state`` (state, rowid)
        serves each page as a range, so a full pass costs O(rows), not O(rows x pages).
        """
        where, args = "1=1", list[Any]()
        if state is not None:
            where += " AND state=?"
            args.append(int(state))
        if batch is not None:
            where += " AND batch=?"
            args.append(batch)
        sql = f"SELECT {_ROW_COLUMNS} FROM files WHERE {where} AND id>? ORDER BY id LIMIT ?"
        last, page = 0, 500
        remaining = limit
        while True:
            n = page if remaining is None else min(page, remaining)
            if n <= 0:
                return
            with self._lock:
                batch_rows = self._db.execute(sql, (*args, last, n)).fetchall()
            for r in batch_rows:
                yield _row(r)
            if len(batch_rows) < n:
                return
            last = batch_rows[-1][0]
            if remaining is not None:
                remaining -= len(batch_rows)

    def get(self, row_id: int) -> Row | None:
        with self._lock:
            r = self._db.execute(f"SELECT {_ROW_COLUMNS} FROM files WHERE id=?", (row_id,))
            got = r.fetchone()
            return _row(got) if got else None

    def latest_for_path(self, path: str) -> Row | None:
        with self._lock:
            r = self._db.execute(
                f"SELECT {_ROW_COLUMNS} FROM files WHERE path=? ORDER BY id DESC LIMIT 1", (path,)
            ).fetchone()
            return _row(r) if r else None

    def adopt(self, files: Sequence[tuple[str, int, int]], batch: str) -> int:
        """Put known ``(path, size, mtime_ns)`` rows into ``batch``; their state and tags stay.

        An ``upload`` re-run (or a run naming files the daemon already queued) then counts
        them as part of its batch: delivered ones are not sent again, pending ones are sent.
        """
        if not files:
            return 0
        with self._write() as db:
            cur = db.executemany(
                "UPDATE files SET batch=? WHERE path=? AND size=? AND mtime_ns=?"
                " AND batch IS NOT ?",
                [(batch, p, s, m, batch) for p, s, m in files],
            )
            return cur.rowcount

    def batch_totals(self, batch: str) -> dict[str, tuple[int, int]]:
        """Per state: (files, bytes) of one batch; every state is present."""
        with self._lock:
            cur = self._db.execute(
                "SELECT state, count(*), coalesce(sum(size), 0) FROM files WHERE batch=?"
                " GROUP BY state",
                (batch,),
            )
            got = {State(s).label: (int(n), int(b)) for s, n, b in cur.fetchall()}
        return {s.label: got.get(s.label, (0, 0)) for s in State}

    def delivered_since(self, since: float) -> tuple[int, int]:
        """(files, bytes) delivered since ``since``: the recent throughput."""
        with self._lock:
            n, b = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM files WHERE delivered_at>=?",
                (since,),
            ).fetchone()
            return int(n), int(b)

    # -- disk care (agent.disk) ----------------------------------------------------------
    def kept_delivered(self, after_id: int, limit: int) -> list[Row]:
        """Delivered rows whose file is kept locally (``after_upload = "keep"``), oldest
        first, with ids above ``after_id``: the candidates for pruning on a full disk."""
        with self._lock:
            cur = self._db.execute(
                f"SELECT {_ROW_COLUMNS} FROM files WHERE state=? AND after_upload='keep'"
                " AND id>? ORDER BY id LIMIT ?",
                (State.DELIVERED, after_id, limit),
            )
            return [_row(r) for r in cur.fetchall()]

    def sync(self) -> None:
        """Make every committed transaction durable without writing anything: with
        ``synchronous=NORMAL`` the last commits sit in the WAL file, unsynced; fsync it.
        Needed before deleting files whose delivered state must survive a power cut."""
        with self._lock:
            for path in (Path(f"{self.path}-wal"), self.path):
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise QueueError(f"{path}: cannot sync: {exc.strerror}") from None
                try:
                    os.fsync(fd)
                except OSError as exc:
                    raise QueueError(f"{path}: cannot sync: {exc.strerror}") from None
                finally:
                    os.close(fd)

    def mark_pruned(self, row_ids: Iterable[int]) -> None:
        """Record that delivered files were deleted locally to free space
        (``after_upload = "pruned"``): not a user's deletion, so never synced remotely."""
        with self._write() as db:
            db.executemany(
                "UPDATE files SET after_upload='pruned' WHERE id=? AND state=?",
                [(i, State.DELIVERED) for i in row_ids],
            )

    # -- small key/value state shared with `status` --------------------------------------
    def set_state(self, **values: object) -> None:
        with self._write() as db:
            for key, value in values.items():
                if value is None:
                    db.execute("DELETE FROM agent_state WHERE key=?", (key,))
                else:
                    db.execute(
                        "INSERT INTO agent_state (key, value) VALUES (?, ?)"
                        " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (key, json.dumps(value)),
                    )

    def get_state(self) -> dict[str, Any]:
        with self._lock:
            cur = self._db.execute("SELECT key, value FROM agent_state")
            return {k: json.loads(v) for k, v in cur.fetchall()}


class _Tx:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the queue's lock; errors become QueueError."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def __enter__(self) -> sqlite3.Connection:
        self.queue._lock.acquire()
        try:
            self.queue._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self.queue._lock.release()
            raise QueueError(f"{self.queue.path}: {exc}") from None
        return self.queue._db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        db = self.queue._db
        try:
            if exc_type is None:
                try:
                    db.execute("COMMIT")
                except sqlite3.Error as err:
                    self._rollback(db)
                    raise QueueError(f"{self.queue.path}: {err}") from None
            else:
                self._rollback(db)
                if isinstance(exc, sqlite3.Error):
                    raise QueueError(f"{self.queue.path}: {exc}") from None
        finally:
            self.queue._lock.release()

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        """Roll back what is left: after "database or disk is full" SQLite may already have
        rolled the transaction back itself, and a second ROLLBACK would raise."""
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
