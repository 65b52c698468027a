"""The durable queue: an acknowledgement state machine over the ``files`` table.

Nothing is deleted on dequeue. A row moves::

    pending ──lease──► uploading ──settle──► delivered
       ▲                  │  └────────────► dead        (permanent refusal, with the reason)
       └──── retry ───────┘                              (transient: attempts+1, next_attempt_at)
    held    a sidecar or metadata problem; re-tagged when the sidecar changes
    gone    the file vanished or changed before it was sent (a newer version is queued)

The one commit that must be durable first is ``delivered`` for a file that will then be
deleted or moved: ``settle(..., durable=True)`` syncs before returning. All writes are
short transactions batched by the caller (a burst of intake, a round of results), so the
cost per file stays small. The file, its errors and its durability are ``store.sqlite``'s;
its schema is ``store.schema``'s; the project-side tables are ``store.ledger``'s.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from .rows import (
    ROW_COLUMNS,
    NewFile,
    Recorded,
    Result,
    Row,
    State,
    db_path,
    db_text,
    path_from_db,
    to_row,
)
from .schema import SCHEMA_VERSION, migrate
from .sqlite import Database

__all__ = ["SCHEMA_VERSION", "NewFile", "Queue", "Recorded", "Result", "Row", "State"]

_INSERT = (
    "INSERT OR IGNORE INTO files (path, size, mtime_ns, state, source, label, category,"
    " metadata, upload_name, extra, after_upload, move_to, allow_duplicates, batch,"
    " last_error, next_attempt_at, enqueued_at, priority, local_done)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,1)"
)
_SETTLE = (
    "UPDATE files SET state=?, attempts=attempts+?, last_error=?, next_attempt_at=?,"
    " sha256=coalesce(?, sha256), sample_id=coalesce(?, sample_id),"
    " delivered_at=CASE WHEN ? THEN ? ELSE delivered_at END,"
    " local_done=CASE WHEN ? AND after_upload!='keep' THEN 0 ELSE local_done END,"
    " bytes=bytes+? WHERE id=?"
)
_ADOPT = "UPDATE files SET batch=? WHERE path=? AND size=? AND mtime_ns=? AND batch IS NOT ?"
_PAGE = 500
KNOWN_CHUNK = 500
"""Paths asked about in one query (SQLite takes at least 999 parameters)."""


def _scope(batch: str | None) -> tuple[str, tuple[Any, ...]]:
    return ("", ()) if batch is None else (" AND batch=?", (batch,))


class Queue:
    """The queue file. Thread-safe; every method is one short transaction."""

    def __init__(self, path: Path, *, clock: Any = time.time) -> None:
        self.path = path
        self._clock = clock
        self.db = Database(path, what="queue", setup=lambda db: migrate(db, path))

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction for the tables other modules keep in this file
        (``store.ledger``): ``with queue.transaction() as db: db.execute(...)``."""
        return self.db.writing()

    def reading(self) -> AbstractContextManager[sqlite3.Connection]:
        """The connection, under the queue's lock, for short reads of such tables."""
        return self.db.reading()

    def close(self) -> None:
        self.db.close(optimize=True)

    def integrity_check(self) -> str:
        return self.db.integrity_check()

    def check(self) -> None:
        """``QueueDamaged`` (naming the file and what to do) unless the file is sound."""
        self.db.check()

    def sync(self) -> None:
        """Make every committed transaction durable (``Database.sync``)."""
        self.db.sync()

    # -- start-up --------------------------------------------------------------------
    def recover(self, batch: str | None = None) -> int:
        """Return rows left ``uploading`` by a crash to ``pending``; how many there were.

        With ``batch``, only that batch's rows (an ``upload`` command recovering its own
        run while a daemon may be uploading other rows of the same file).
        """
        scope, args = _scope(batch)
        with self.db.writing() as db:
            return db.execute(f"UPDATE files SET state=? WHERE state=?{scope}",
                              (State.PENDING, State.UPLOADING, *args)).rowcount  # fmt: skip

    def unfinished_local_actions(self) -> list[Row]:
        """Delivered rows whose delete/move did not happen (a crash right after delivery)."""
        with self.db.reading() as db:
            cur = db.execute(f"SELECT {ROW_COLUMNS} FROM files WHERE state=? AND local_done=0",
                             (State.DELIVERED,))  # fmt: skip
            return [to_row(r) for r in cur.fetchall()]

    def mark_local_done(self, row_ids: Iterable[int]) -> None:
        with self.db.writing() as db:
            db.executemany("UPDATE files SET local_done=1 WHERE id=?", [(i,) for i in row_ids])

    # -- intake --------------------------------------------------------------------------
    def known(self, path: str, size: int, mtime_ns: int) -> bool:
        with self.db.reading() as db:
            cur = db.execute("SELECT 1 FROM files WHERE path=? AND size=? AND mtime_ns=?",
                             (db_path(path), size, mtime_ns))  # fmt: skip
            return cur.fetchone() is not None

    def known_versions(
        self, files: Sequence[tuple[str, os.stat_result]]
    ) -> set[tuple[str, int, int]]:
        """Which of these files the queue has a row for, as ``(path, size, mtime_ns)``, in
        one query per ``KNOWN_CHUNK`` paths (a scan asks this of every file it finds)."""
        if not files:
            return set()
        wanted = {(path, st.st_size, st.st_mtime_ns) for path, st in files}
        out: set[tuple[str, int, int]] = set()
        paths = sorted({path for path, _ in files})
        with self.db.reading() as db:
            for at in range(0, len(paths), KNOWN_CHUNK):
                chunk = paths[at : at + KNOWN_CHUNK]
                marks = ",".join("?" * len(chunk))
                cur = db.execute(f"SELECT path, size, mtime_ns FROM files WHERE path IN ({marks})",
                                 [db_path(p) for p in chunk])  # fmt: skip
                for path, size, mtime_ns in cur:
                    version = (path_from_db(path), size, mtime_ns)
                    if version in wanted:
                        out.add(version)
        return out

    def record(self, files: Sequence[NewFile]) -> list[Recorded]:
        """Record a batch of tagged files in one transaction; one result per file.

        A new version gets a row (an older version of the same path still held for its
        sidecar becomes ``gone``: it will never be sent). A known version keeps its row
        and its tags; with a batch it joins that batch (an ``upload`` re-run), and if it
        is held and the new tags are sendable it takes them and becomes pending.
        """
        now = self._clock()
        out: list[Recorded] = []
        with self.db.writing() as db:
            # an older version can only be superseded if some row is held (rare): else the
            # per-file update is skipped, half the statements of a batch
            held = (
                any(f.state is State.HELD for f in files)
                or db.execute("SELECT 1 FROM files WHERE state=? LIMIT 1", (State.HELD,)).fetchone()
                is not None
            )
            for f in files:
                row_id = self._insert(db, f, now, supersede=held)
                if row_id is not None:
                    out.append(Recorded(row_id, True, f.state))
                    continue
                rid, state = db.execute(
                    "SELECT id, state FROM files WHERE path=? AND size=? AND mtime_ns=?",
                    (db_path(f.path), f.size, f.mtime_ns),
                ).fetchone()
                released = joined = False
                if f.batch is not None:
                    adopt = (f.batch, db_path(f.path), f.size, f.mtime_ns, f.batch)
                    joined = db.execute(_ADOPT, adopt).rowcount > 0
                    if state == State.HELD and f.state is State.PENDING:
                        self._retag(db, rid, f, now)
                        state, released = State.PENDING, True
                out.append(Recorded(int(rid), False, State(state), released, joined))
        return out

    def enqueue_many(self, files: Sequence[NewFile]) -> list[int]:
        """``record``, returning only the ids of new rows."""
        return [r.row_id for r in self.record(files) if r.new]

    @staticmethod
    def _insert(
        db: sqlite3.Connection, f: NewFile, now: float, *, supersede: bool = True
    ) -> int | None:
        cur = db.execute(_INSERT, (
            db_path(f.path), f.size, f.mtime_ns, int(f.state), f.source, f.label, f.category,
            json.dumps(f.metadata, ensure_ascii=False), f.upload_name,
            json.dumps(f.extra) if f.extra else None, f.after_upload, f.move_to,
            int(f.allow_duplicates), f.batch, db_text(f.last_error), now, now, f.priority,
        ))  # fmt: skip
        if not cur.rowcount:
            return None
        row_id = int(cur.lastrowid or 0)
        if not supersede:
            return row_id
        db.execute("UPDATE files SET state=?, last_error=? WHERE path=? AND state=? AND id<?",
                   (State.GONE, "superseded by a newer version of the file", db_path(f.path),
                    State.HELD, row_id))  # fmt: skip
        return row_id

    def retag(self, row_id: int, f: NewFile) -> None:
        """Replace the tags of a held row (its sidecar was fixed) and make it pending."""
        with self.db.writing() as db:
            self._retag(db, row_id, f, self._clock())

    @staticmethod
    def _retag(db: sqlite3.Connection, row_id: int, f: NewFile, now: float) -> None:
        db.execute(
            "UPDATE files SET state=?, label=?, category=?, metadata=?, last_error=?,"
            " next_attempt_at=? WHERE id=? AND state=?",
            (int(f.state), f.label, f.category, json.dumps(f.metadata, ensure_ascii=False),
             db_text(f.last_error), now, row_id, State.HELD),
        )  # fmt: skip

    def adopt(self, files: Sequence[tuple[str, int, int]], batch: str) -> int:
        """Put known ``(path, size, mtime_ns)`` rows into ``batch``; their state and tags
        stay. How many rows changed batch."""
        if not files:
            return 0
        with self.db.writing() as db:
            return db.executemany(
                _ADOPT, [(batch, db_path(p), s, m, batch) for p, s, m in files]
            ).rowcount

    def held_for(self, path: str) -> list[Row]:
        return self._select_rows("path=? AND state=?", (db_path(path), State.HELD))

    # -- delivery ------------------------------------------------------------------------
    def lease(self, limit: int, now: float | None = None, *, batch: str | None = None,
              above: int | None = None) -> list[Row]:  # fmt: skip
        """Mark up to ``limit`` due pending rows as uploading and return them: the highest
        priority first, then the oldest due. With ``batch``, only rows of that batch (the
        ``upload`` command's own run). With ``above``, only rows of a higher priority (a
        sensor capture arrived while a backlog of video is in flight)."""
        if limit <= 0:
            return []
        now = self._clock() if now is None else now
        scope, args = _scope(batch)
        if above is not None:
            scope, args = scope + " AND priority>?", (*args, above)
        with self.db.writing() as db:
            cur = db.execute(
                f"UPDATE files SET state=? WHERE id IN (SELECT id FROM files WHERE state=?"
                f"{scope} AND next_attempt_at<=? ORDER BY priority DESC, next_attempt_at, id"
                f" LIMIT ?) RETURNING {ROW_COLUMNS}",
                (State.UPLOADING, State.PENDING, *args, now, limit),
            )
            rows = [to_row(r) for r in cur.fetchall()]
        rows.sort(key=lambda r: (-r.priority, r.next_attempt_at, r.id))
        return rows

    def settle(self, results: Sequence[Result], *, durable: bool = False,
               facts: Mapping[str, object] | None = None,
               sent: tuple[str, int] | None = None) -> None:  # fmt: skip
        """Write back a round of results in one transaction; ``durable`` syncs it first.
        ``facts`` for ``status`` (as ``set_state``) and ``sent`` (a local day and the bytes
        of files sent in it, for the data budget) go in the same transaction."""
        if not results and not facts and not (sent and sent[1]):
            return
        now = self._clock()
        with self.db.writing(durable=durable) as db:
            db.executemany(_SETTLE, [
                (int(r.state), int(r.count_attempt), db_text(r.error), r.next_attempt_at, r.sha256,
                 r.sample_id, r.state == State.DELIVERED, now, r.state == State.DELIVERED,
                 r.bytes_sent, r.row_id)
                for r in results
            ])  # fmt: skip
            if facts:
                self._set_state(db, facts)
            if sent and sent[1]:
                db.execute("INSERT INTO link_usage (day, bytes) VALUES (?, ?) ON CONFLICT(day)"
                           " DO UPDATE SET bytes = bytes + excluded.bytes", sent)  # fmt: skip

    def next_due(self, *, batch: str | None = None) -> float | None:
        """When the earliest pending row (of ``batch``, if given) becomes due; None if none."""
        scope, args = _scope(batch)
        with self.db.reading() as db:
            value = db.execute(f"SELECT min(next_attempt_at) FROM files WHERE state=?{scope}",
                               (State.PENDING, *args)).fetchone()[0]  # fmt: skip
            return None if value is None else float(value)

    def requeue(self, row_ids: Iterable[int]) -> None:
        """Give leased rows back without counting an attempt (a stop, an auth pause)."""
        with self.db.writing() as db:
            db.executemany("UPDATE files SET state=? WHERE id=? AND state=?",
                           [(State.PENDING, i, State.UPLOADING) for i in row_ids])  # fmt: skip

    # -- operator care -------------------------------------------------------------------
    def retry(self, *, state: State, row_ids: Sequence[int] | None = None,
              reason_contains: str | None = None, batch: str | None = None) -> int:  # fmt: skip
        """Make rows of ``state`` pending and due now; returns how many."""
        where, args = self._selector(state, row_ids, reason_contains, batch)
        with self.db.writing() as db:
            return db.execute(
                f"UPDATE files SET state=?, next_attempt_at=?, attempts=0 WHERE {where}",
                (State.PENDING, self._clock(), *args),
            ).rowcount

    def drop(self, *, state: State, row_ids: Sequence[int] | None = None,
             reason_contains: str | None = None, batch: str | None = None) -> int:  # fmt: skip
        where, args = self._selector(state, row_ids, reason_contains, batch)
        with self.db.writing() as db:
            return db.execute(f"DELETE FROM files WHERE {where}", args).rowcount

    def retry_now(self, *, batch: str | None = None) -> int:
        """Skip every backoff wait: all pending rows (of ``batch``, if given) become due now."""
        scope, args = _scope(batch)
        now = self._clock()
        with self.db.writing() as db:
            return db.execute(
                f"UPDATE files SET next_attempt_at=? WHERE state=? AND next_attempt_at>?{scope}",
                (now, State.PENDING, now, *args),
            ).rowcount

    @staticmethod
    def _selector(
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
        with self.db.reading() as db:
            got = {State(s).label: n for s, n in
                   db.execute("SELECT state, count(*) FROM files GROUP BY state")}  # fmt: skip
        return {s.label: got.get(s.label, 0) for s in State}

    def oldest_pending(self) -> float | None:
        with self.db.reading() as db:
            value = db.execute("SELECT min(enqueued_at) FROM files WHERE state IN (?, ?)",
                               (State.PENDING, State.UPLOADING)).fetchone()[0]  # fmt: skip
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
        sql = f"SELECT {ROW_COLUMNS} FROM files WHERE {where} AND id>? ORDER BY id LIMIT ?"
        last, remaining = 0, limit
        while remaining is None or remaining > 0:
            n = _PAGE if remaining is None else min(_PAGE, remaining)
            with self.db.reading() as db:
                page = db.execute(sql, (*args, last, n)).fetchall()
            yield from (to_row(r) for r in page)
            if len(page) < n:
                return
            last = page[-1][0]
            if remaining is not None:
                remaining -= len(page)

    def get(self, row_id: int) -> Row | None:
        found = self._select_rows("id=?", (row_id,))
        return found[0] if found else None

    def latest_for_path(self, path: str) -> Row | None:
        found = self._select_rows("path=? ORDER BY id DESC LIMIT 1", (db_path(path),))
        return found[0] if found else None

    def _select_rows(self, where: str, args: tuple[Any, ...]) -> list[Row]:
        with self.db.reading() as db:
            cur = db.execute(f"SELECT {ROW_COLUMNS} FROM files WHERE {where}", args)
            return [to_row(r) for r in cur.fetchall()]

    def batch_totals(self, batch: str) -> dict[str, tuple[int, int]]:
        """Per state: (files, bytes) of one batch; every state is present."""
        with self.db.reading() as db:
            cur = db.execute("SELECT state, count(*), coalesce(sum(size), 0) FROM files"
                             " WHERE batch=? GROUP BY state", (batch,))  # fmt: skip
            got = {State(s).label: (int(n), int(b)) for s, n, b in cur.fetchall()}
        return {s.label: got.get(s.label, (0, 0)) for s in State}

    def backlog_by_source(self) -> dict[str, dict[str, int]]:
        """Per source (``watch:<folder>``, ``upload``, a capture source): rows per state
        not yet delivered (pending, uploading, dead, held). Counted from the
        ``files_state_source`` index alone; delivered and gone rows are not read."""
        states = (State.PENDING, State.UPLOADING, State.DEAD, State.HELD)
        with self.db.reading() as db:
            cur = db.execute("SELECT source, state, count(*) FROM files WHERE state IN"
                             " (?, ?, ?, ?) GROUP BY source, state", states)  # fmt: skip
            got: dict[str, dict[str, int]] = {}
            for source, state, n in cur.fetchall():
                counts = got.setdefault(source, {s.label: 0 for s in states})
                counts[State(state).label] = int(n)
        return dict(sorted(got.items()))

    def recent_deliveries(self, limit: int) -> list[Row]:
        """The last ``limit`` delivered rows, newest first (the ``files_delivered`` index)."""
        return self._select_rows("delivered_at IS NOT NULL ORDER BY delivered_at DESC, id DESC"
                                 " LIMIT ?", (limit,))  # fmt: skip

    def delivered_since(self, since: float) -> tuple[int, int]:
        """(files, bytes) delivered since ``since``: the recent throughput."""
        with self.db.reading() as db:
            n, b = db.execute("SELECT count(*), coalesce(sum(size), 0) FROM files"
                              " WHERE delivered_at>=?", (since,)).fetchone()  # fmt: skip
            return int(n), int(b)

    # -- disk care (daemon.disk) ---------------------------------------------------------
    def kept_delivered(self, after_id: int, limit: int) -> list[Row]:
        """Delivered rows whose file is kept locally (``after_upload = "keep"``), oldest
        first, with ids above ``after_id``: the candidates for pruning on a full disk."""
        return self._select_rows("state=? AND after_upload='keep' AND id>? ORDER BY id LIMIT ?",
                                 (State.DELIVERED, after_id, limit))  # fmt: skip

    def mark_pruned(self, row_ids: Iterable[int]) -> None:
        """Record that delivered files were deleted locally to free space
        (``after_upload = "pruned"``): not a user's deletion, so never synced remotely."""
        with self.db.writing() as db:
            db.executemany("UPDATE files SET after_upload='pruned' WHERE id=? AND state=?",
                           [(i, State.DELIVERED) for i in row_ids])  # fmt: skip

    # -- small key/value state shared with `status` --------------------------------------
    def bytes_sent_on(self, day: str) -> int:
        """Bytes of files sent on a local day (``YYYY-MM-DD``): the data budget's count."""
        with self.db.reading() as db:
            got = db.execute("SELECT bytes FROM link_usage WHERE day=?", (day,)).fetchone()
            return int(got[0]) if got else 0

    def set_state(self, **values: object) -> None:
        with self.db.writing() as db:
            self._set_state(db, values)

    @staticmethod
    def _set_state(db: sqlite3.Connection, values: Mapping[str, object]) -> None:
        for key, value in values.items():
            if value is None:
                db.execute("DELETE FROM agent_state WHERE key=?", (key,))
            else:
                db.execute("INSERT INTO agent_state (key, value) VALUES (?, ?)"
                           " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                           (key, json.dumps(value)))  # fmt: skip

    def get_state(self) -> dict[str, Any]:
        with self.db.reading() as db:
            return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM agent_state")}
