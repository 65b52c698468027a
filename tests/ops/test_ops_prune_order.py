"""Pruning marks a row ``pruned`` before its file goes: the watcher reports the unlink at
once, and deletion sync must never take the pruner's unlink for a user's deletion."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_uploader.config import DiskConfig
from edge_uploader.daemon.disk import DiskGuard
from edge_uploader.store.ledger import Ledger
from edge_uploader.store.queue import NewFile, Queue, Result, State

MiB = 1024 * 1024


class FakeFs:
    def __init__(self, total: int, free: int) -> None:
        self.total, self.free = total, free

    def __call__(self, path: str) -> os.statvfs_result:
        block = 4096
        return os.statvfs_result((block, block, self.total // block, self.free // block,
                                  self.free // block, 0, 0, 0, 0, 255))  # fmt: skip


def test_rows_are_marked_pruned_before_their_files_are_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    watched = tmp_path / "w"
    watched.mkdir()
    queue = Queue(tmp_path / "q.db")
    files = []
    for i in range(3):
        p = watched / f"f{i}.csv"
        p.write_bytes(b"x" * 8192)
        files.append(p)
    new = [NewFile(str(p), p.stat().st_size, p.stat().st_mtime_ns, "t", None, "training", {})
           for p in files]  # fmt: skip
    queue.enqueue_many(new)
    queue.settle([Result(r.id, State.DELIVERED, sample_id=r.id) for r in queue.lease(10)])
    ledger = Ledger(queue)
    seen_at_unlink: dict[str, bool] = {}
    real_unlink = Path.unlink

    def spy(self: Path, missing_ok: bool = False) -> None:
        if self in files:  # what a deletion-sync notice would find at this instant
            seen_at_unlink[self.name] = ledger.candidate_for_path(str(self)) is not None
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", spy)
    guard = DiskGuard(DiskConfig(min_free_bytes=2 * MiB, prune_delivered=True), [watched],
                      tmp_path / "q.db", queue=queue,
                      statvfs=FakeFs(total=100 * MiB, free=1 * MiB))  # fmt: skip
    guard.check(force=True)
    guard._prune(guard.states()[0])
    assert not any(p.exists() for p in files)
    assert seen_at_unlink == {"f0.csv": False, "f1.csv": False, "f2.csv": False}
    assert all(r.after_upload == "pruned" for r in queue.rows(State.DELIVERED))
    queue.close()
