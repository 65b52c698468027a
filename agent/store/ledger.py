"""The project-side bookkeeping kept in the queue file: this device's ledger of samples,
scheduled remote deletions and resumable metadata backfill jobs.

The ledger is the ``files`` table itself: a delivered row carries the ``sample_id`` the
service returned. The tables added by schema version 2 (see ``store.schema``) are:

``remote_deletes``  one row per delivered file whose local copy went, keyed by the queue
                    row: the sample to delete, when it is due (noticed + grace), and what
                    happened (scheduled, done, cancelled, failed).
``backfill_jobs``   one row per backfill job (id derived from the selection and the values).
``backfill_items``  one row per selected sample of a job, with its outcome; a re-run does
                    only the items still pending (or failed).

Everything here streams in pages; nothing loads a table whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from .queue import Queue, State
from .rows import db_path, path_from_db

PAGE = 500
BLOCKED_KEY = "remote_delete_blocked"
"""``agent_state`` key set while the deletion cap holds deletions back (shown by ``status``)."""


class DeleteState(IntEnum):
    SCHEDULED = 0
    DONE = 1
    CANCELLED = 2
    FAILED = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class ItemState(IntEnum):
    PENDING = 0
    WRITTEN = 1  # metadata written
    UNCHANGED = 2  # the sample already had every value: nothing written
    MISSING = 3  # the sample is not in the project (deleted remotely)
    SKIPPED = 4  # outside the filters (ledger selection narrowed by --label etc.)
    FAILED = 5  # refused; retried by a re-run

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Candidate:
    """A delivered, locally kept file: the newest row of its path."""

    row_id: int
    path: str
    sample_id: int
    sha256: str | None
    source: str


@dataclass(frozen=True)
class Delete:
    row_id: int
    sample_id: int
    path: str
    sha256: str | None
    state: DeleteState
    noticed_at: float
    due_at: float
    confirmed: bool
    attempts: int
    last_error: str | None
    done_at: float | None


_DELETE_COLUMNS = (
    "row_id, sample_id, path, sha256, state, noticed_at, due_at, confirmed, attempts,"
    " last_error, done_at"
)


def _delete(r: tuple[Any, ...]) -> Delete:
    return Delete(
        row_id=r[0], sample_id=r[1], path=path_from_db(r[2]), sha256=r[3], state=DeleteState(r[4]),
        noticed_at=r[5], due_at=r[6], confirmed=bool(r[7]), attempts=r[8], last_error=r[9],
        done_at=r[10],
    )  # fmt: skip


# The newest row of its path, delivered, kept locally, with a sample id: its file going
# away means "delete the sample". Older versions of a file rewritten in place are left
# alone: deleting `latest.jpg` must not delete every sample it ever was.
_CANDIDATE_SQL = (
    "SELECT f.id, f.path, f.sample_id, f.sha256, f.source FROM files f"
    " WHERE f.state=? AND f.after_upload='keep' AND f.sample_id IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM files g WHERE g.path=f.path AND g.id>f.id)"
)


class Ledger:
    """Reads and writes the project-side tables of one queue file."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def _pages(self, sql: str, args: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        """Rows of ``sql`` a page at a time (keyset paging on its first column): ``sql``
        ends in ``... > ? ORDER BY <that column> LIMIT ?``; memory stays flat."""
        last = 0
        while True:
            with self.queue.reading() as db:
                rows = db.execute(sql, (*args, last, PAGE)).fetchall()
            yield from rows
            if len(rows) < PAGE:
                return
            last = rows[-1][0]

    # -- the ledger ----------------------------------------------------------------------
    def sample_ids(self) -> Iterator[int]:
        """Distinct sample ids of delivered rows, ascending."""
        sql = (
            "SELECT DISTINCT sample_id FROM files WHERE state=? AND sample_id>?"
            " ORDER BY sample_id LIMIT ?"
        )
        for r in self._pages(sql, (State.DELIVERED,)):
            yield int(r[0])

    def delivered_without_id(self) -> int:
        """Delivered rows with no sample id (the service had the file already)."""
        with self.queue.reading() as db:
            return int(
                db.execute(
                    "SELECT count(*) FROM files WHERE state=? AND sample_id IS NULL",
                    (State.DELIVERED,),
                ).fetchone()[0]
            )

    def candidates(self, *, unscheduled: bool = False) -> Iterator[Candidate]:
        """Every delivered, kept file (newest version of its path); ``unscheduled``: only
        those with no deletion on record."""
        sql = _CANDIDATE_SQL + " AND f.id>?"
        if unscheduled:
            sql += " AND NOT EXISTS (SELECT 1 FROM remote_deletes d WHERE d.row_id=f.id)"
        sql += " ORDER BY f.id LIMIT ?"
        for r in self._pages(sql, (State.DELIVERED,)):
            yield Candidate(int(r[0]), path_from_db(r[1]), int(r[2]), r[3], r[4])

    def candidate_for_path(self, path: str) -> Candidate | None:
        with self.queue.reading() as db:
            r = db.execute(
                _CANDIDATE_SQL + " AND f.path=?", (State.DELIVERED, db_path(path))
            ).fetchone()
        return (
            None if r is None else Candidate(int(r[0]), path_from_db(r[1]), int(r[2]), r[3], r[4])
        )

    def kept_locally(self, row_id: int) -> bool:
        """Is this row still a delivered file kept locally (not pruned by the disk guard)?"""
        with self.queue.reading() as db:
            r = db.execute(
                "SELECT 1 FROM files WHERE id=? AND state=? AND after_upload='keep'",
                (row_id, State.DELIVERED),
            ).fetchone()
        return r is not None

    def paths_with_sha256(self, sha256: str, *, exclude_row: int) -> list[str]:
        """Other queued paths with the same content (a rename keeps the sample)."""
        with self.queue.reading() as db:
            rows = db.execute(
                "SELECT DISTINCT path FROM files WHERE sha256=? AND id!=? LIMIT 20",
                (sha256, exclude_row),
            ).fetchall()
        return [path_from_db(r[0]) for r in rows]

    def adopt_sample(self, sha256: str, sample_id: int) -> int:
        """Give delivered rows of these bytes that lack a sample id (the service had them
        already, so it sent none) the sample's id: a renamed file stays in the ledger."""
        with self.queue.transaction() as db:
            return db.execute(
                "UPDATE files SET sample_id=? WHERE sha256=? AND state=? AND sample_id IS NULL",
                (sample_id, sha256, State.DELIVERED),
            ).rowcount

    # -- remote deletions ----------------------------------------------------------------
    def schedule(self, items: Iterable[Candidate], *, now: float, due: float) -> int:
        """Record "delete the sample of this row at ``due``"; rows already on record (even
        cancelled by the operator) are left as they are. Returns how many are new."""
        n = 0
        with self.queue.transaction() as db:
            for c in items:
                n += db.execute(
                    "INSERT OR IGNORE INTO remote_deletes (row_id, sample_id, path, sha256,"
                    " state, noticed_at, due_at) VALUES (?,?,?,?,?,?,?)",
                    (
                        c.row_id,
                        c.sample_id,
                        db_path(c.path),
                        c.sha256,
                        DeleteState.SCHEDULED,
                        now,
                        due,
                    ),
                ).rowcount
        return n

    def forget(self, row_id: int) -> None:
        """Drop a scheduled deletion whose file came back: it is a plain candidate again."""
        with self.queue.transaction() as db:
            db.execute(
                "DELETE FROM remote_deletes WHERE row_id=? AND state=?",
                (row_id, DeleteState.SCHEDULED),
            )

    def scheduled(self, *, due_by: float | None = None, confirmed: bool | None = None,
                  limit: int | None = None) -> Iterator[Delete]:  # fmt: skip
        """Scheduled deletions (due by ``due_by`` when given), oldest first."""
        where, args = "state=?", list[Any]([int(DeleteState.SCHEDULED)])
        if due_by is not None:
            where += " AND due_at<=?"
            args.append(due_by)
        if confirmed is not None:
            where += " AND confirmed=?"
            args.append(int(confirmed))
        last, remaining = 0, limit
        while remaining is None or remaining > 0:
            page = PAGE if remaining is None else min(PAGE, remaining)
            with self.queue.reading() as db:
                rows = db.execute(
                    f"SELECT {_DELETE_COLUMNS} FROM remote_deletes WHERE {where} AND row_id>?"
                    " ORDER BY row_id LIMIT ?",
                    (*args, last, page),
                ).fetchall()
            for r in rows:
                yield _delete(r)
            if len(rows) < page:
                return
            last = int(rows[-1][0])
            if remaining is not None:
                remaining -= len(rows)

    def counts(self, now: float) -> dict[str, int]:
        """Deletions by state, plus ``due`` (scheduled and past the grace period),
        ``unconfirmed`` (scheduled, not confirmed) and ``done_last_hour``."""
        with self.queue.reading() as db:
            got = dict(db.execute("SELECT state, count(*) FROM remote_deletes GROUP BY state"))
            due, unconfirmed = db.execute(
                "SELECT coalesce(sum(due_at<=?), 0), coalesce(sum(confirmed=0), 0)"
                " FROM remote_deletes WHERE state=?",
                (now, DeleteState.SCHEDULED),
            ).fetchone()
            recent = db.execute(
                "SELECT count(*) FROM remote_deletes WHERE state=? AND done_at>=?",
                (DeleteState.DONE, now - 3600.0),
            ).fetchone()[0]
        out = {s.label: int(got.get(int(s), 0)) for s in DeleteState}
        out.update(due=int(due), unconfirmed=int(unconfirmed), done_last_hour=int(recent))
        return out

    def next_due(self) -> float | None:
        with self.queue.reading() as db:
            v = db.execute(
                "SELECT min(due_at) FROM remote_deletes WHERE state=?", (DeleteState.SCHEDULED,)
            ).fetchone()[0]
        return None if v is None else float(v)

    def finish(self, row_id: int, state: DeleteState, *, now: float,
               reason: str | None = None) -> None:  # fmt: skip
        with self.queue.transaction() as db:
            db.execute(
                "UPDATE remote_deletes SET state=?, done_at=?, last_error=? WHERE row_id=?",
                (state, now if state is DeleteState.DONE else None, reason, row_id),
            )

    def retry_later(self, row_id: int, *, due: float, reason: str) -> None:
        with self.queue.transaction() as db:
            db.execute(
                "UPDATE remote_deletes SET due_at=?, attempts=attempts+1, last_error=?"
                " WHERE row_id=? AND state=?",
                (due, reason, row_id, DeleteState.SCHEDULED),
            )

    def confirm_all(self) -> int:
        """The operator's yes: every scheduled deletion may run, whatever the cap."""
        with self.queue.transaction() as db:
            return db.execute(
                "UPDATE remote_deletes SET confirmed=1 WHERE state=? AND confirmed=0",
                (DeleteState.SCHEDULED,),
            ).rowcount

    def cancel_all(self, *, reason: str) -> int:
        """The operator's no: keep every scheduled sample in the project."""
        with self.queue.transaction() as db:
            return db.execute(
                "UPDATE remote_deletes SET state=?, last_error=? WHERE state=?",
                (DeleteState.CANCELLED, reason, DeleteState.SCHEDULED),
            ).rowcount

    def deletion_for(self, row_id: int) -> Delete | None:
        with self.queue.reading() as db:
            r = db.execute(
                f"SELECT {_DELETE_COLUMNS} FROM remote_deletes WHERE row_id=?", (row_id,)
            ).fetchone()
        return None if r is None else _delete(r)

    def deletions(self, state: DeleteState, *, limit: int = 20) -> list[Delete]:
        with self.queue.reading() as db:
            rows = db.execute(
                f"SELECT {_DELETE_COLUMNS} FROM remote_deletes WHERE state=?"
                " ORDER BY row_id DESC LIMIT ?",
                (state, limit),
            ).fetchall()
        return [_delete(r) for r in rows]

    # -- backfill jobs -------------------------------------------------------------------
    def job(self, job: str) -> dict[str, Any] | None:
        with self.queue.reading() as db:
            r = db.execute(
                "SELECT spec, created_at, selected_at, finished_at FROM backfill_jobs WHERE job=?",
                (job,),
            ).fetchone()
        if r is None:
            return None
        return {"spec": json.loads(r[0]), "created_at": r[1], "selected_at": r[2],
                "finished_at": r[3]}  # fmt: skip

    def start_job(self, job: str, spec: dict[str, Any], *, now: float) -> bool:
        """Record a job; False when it existed (a re-run)."""
        with self.queue.transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO backfill_jobs (job, spec, created_at) VALUES (?,?,?)",
                (job, json.dumps(spec, sort_keys=True), now),
            )
            if not cur.rowcount:
                db.execute("UPDATE backfill_jobs SET finished_at=NULL WHERE job=?", (job,))
            return bool(cur.rowcount)

    def add_items(self, job: str, sample_ids: Iterable[int]) -> int:
        """Add selected samples (known ones keep their state); how many were new."""
        n = 0
        with self.queue.transaction() as db:
            for sid in sample_ids:
                n += db.execute(
                    "INSERT OR IGNORE INTO backfill_items (job, sample_id) VALUES (?,?)",
                    (job, sid),
                ).rowcount
        return n

    def job_event(self, job: str, column: str, now: float) -> None:
        assert column in ("selected_at", "finished_at")
        with self.queue.transaction() as db:
            db.execute(f"UPDATE backfill_jobs SET {column}=? WHERE job=?", (now, job))

    def open_items(self, job: str) -> Iterator[int]:
        """Sample ids still to do (pending, or failed last time), ascending."""
        sql = (
            "SELECT sample_id FROM backfill_items WHERE job=? AND state IN (?,?)"
            " AND sample_id>? ORDER BY sample_id LIMIT ?"
        )
        for r in self._pages(sql, (job, ItemState.PENDING, ItemState.FAILED)):
            yield int(r[0])

    def mark_items(self, job: str, results: Iterable[tuple[int, ItemState, str | None]]) -> None:
        with self.queue.transaction() as db:
            db.executemany(
                "UPDATE backfill_items SET state=?, detail=? WHERE job=? AND sample_id=?",
                [(int(state), detail, job, sid) for sid, state, detail in results],
            )

    def item_counts(self, job: str) -> dict[str, int]:
        with self.queue.reading() as db:
            got = dict(
                db.execute(
                    "SELECT state, count(*) FROM backfill_items WHERE job=? GROUP BY state",
                    (job,),
                )
            )
        return {s.label: int(got.get(int(s), 0)) for s in ItemState}
