"""The queue's batch scope: an upload command leases, recovers and counts only its rows,
while the daemon's calls (no batch) behave as before."""

from __future__ import annotations

from pathlib import Path

from edge_uploader.store.queue import NewFile, Queue, Result, State
from tests.fakes import FakeClock


def _new(path: str, batch: str | None, size: int = 10) -> NewFile:
    return NewFile(
        path=path,
        size=size,
        mtime_ns=1,
        source="upload",
        label=None,
        category="training",
        metadata={},
        batch=batch,
    )


def _queue(tmp_path: Path) -> tuple[Queue, FakeClock]:
    clock = FakeClock()
    return Queue(tmp_path / "q.db", clock=clock), clock


def test_lease_recover_and_due_are_scoped_to_a_batch(tmp_path: Path) -> None:
    q, clock = _queue(tmp_path)
    q.enqueue_many([_new("/d/1", None), _new("/b/1", "B"), _new("/b/2", "B"), _new("/c/1", "C")])
    rows = q.lease(10, batch="B")
    assert sorted(r.path for r in rows) == ["/b/1", "/b/2"]
    assert q.lease(10, batch="B") == []
    # the daemon still sees every other due row
    assert sorted(r.path for r in q.lease(10)) == ["/c/1", "/d/1"]
    assert q.recover(batch="B") == 2
    assert q.counts()["uploading"] == 2  # the daemon's leases are untouched
    assert q.recover() == 2
    q.settle([Result(rows[0].id, State.PENDING, "later", clock() + 50)])
    assert q.next_due(batch="B") == clock()
    q.lease(1, batch="B")
    assert q.next_due(batch="B") == clock() + 50
    assert q.next_due(batch="C") == clock()
    assert q.retry_now(batch="B") == 1
    assert q.next_due(batch="B") == clock()
    q.close()


def test_adopt_and_batch_totals(tmp_path: Path) -> None:
    q, _ = _queue(tmp_path)
    q.enqueue_many([_new("/w/1", None, 5), _new("/w/2", None, 7), _new("/b/1", "B", 11)])
    assert q.adopt([("/w/1", 5, 1), ("/w/9", 1, 1)], "B") == 1
    assert q.adopt([("/w/1", 5, 1)], "B") == 0  # already in the batch
    totals = q.batch_totals("B")
    assert totals["pending"] == (2, 16)
    assert totals["delivered"] == (0, 0) and set(totals) == {s.label for s in State}
    (row,) = q.lease(1, batch="B")
    q.settle([Result(row.id, State.DEAD, "HTTP 400: bad")])
    assert q.retry(state=State.DEAD, batch="C") == 0
    assert q.drop(state=State.DEAD, batch="B", reason_contains="bad") == 1
    q.close()
