"""Deletion sync against the real local server, real inotify and the real daemon; the
grace period passes on an injected clock."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_uploader.cli import main
from edge_uploader.config import Config
from edge_uploader.daemon.lifecycle import Daemon as Agent
from edge_uploader.project.deletesync import DeleteSyncComponent, DeletionSync
from edge_uploader.store.ledger import DeleteState, Ledger
from edge_uploader.store.queue import Queue, State
from tests.fakes import FakeClock

from .conftest import Env, wait_for

SYNC = "\n[sync]\ndelete_remote = true\ngrace_seconds = {grace}\nmax_deletes_per_hour = {cap}\n"


def deletes(env: Env) -> list[int]:
    return sorted(c["sampleId"] for c in env.changes() if c["op"] == "delete")


def live_ids(env: Env) -> set[int]:
    return {s.id for s in env.server.samples()}


def sample_of(env: Env) -> dict[str, int]:
    q = env.queue()
    try:
        return {r.path: r.sample_id for r in q.rows(State.DELIVERED) if r.sample_id}
    finally:
        q.close()


def counts(env: Env) -> dict[str, int]:
    q = env.queue()
    try:
        return Ledger(q).counts(0.0)
    finally:
        q.close()


class Daemon:
    """The real service with the watcher on and a fake clock."""

    def __init__(self, config: Config, clock: FakeClock) -> None:
        self.clock = clock
        self.service = Agent(config, clock=clock)
        self.service.start()
        comp = self.service.components[0]
        assert isinstance(comp, DeleteSyncComponent)
        self.comp = comp

    def advance(self, seconds: float) -> None:
        """Move the clock and wait for a full pass that saw the new time."""
        self.clock.advance(seconds)
        started = self.comp.loop.steps_started
        self.comp.wake()
        wait_for(lambda: self.comp.loop.steps_done >= started + 1, 10, "a deletion-sync pass")

    def stop(self) -> None:
        self.service.stop()


@pytest.fixture
def synced(env: Env) -> Iterator[tuple[Env, Daemon, dict[str, int]]]:
    env.make_files(30)
    env.deliver(30)
    env.write_config(SYNC.format(grace=3600, cap=50))
    daemon = Daemon(env.config(), FakeClock())
    try:
        wait_for(lambda: daemon.comp.loop.steps_done >= 1, 10, "the first pass")
        yield env, daemon, sample_of(env)
    finally:
        daemon.stop()


def test_deleting_10_files_deletes_exactly_their_samples_after_the_grace_period(synced) -> None:
    env, daemon, samples = synced
    gone = sorted(samples)[5:15]
    for p in gone:
        os.unlink(p)
    wait_for(lambda: counts(env)["scheduled"] == 10, 10, "10 scheduled deletions")
    daemon.advance(3599)
    assert deletes(env) == []  # still inside the grace period

    daemon.advance(2)
    wait_for(lambda: len(deletes(env)) == 10, 10, "10 remote deletions")
    assert deletes(env) == sorted(samples[p] for p in gone)
    assert live_ids(env) == {samples[p] for p in samples if p not in gone}
    assert counts(env)["done"] == 10


def test_more_deletions_than_the_cap_delete_nothing_and_say_so(env: Env, caplog) -> None:
    env.make_files(20)
    env.deliver(20)
    env.write_config(SYNC.format(grace=3600, cap=5))
    daemon = Daemon(env.config(), FakeClock())
    samples = sample_of(env)
    gone = sorted(samples)[:8]
    try:
        for p in gone:
            os.unlink(p)
        wait_for(lambda: counts(env)["scheduled"] == 8, 10, "8 scheduled deletions")
        daemon.advance(3700)
        daemon.advance(10)
        assert deletes(env) == [] and len(live_ids(env)) == 20
        blocked = [r for r in caplog.records if "BLOCKED" in r.getMessage()]
        assert len(blocked) == 1  # said once, loudly, not on every pass
        assert blocked[0].levelno == logging.ERROR
        assert "--confirm-deletes" in blocked[0].getMessage()
    finally:
        daemon.stop()

    status = _run(["status", "--config", str(env.config_path)])
    assert "DELETION SYNC BLOCKED: 8 pending remote deletion(s)" in status
    assert f"edge-uploader sync --config {env.config_path} --confirm-deletes" in status

    out = _run(["sync", "--config", str(env.config_path)], code=1)
    assert "BLOCKED: 8 deletion(s) pending" in out and deletes(env) == []

    out = _run(["sync", "--config", str(env.config_path), "--confirm-deletes"])
    assert "confirmed 8" in out and "8 deleted" in out
    assert deletes(env) == sorted(samples[p] for p in gone)
    assert "BLOCKED" not in _run(["status", "--config", str(env.config_path)])


def _run(argv: list[str], code: int = 0) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == code
    return buf.getvalue()


def test_cancel_keeps_the_samples(env: Env) -> None:
    env.make_files(10)
    env.deliver(10)
    env.write_config(SYNC.format(grace=0, cap=2))
    for p in sorted(sample_of(env))[:4]:
        os.unlink(p)
    assert "BLOCKED" in _run(["sync", "--config", str(env.config_path)], code=1)
    assert "cancelled 4" in _run(["sync", "--config", str(env.config_path), "--cancel-deletes"])
    out = _run(["sync", "--config", str(env.config_path)])
    assert "0 deleted" in out and "BLOCKED" not in out
    assert deletes(env) == [] and counts(env)["cancelled"] == 4


def test_deletions_while_the_agent_was_down_are_found_by_reconciliation(env: Env) -> None:
    env.make_files(12)
    env.deliver(12)
    env.write_config(SYNC.format(grace=0, cap=50))
    samples = sample_of(env)
    gone = sorted(samples)[:4]
    for p in gone:
        os.unlink(p)
    out = _run(["sync", "--config", str(env.config_path)])
    assert "4 deleted" in out
    assert deletes(env) == sorted(samples[p] for p in gone)
    assert "0 deleted" in _run(["sync", "--config", str(env.config_path)])  # nothing twice


def test_a_file_that_comes_back_keeps_its_sample(synced, tmp_path: Path) -> None:
    env, daemon, samples = synced
    back, stays_gone = sorted(samples)[:2]
    shutil.move(back, tmp_path / "aside.csv")
    os.unlink(stays_gone)
    wait_for(lambda: counts(env)["scheduled"] == 2, 10, "2 scheduled deletions")
    shutil.move(tmp_path / "aside.csv", back)  # restored from the trash
    daemon.advance(3601)
    wait_for(lambda: len(deletes(env)) == 1, 10, "one deletion")
    assert deletes(env) == [samples[stays_gone]] and samples[back] in live_ids(env)


def test_a_renamed_file_keeps_its_sample(synced) -> None:
    env, daemon, samples = synced
    old = sorted(samples)[3]
    new = str(Path(old).with_name("renamed.csv"))
    os.rename(old, new)
    q = env.queue()
    try:
        wait_for(lambda: (r := q.latest_for_path(new)) is not None and r.state is State.DELIVERED,
                 10, "the renamed file delivered (as a duplicate)")  # fmt: skip
    finally:
        q.close()
    daemon.advance(3601)
    wait_for(lambda: counts(env)["cancelled"] == 1, 10, "the deletion cancelled")
    assert deletes(env) == [] and samples[old] in live_ids(env)
    assert sample_of(env)[new] == samples[old]  # the ledger follows the rename

    os.unlink(new)  # now it really goes
    wait_for(lambda: counts(env)["scheduled"] == 1, 10, "a new scheduled deletion")
    daemon.advance(3601)
    wait_for(lambda: deletes(env) == [samples[old]], 10, "the deletion")


def test_a_sample_with_other_content_is_not_deleted(env: Env) -> None:
    """A ledger of another project (the key changed): the bytes differ, nothing goes."""
    env.make_files(3)
    env.deliver(3)
    env.write_config(SYNC.format(grace=0, cap=50))
    path = sorted(sample_of(env))[0]
    q = env.queue()
    try:
        with q.transaction() as db:
            db.execute("UPDATE files SET sha256=? WHERE path=?", ("0" * 64, path))
        os.unlink(path)
        from edge_uploader.remote.studio import StudioClient

        config = env.config()
        studio = StudioClient.from_config(config)
        sync = DeletionSync(config, q, studio)
        assert sync.reconcile() == 1
        result = sync.run_due()
        studio.close()
        assert result.failed == 1 and "holds other content" in result.messages[0]
        assert Ledger(q).deletions(DeleteState.FAILED)[0].path == path
    finally:
        q.close()
    assert deletes(env) == [] and len(live_ids(env)) == 3


def test_a_wrong_project_stops_deletion_sync_and_loses_nothing(env: Env, capsys) -> None:
    env.make_files(3)
    env.deliver(3)
    env.write_config(SYNC.format(grace=0, cap=50))
    text = env.config_path.read_text().replace("[studio]", "[studio]\nproject_id = 99")
    env.config_path.write_text(text)
    os.unlink(sorted(sample_of(env))[0])
    out = _run(["sync", "--config", str(env.config_path)], code=1)
    assert "0 deleted, 0 already gone" in out
    assert "project 99 is unknown" in capsys.readouterr().err
    assert counts(env)["scheduled"] == 1 and deletes(env) == []


def test_only_kept_files_under_a_watched_folder_count(env: Env) -> None:
    env.write_config(SYNC.format(grace=0, cap=50), after_upload="delete")
    env.make_files(3)
    env.deliver(3)  # deleted locally by the agent itself after delivery
    assert "0 deleted" in _run(["sync", "--config", str(env.config_path)])
    assert deletes(env) == []


def test_schema_1_queue_files_are_migrated(tmp_path: Path) -> None:
    import sqlite3

    from edge_uploader.store import schema as queue_mod

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(queue_mod._SCHEMA)
    db.execute(
        "INSERT INTO files (path, size, mtime_ns, state, source, category, metadata,"
        " enqueued_at, sample_id) VALUES ('/x/a.wav', 1, 1, 2, 'watch:/x', 'training', '{}',"
        " 0, 77)"
    )
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    q = Queue(path)
    try:
        assert list(Ledger(q).sample_ids()) == [77]
        assert Ledger(q).counts(0)["scheduled"] == 0
        with q.reading() as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == queue_mod.SCHEMA_VERSION
    finally:
        q.close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={queue_mod.SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(Exception, match="newer edge-uploader"):
        Queue(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a file system")
def test_an_unmounted_card_deletes_nothing(env: Env) -> None:
    import subprocess

    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "edge-uploader-card",
                    str(env.captures)], check=True)  # fmt: skip
    mounted = True
    try:
        env.make_files(3)
        env.deliver(3)
        env.write_config(SYNC.format(grace=0, cap=50))
        assert "0 deleted" in _run(["sync", "--config", str(env.config_path)])  # sees the card
        subprocess.run(["umount", str(env.captures)], check=True)
        mounted = False
        # the folder is now empty, on the root file system: nothing was deleted by anyone
        out = _run(["sync", "--config", str(env.config_path)])
        assert "0 deleted" in out
        assert deletes(env) == [] and len(live_ids(env)) == 3
        assert counts(env)["scheduled"] == 0
    finally:
        if mounted:
            subprocess.run(["umount", str(env.captures)], check=False)
