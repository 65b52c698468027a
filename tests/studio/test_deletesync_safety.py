"""Deletion sync must only ever delete a sample whose file a person deleted: not one the
disk guard pruned, not one it merely cannot see (an I/O or permission error), and its
thread must survive a failed pass."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_uploader.config import Config
from edge_uploader.errors import QueueError
from edge_uploader.events import Stats
from edge_uploader.project.deletesync import DeleteSyncComponent, DeletionSync
from edge_uploader.remote.studio import StudioClient
from edge_uploader.store.ledger import Ledger
from edge_uploader.store.queue import Queue, State
from tests.fakes import FakeClock

from .conftest import Env, wait_for

SYNC = "\n[sync]\ndelete_remote = true\ngrace_seconds = {grace}\nmax_deletes_per_hour = 50\n"


def deletes(env: Env) -> list[int]:
    return sorted(c["sampleId"] for c in env.changes() if c["op"] == "delete")


def rows(queue: Queue) -> dict[str, int]:
    return {r.path: r.id for r in queue.rows(State.DELIVERED)}


@pytest.fixture
def delivered(env: Env) -> Iterator[tuple[Env, Config, Queue, StudioClient]]:
    env.make_files(4)
    env.deliver(4)
    env.write_config(SYNC.format(grace=60))
    config = env.config()
    queue = Queue(config.queue.path)
    studio = StudioClient.from_config(config)
    try:
        yield env, config, queue, studio
    finally:
        studio.close()
        queue.close()


def test_a_file_pruned_for_space_never_deletes_its_sample(delivered) -> None:
    """The watcher can report the pruner's unlink before the row is marked ``pruned``: the
    deletion gets scheduled, but when it falls due the row says "pruned", so it must not
    run (the disk guard freed space; nobody deleted the recording)."""
    env, config, queue, studio = delivered
    clock = FakeClock()
    sync = DeletionSync(config, queue, studio, clock=clock)
    path = sorted(rows(queue))[0]
    os.unlink(path)  # the disk guard's unlink...
    assert sync.notice(Path(path)) == 1  # ...seen by the watcher first
    queue.mark_pruned([rows(queue)[path]])  # ...and the row marked a moment later
    clock.advance(61)
    result = sync.run_due()
    assert result.deleted == 0 and result.kept == 1
    assert deletes(env) == []
    assert sync.reconcile() == 0  # and a later pass does not bring it back


def _loop_folder(folder: Path) -> None:
    """Make every path under ``folder`` unanswerable (ELOOP), as a dying SD card (EIO) or a
    folder the agent may no longer enter (EACCES; we run as root here) would."""
    folder.rename(folder.with_name(folder.name + ".real"))
    folder.symlink_to(folder.name)  # s1 -> s1


def test_a_file_that_cannot_be_checked_is_not_deleted(delivered) -> None:
    env, config, queue, studio = delivered
    clock = FakeClock()
    sync = DeletionSync(config, queue, studio, clock=clock)
    paths = sorted(rows(queue))
    _loop_folder(Path(paths[0]).parent)
    with pytest.raises(OSError) as info:
        os.lstat(paths[0])
    assert not isinstance(info.value, FileNotFoundError)  # unknown, not gone
    assert not os.path.lexists(paths[0])  # yet lexists says "gone"
    assert sync.notice(Path(paths[0])) == 0
    assert sync.reconcile() == 0
    clock.advance(3600)
    assert sync.run_due().deleted == 0
    assert deletes(env) == []


def test_a_due_deletion_whose_file_cannot_be_checked_is_postponed(delivered) -> None:
    env, config, queue, studio = delivered
    clock = FakeClock()
    sync = DeletionSync(config, queue, studio, clock=clock)
    paths = sorted(rows(queue))
    os.unlink(paths[0])
    assert sync.reconcile() == 1  # really deleted: scheduled
    _loop_folder(Path(paths[0]).parent)  # then the folder turns unreadable
    clock.advance(61)
    result = sync.run_due()
    assert result.deleted == 0 and result.postponed == 1
    assert deletes(env) == []
    (d,) = Ledger(queue).scheduled()
    assert d.due_at > clock() and "cannot check" in (d.last_error or "")


def test_the_sync_thread_survives_a_failing_first_pass(delivered, monkeypatch) -> None:
    """A queue that cannot be written at start (a full disk, a lock held by the ``sync``
    command) must not kill the thread: it says "trying again later", so it must."""
    _env, config, queue, _studio = delivered
    calls: list[int] = []
    original = DeletionSync.reconcile

    def flaky(self: DeletionSync, stop: threading.Event | None = None) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise QueueError("database or disk is full")
        return original(self, stop)

    monkeypatch.setattr(DeletionSync, "reconcile", flaky)
    comp = DeleteSyncComponent(config)
    runtime = SimpleNamespace(queue=queue, clock=FakeClock(), stats=Stats())
    comp.start(runtime)  # type: ignore[arg-type]
    try:
        wait_for(lambda: comp.loop.steps_done >= 1, 10, "the first pass")
        os.unlink(sorted(rows(queue))[0])
        comp.reconcile_soon()
        wait_for(lambda: len(calls) >= 2, 10, "a second reconciliation")
        wait_for(lambda: Ledger(queue).counts(0.0)["scheduled"] == 1, 10, "the deletion noticed")
        assert comp.loop.alive()
    finally:
        comp.stop()
