"""The durable queue on real SQLite files, with an injected clock."""

from __future__ import annotations

import os
import sqlite3
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_uploader.errors import QueueError
from edge_uploader.store.queue import SCHEMA_VERSION, NewFile, Queue, Result, State
from tests.fakes import FakeClock
from tests.unit.helpers import new_file

T0 = 1_700_000_000.0


@pytest.fixture
def q(tmp_path: Path, clock: FakeClock) -> Iterator[Queue]:
    queue = Queue(tmp_path / "state" / "queue.db", clock=clock)
    yield queue
    queue.close()


def nf(i: int, **over: object) -> NewFile:
    fields: dict[str, object] = {"size": 100 + i, "mtime_ns": 1_000 + i, **over}
    return new_file(f"/data/f{i:06d}.wav", **fields)


def state_of(q: Queue, row_id: int) -> State:
    row = q.get(row_id)
    assert row is not None
    return row.state


# -- intake -------------------------------------------------------------------------------


def test_enqueue_stores_every_field(q: Queue, clock: FakeClock) -> None:
    f = NewFile(path="/d/a.wav", size=5, mtime_ns=7, source="watch:/d", label="wave é",
                category="testing", metadata={"site": "Zürich"}, after_upload="move",
                move_to="/done", allow_duplicates=True, upload_name="b.wav",
                extra={"parts": [1]}, batch="b1")  # fmt: skip
    (rid,) = q.enqueue_many([f])
    row = q.get(rid)
    assert row is not None
    assert (row.path, row.size, row.mtime_ns, row.state, row.source) == (
        "/d/a.wav",
        5,
        7,
        State.PENDING,
        "watch:/d",
    )
    assert (row.label, row.category, row.metadata) == ("wave é", "testing", {"site": "Zürich"})
    assert (row.after_upload, row.move_to, row.allow_duplicates) == ("move", "/done", True)
    assert (row.upload_name, row.file_name, row.extra, row.batch) == (
        "b.wav",
        "b.wav",
        {"parts": [1]},
        "b1",
    )
    assert (row.attempts, row.next_attempt_at, row.enqueued_at) == (0, T0, T0)
    assert (row.last_error, row.sha256, row.sample_id, row.delivered_at) == (None,) * 4


def test_enqueue_dedups_by_path_size_and_mtime(q: Queue) -> None:
    first = q.enqueue_many([nf(1), nf(2)])
    assert len(first) == 2
    assert q.enqueue_many([nf(1), nf(2)]) == []
    assert q.known("/data/f000001.wav", 101, 1001)
    assert not q.known("/data/f000001.wav", 101, 1002)
    # the same path rewritten (new size or mtime) is a new version
    again = q.enqueue_many([nf(1, mtime_ns=5555), nf(1, size=9)])
    assert len(again) == 2
    assert q.counts()["pending"] == 4
    latest = q.latest_for_path("/data/f000001.wav")
    assert latest is not None and latest.id == again[1]


def test_enqueue_of_a_known_file_joins_the_new_batch(q: Queue) -> None:
    (rid,) = q.enqueue_many([nf(1)])
    assert q.enqueue_many([nf(1, batch="upload-2")]) == []
    row = q.get(rid)
    assert row is not None and row.batch == "upload-2"
    assert q.batch_totals("upload-2")["pending"] == (1, 101)


# -- lease and settle ---------------------------------------------------------------------


def test_lease_takes_due_rows_oldest_due_first_and_marks_them(q: Queue, clock: FakeClock) -> None:
    ids = q.enqueue_many([nf(i) for i in range(5)])
    # make row 0 due later, row 3 due earliest
    q.settle([Result(ids[0], State.PENDING, "x", T0 + 100, count_attempt=False),
              Result(ids[3], State.PENDING, "x", T0 - 50, count_attempt=False)])  # fmt: skip
    leased = q.lease(3)
    assert [r.id for r in leased] == [ids[3], ids[1], ids[2]]
    assert all(r.state is State.UPLOADING for r in leased)
    assert [state_of(q, i) for i in ids] == [State.PENDING, State.UPLOADING, State.UPLOADING,
                                            State.UPLOADING, State.PENDING]  # fmt: skip
    assert [r.id for r in q.lease(10)] == [ids[4]]  # ids[0] is not due yet
    assert q.lease(10) == []
    clock.advance(100)
    assert [r.id for r in q.lease(10)] == [ids[0]]


def test_lease_takes_the_highest_priority_first_then_the_oldest(q: Queue) -> None:
    video = q.enqueue_many([nf(i, priority=0) for i in range(5)])
    sensor = q.enqueue_many([nf(10 + i, priority=10) for i in range(2)])
    low = q.enqueue_many([nf(20, priority=-5)])
    assert [r.id for r in q.lease(4)] == [*sensor, video[0], video[1]]
    assert [r.id for r in q.lease(10)] == [*video[2:], *low]


def test_a_version_4_queue_gains_the_index_of_the_backlog_per_watch(tmp_path: Path) -> None:
    from edge_uploader.store import schema

    path = tmp_path / "v4.db"
    con = sqlite3.connect(path)
    script = schema._SCHEMA + "".join(schema._MIGRATIONS[v] for v in (2, 3, 4))
    con.executescript(script + "PRAGMA user_version=4;")
    con.close()
    Queue(path).close()
    con = sqlite3.connect(path)
    try:
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "files_state_source" in names
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    finally:
        con.close()


def test_a_version_3_queue_gains_priorities_and_the_daily_count(tmp_path: Path) -> None:
    from edge_uploader.store import schema

    path = tmp_path / "v3.db"
    con = sqlite3.connect(path)
    script = schema._SCHEMA + schema._MIGRATIONS[2] + schema._MIGRATIONS[3]
    con.executescript(script + "PRAGMA user_version=3;")
    con.execute(
        "INSERT INTO files (path, size, mtime_ns, state, source, category, metadata,"
        " enqueued_at) VALUES ('/d/old.wav', 5, 1, 0, 'watch:/d', 'training', '{}', 0)"
    )
    con.commit()
    con.close()
    q = Queue(path)
    try:
        (row,) = q.lease(5, now=1.0)
        assert row.path == "/d/old.wav"
        assert q.bytes_sent_on("2026-12-02") == 0
        q.settle([], sent=("2026-12-02", 123))
        q.settle([], sent=("2026-12-02", 7))
        assert q.bytes_sent_on("2026-12-02") == 130
    finally:
        q.close()


def test_lease_with_explicit_now_and_zero_limit(q: Queue) -> None:
    (rid,) = q.enqueue_many([nf(1)])
    assert q.lease(0) == []
    assert q.lease(5, now=T0 - 1) == []
    assert [r.id for r in q.lease(5, now=T0)] == [rid]


def test_settle_delivered(q: Queue, clock: FakeClock) -> None:
    (rid,) = q.enqueue_many([nf(1)])
    q.lease(1)
    clock.advance(3)
    q.settle([Result(rid, State.DELIVERED, sha256="ab" * 32, sample_id=991, bytes_sent=101)])
    row = q.get(rid)
    assert row is not None
    assert (row.state, row.sample_id, row.sha256, row.attempts) == (
        State.DELIVERED,
        991,
        "ab" * 32,
        1,
    )
    assert row.delivered_at == T0 + 3
    assert q.delivered_since(T0) == (1, 101)
    assert q.delivered_since(T0 + 4) == (0, 0)
    assert q.unfinished_local_actions() == []  # after_upload = keep


def test_settle_dead_pending_gone_held(q: Queue) -> None:
    a, b, c, d = q.enqueue_many([nf(i) for i in range(4)])
    q.lease(4)
    q.settle([
        Result(a, State.DEAD, "HTTP 400: bad file"),
        Result(b, State.PENDING, "HTTP 500", next_attempt_at=T0 + 8),
        Result(c, State.GONE, "the file no longer exists", count_attempt=False),
        Result(d, State.HELD, "sidecar broken", count_attempt=False),
    ])  # fmt: skip
    rows = {r.id: r for r in q.rows()}
    assert (rows[a].state, rows[a].last_error, rows[a].attempts) == (
        State.DEAD,
        "HTTP 400: bad file",
        1,
    )
    assert (rows[b].state, rows[b].next_attempt_at, rows[b].attempts) == (State.PENDING, T0 + 8, 1)
    assert (rows[c].state, rows[c].attempts) == (State.GONE, 0)
    assert (rows[d].state, rows[d].last_error) == (State.HELD, "sidecar broken")
    assert all(r.delivered_at is None for r in rows.values())
    assert q.counts() == {"pending": 1, "uploading": 0, "delivered": 0, "dead": 1, "held": 1,
                          "gone": 1}  # fmt: skip


def test_delivered_with_local_action_is_remembered_until_done(q: Queue) -> None:
    keep, delete = q.enqueue_many([nf(1), nf(2, after_upload="delete")])
    q.lease(2)
    q.settle([Result(keep, State.DELIVERED), Result(delete, State.DELIVERED)])
    assert [r.id for r in q.unfinished_local_actions()] == [delete]
    q.mark_local_done([delete])
    assert q.unfinished_local_actions() == []


def test_durable_settle_syncs_the_commit(q: Queue, tmp_path: Path) -> None:
    (rid,) = q.enqueue_many([nf(1, after_upload="delete")])
    q.lease(1)
    statements: list[str] = []
    q.db.connection.set_trace_callback(statements.append)
    q.settle([Result(rid, State.DELIVERED, sample_id=5)], durable=True)
    q.db.connection.set_trace_callback(None)
    sql = [s.split()[0] + " " + s.split()[1] if s.startswith("PRAGMA") else s.split()[0]
           for s in statements]  # fmt: skip
    assert sql == [
        "PRAGMA synchronous=FULL",
        "BEGIN",
        "UPDATE",
        "COMMIT",
        "PRAGMA synchronous=NORMAL",
    ]
    assert q.db.connection.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL again
    # another connection (another process) sees the committed state
    other = sqlite3.connect(q.path)
    try:
        assert other.execute("SELECT state, sample_id FROM files").fetchone() == (
            State.DELIVERED,
            5,
        )
    finally:
        other.close()


def test_plain_settle_is_not_synced(q: Queue) -> None:
    (rid,) = q.enqueue_many([nf(1)])
    statements: list[str] = []
    q.db.connection.set_trace_callback(statements.append)
    q.settle([Result(rid, State.DEAD, "x")])
    q.db.connection.set_trace_callback(None)
    assert not any("synchronous" in s for s in statements)


def test_settle_nothing_is_a_no_op(q: Queue) -> None:
    q.settle([])


def test_recover_returns_uploading_rows_to_pending(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "q.db"
    first = Queue(path, clock=clock)
    ids = first.enqueue_many([nf(i) for i in range(3)])
    first.lease(2)
    first.db.connection.close()  # a crash: no clean close
    second = Queue(path, clock=clock)
    try:
        assert second.counts()["uploading"] == 2
        assert second.recover() == 2
        assert [state_of(second, i) for i in ids] == [State.PENDING] * 3
        assert second.recover() == 0
        assert all(r.attempts == 0 for r in second.rows())
    finally:
        second.close()


def test_requeue_gives_back_without_an_attempt(q: Queue) -> None:
    a, b = q.enqueue_many([nf(1), nf(2)])
    q.lease(1)
    q.requeue([a, b])  # b was not leased: untouched
    assert state_of(q, a) is State.PENDING
    row = q.get(a)
    assert row is not None and row.attempts == 0


def test_next_due(q: Queue, clock: FakeClock) -> None:
    assert q.next_due() is None
    a, b = q.enqueue_many([nf(1), nf(2)])
    assert q.next_due() == T0
    q.lease(2)
    assert q.next_due() is None  # nothing pending
    q.settle([Result(a, State.PENDING, "x", T0 + 30), Result(b, State.PENDING, "y", T0 + 20)])
    assert q.next_due() == T0 + 20
    q.settle([Result(b, State.DEAD, "z")])
    assert q.next_due() == T0 + 30


# -- operator care ------------------------------------------------------------------------


@pytest.fixture
def dead_rows(q: Queue) -> list[int]:
    ids = q.enqueue_many([nf(i) for i in range(4)])
    q.lease(4)
    q.settle([Result(ids[0], State.DEAD, "HTTP 400: could not parse"),
              Result(ids[1], State.DEAD, "HTTP 413: too large"),
              Result(ids[2], State.DEAD, "HTTP 400: could not parse"),
              Result(ids[3], State.PENDING, "HTTP 500", T0 + 600)])  # fmt: skip
    return ids


def test_retry_by_reason(q: Queue, dead_rows: list[int], clock: FakeClock) -> None:
    clock.advance(5)
    assert q.retry(state=State.DEAD, reason_contains="parse") == 2
    rows = {r.id: r for r in q.rows()}
    for i in (dead_rows[0], dead_rows[2]):
        assert (rows[i].state, rows[i].attempts, rows[i].next_attempt_at) == (
            State.PENDING,
            0,
            T0 + 5,
        )
    assert rows[dead_rows[1]].state is State.DEAD


def test_retry_by_id_and_all(q: Queue, dead_rows: list[int]) -> None:
    assert q.retry(state=State.DEAD, row_ids=[dead_rows[1], dead_rows[3]]) == 1  # 3 is pending
    assert state_of(q, dead_rows[1]) is State.PENDING
    assert q.retry(state=State.DEAD) == 2
    assert q.counts()["dead"] == 0


def test_drop(q: Queue, dead_rows: list[int]) -> None:
    assert q.drop(state=State.DEAD, reason_contains="413") == 1
    assert q.get(dead_rows[1]) is None
    assert q.drop(state=State.DEAD, row_ids=[dead_rows[0]]) == 1
    assert q.drop(state=State.PENDING, row_ids=[dead_rows[2]]) == 0  # wrong state
    assert q.drop(state=State.DEAD) == 1
    assert q.counts()["dead"] == 0
    assert q.counts()["pending"] == 1


def test_empty_id_lists_select_nothing(q: Queue, dead_rows: list[int]) -> None:
    assert q.retry(state=State.DEAD, row_ids=[]) == 0
    assert q.drop(state=State.DEAD, row_ids=[]) == 0
    assert q.counts()["dead"] == 3


def test_retry_now_skips_waits(q: Queue, dead_rows: list[int], clock: FakeClock) -> None:
    clock.advance(1)
    assert q.retry_now() == 1
    row = q.get(dead_rows[3])
    assert row is not None and row.next_attempt_at == T0 + 1
    assert q.retry_now() == 0  # nothing waits any more
    assert state_of(q, dead_rows[0]) is State.DEAD


def test_counts_list_every_state(q: Queue) -> None:
    assert q.counts() == {"pending": 0, "uploading": 0, "delivered": 0, "dead": 0, "held": 0,
                          "gone": 0}  # fmt: skip


# -- reading ------------------------------------------------------------------------------


def test_rows_stream_in_pages_beyond_500(q: Queue) -> None:
    ids = q.enqueue_many([nf(i) for i in range(1234)])
    assert [r.id for r in q.rows()] == ids
    assert [r.id for r in q.rows(limit=700)] == ids[:700]
    assert [r.id for r in q.rows(limit=500)] == ids[:500]
    q.lease(600)
    assert [r.id for r in q.rows(State.PENDING)] == ids[600:]
    assert len(list(q.rows(State.UPLOADING, limit=550))) == 550


def test_rows_fetch_page_by_page(q: Queue) -> None:
    q.enqueue_many([nf(i) for i in range(1200)])
    statements: list[str] = []
    q.db.connection.set_trace_callback(statements.append)
    it = q.rows()
    next(it)
    assert sum(s.startswith("SELECT") for s in statements) == 1  # one page, not the table
    # the queue is not locked between pages: a write can happen mid-iteration
    q.set_state(probe=1)
    rest = list(it)
    q.db.connection.set_trace_callback(None)
    assert len(rest) == 1199
    assert sum(s.startswith("SELECT") for s in statements) == 3


def test_rows_by_batch(q: Queue) -> None:
    q.enqueue_many([nf(1, batch="a"), nf(2, batch="b"), nf(3, batch="a")])
    assert [r.path for r in q.rows(batch="a")] == ["/data/f000001.wav", "/data/f000003.wav"]


def test_oldest_pending(q: Queue, clock: FakeClock) -> None:
    assert q.oldest_pending() is None
    q.enqueue_many([nf(1)])
    clock.advance(10)
    q.enqueue_many([nf(2)])
    assert q.oldest_pending() == T0


# -- held files ---------------------------------------------------------------------------


def test_held_then_retagged(q: Queue, clock: FakeClock) -> None:
    (rid,) = q.enqueue_many([nf(1, state=State.HELD, last_error="bad sidecar", metadata={})])
    assert q.lease(5) == []
    assert [r.id for r in q.held_for("/data/f000001.wav")] == [rid]
    clock.advance(2)
    q.retag(rid, nf(1, label="cat", category="testing", metadata={"session": "s1"}))
    row = q.get(rid)
    assert row is not None
    assert (row.state, row.label, row.category, row.metadata, row.last_error) == (
        State.PENDING,
        "cat",
        "testing",
        {"session": "s1"},
        None,
    )
    assert row.next_attempt_at == T0 + 2
    assert q.held_for("/data/f000001.wav") == []
    assert [r.id for r in q.lease(5)] == [rid]


def test_retag_ignores_rows_that_are_not_held(q: Queue) -> None:
    (rid,) = q.enqueue_many([nf(1)])
    q.retag(rid, nf(1, label="cat"))
    row = q.get(rid)
    assert row is not None and row.label is None


# -- agent state, files -------------------------------------------------------------------


def test_agent_state(q: Queue, tmp_path: Path, clock: FakeClock) -> None:
    assert q.get_state() == {}
    q.set_state(paused="HTTP 401: Invalid API key", last_delivery_at=T0, info={"a": [1]})
    assert q.get_state() == {"paused": "HTTP 401: Invalid API key", "last_delivery_at": T0,
                             "info": {"a": [1]}}  # fmt: skip
    q.set_state(paused=None, last_delivery_at=T0 + 1)
    assert q.get_state() == {"last_delivery_at": T0 + 1, "info": {"a": [1]}}
    q.close()
    again = Queue(q.path, clock=clock)
    try:
        assert again.get_state()["last_delivery_at"] == T0 + 1
    finally:
        again.close()
    q.db.connection = sqlite3.connect(":memory:")  # the fixture closes it again


def test_file_is_wal_with_schema_version(q: Queue) -> None:
    assert q.db.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert q.db.connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert q.integrity_check() == "ok"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(QueueError, match="written by a newer edge-uploader"):
        Queue(path)


def test_unusable_path_is_a_queue_error(tmp_path: Path) -> None:
    (tmp_path / "q.db").mkdir()
    with pytest.raises(QueueError, match=str(tmp_path / "q.db")):
        Queue(tmp_path / "q.db")


def test_a_failing_read_is_a_queue_error_naming_the_file(tmp_path: Path) -> None:
    """Reads go through the same boundary as writes: no raw sqlite3 error escapes."""
    from edge_uploader.store.ledger import Ledger

    q = Queue(tmp_path / "q.db")
    try:
        with sqlite3.connect(tmp_path / "q.db") as other:  # another process breaks the file
            other.execute("DROP TABLE files")
            other.execute("DROP TABLE remote_deletes")
        for read in (q.counts, lambda: list(q.rows()), q.oldest_pending,
                     lambda: Ledger(q).counts(0.0)):  # fmt: skip
            with pytest.raises(QueueError, match=str(tmp_path / "q.db")):
                read()
    finally:
        q.close()


def test_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "q.db").write_bytes(b"garbage" * 1000)
    with pytest.raises(QueueError, match="cannot open the queue"):
        Queue(tmp_path / "q.db")


# -- scale --------------------------------------------------------------------------------


@pytest.mark.slow
def test_100k_pending_rows_stay_fast(tmp_path: Path, clock: FakeClock) -> None:
    q = Queue(tmp_path / "big.db", clock=clock)
    meta = {"site": "lab", "session": "s1"}

    def batch(start: int, n: int) -> list[NewFile]:
        return [NewFile(f"/data/f{i:06d}.wav", 100 + i, 1_000 + i, "test", None, "training", meta)
                for i in range(start, start + n)]  # fmt: skip

    def timed(fn: Callable[[], object]) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    def best(fn: Callable[[], object]) -> float:
        """The best of three: what the query costs, not a moment the machine was busy."""
        return min(timed(fn) for _ in range(3))

    try:
        for start in range(0, 100_000, 5_000):
            assert len(q.enqueue_many(batch(start, 5_000))) == 5_000
        assert q.counts()["pending"] == 100_000

        lease_times = []
        for _ in range(20):
            rows: list[object] = []
            lease_times.append(timed(lambda: rows.extend(q.lease(8))))
            assert len(rows) == 8
        assert max(lease_times) < 0.05, lease_times
        assert best(q.next_due) < 0.05
        assert best(q.counts) < 0.05
        assert best(lambda: q.known("/data/f050000.wav", 50_100, 51_000)) < 0.01
        assert q.counts()["uploading"] == 160

        # rows() streams page by page: memory bounded by a page, and a page with a state
        # filter costs what a page without one costs (no per-page scan of the backlog)
        statements: list[str] = []
        q.db.connection.set_trace_callback(statements.append)
        tracemalloc.start()
        n = 0
        for _ in q.rows(State.PENDING, limit=20_000):
            n += 1
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        q.db.connection.set_trace_callback(None)
        assert n == 20_000
        assert sum(s.startswith("SELECT") for s in statements) == 40
        assert peak < 3 * 1024 * 1024, peak
        plain = timed(lambda: sum(1 for _ in q.rows(limit=20_000)))
        filtered = timed(lambda: sum(1 for _ in q.rows(State.PENDING, limit=20_000)))
        assert filtered < 2.5 * plain + 0.05, (filtered, plain)
    finally:
        q.close()


def test_a_newer_version_supersedes_a_held_row(q: Queue) -> None:
    (held,) = q.enqueue_many([nf(1, state=State.HELD, last_error="bad sidecar")])
    (newer,) = q.enqueue_many([nf(1, size=999)])
    old = q.get(held)
    assert old is not None
    assert (old.state, old.last_error) == (State.GONE, "superseded by a newer version of the file")
    assert state_of(q, newer) is State.PENDING


def test_a_held_row_is_superseded_by_a_newer_version_in_the_same_batch(q: Queue) -> None:
    """A batch with no held row skips the superseding update: one that holds one keeps it."""
    held, newer = q.enqueue_many([nf(1, state=State.HELD, last_error="bad sidecar"),
                                  nf(1, size=999)])  # fmt: skip
    assert state_of(q, held) is State.GONE and state_of(q, newer) is State.PENDING
    (other,) = q.enqueue_many([nf(2)])
    assert state_of(q, other) is State.PENDING


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another user")
def test_root_keeps_the_service_owner_of_the_queue_files(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    Queue(path).close()
    os.chown(path, 4242, 4242)
    q = Queue(path)  # root opens the service's queue, as `sudo edge-uploader status` would
    try:
        q.enqueue_many([nf(1)])
        for suffix in ("-wal", "-shm"):
            assert Path(f"{path}{suffix}").stat().st_uid == 4242
    finally:
        q.close()
