"""A full disk on a real 4 MiB tmpfs holding the queue and the watched folder: the agent
keeps running, refuses captures with the reason, loses nothing already queued, and
resumes by itself when space is freed. Plus the free-space floor's rules and pruning.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_uploader.config import DiskConfig, load_config
from edge_uploader.daemon.disk import DiskGuard
from edge_uploader.daemon.lifecycle import Daemon
from edge_uploader.localserver import FaultConfig, LocalIngestionServer
from edge_uploader.store.queue import NewFile, Queue, State

from .conftest import Agent, free_port, http_get, wait_for, write_config

MiB = 1024 * 1024
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted at the end."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    options = "size=4m,mode=0755"
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "edge-uploader-test", str(mnt)], check=True
    )
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path: Path) -> int:
    """Write ``path`` until the file system says "No space left on device"."""
    written = 0
    with open(path, "wb", buffering=0) as handle:
        try:
            while True:
                written += handle.write(b"\0" * 65536) or 0
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return written


def _health(port: int) -> tuple[int, dict[str, object]]:
    status, body = http_get(f"http://127.0.0.1:{port}/healthz")
    return status, json.loads(body)


def _metric(port: int, name: str) -> float:
    for line in http_get(f"http://127.0.0.1:{port}/metrics")[1].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


@needs_root
def test_full_disk_keeps_running_refuses_loses_nothing_and_resumes(
    small_fs: Path, server: LocalIngestionServer, agents: list[Agent], tmp_path: Path
) -> None:
    port = free_port()
    config = write_config(
        small_fs, server.url,
        f'[http]\nlisten = "127.0.0.1:{port}"\n'
        "[disk]\nmin_free_bytes = 1048576\ncheck_interval_seconds = 0.5\n",
    )  # fmt: skip
    captures = small_fs / "captures"
    server.set_faults(FaultConfig(fail_rate=1.0, fail_status=503))  # the service is down
    agent = Agent(config, log_dir=tmp_path)
    agents.append(agent)
    wait_for(lambda: "edge-uploader running" in agent.log)
    before = [f"before{i}.csv" for i in range(5)]
    for name in before:
        (captures / name).write_text(f"t,v\n0,{name}\n")
    wait_for(lambda: agent.log.count("queued ") >= 5)
    assert _health(port)[0] == 200

    ballast = small_fs / "ballast"
    assert _fill(ballast) > 2 * MiB
    status, doc = _health(port)
    assert status == 503
    reasons = doc["reasons"]
    assert isinstance(reasons, list)
    assert any(str(r).startswith(f"low disk space on {small_fs}") and "below the floor of 1.0 MiB"
               in str(r) for r in reasons), reasons  # fmt: skip
    assert _metric(port, "edge_uploader_captures_allowed") == 0
    wait_for(lambda: "new captures are refused" in agent.log)

    server.set_faults(FaultConfig())  # the service is back while the disk is full
    for name in ("during0.csv", "during1.csv"):  # another program tries to write a capture
        tmp = captures / f".{name}.tmp"
        try:
            tmp.write_text(f"t,v\n0,{name}\n" * 1000)
            tmp.rename(captures / name)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            tmp.unlink()
    wait_for(lambda: "database or disk is full" in agent.log or len(server.index_lines()) >= 5,
             timeout=15)  # fmt: skip
    assert agent.proc.poll() is None, "the agent keeps running on a full disk"
    status, doc = _health(port)
    assert status == 503

    ballast.unlink()
    wait_for(lambda: _health(port)[0] == 200, timeout=10)
    assert _metric(port, "edge_uploader_captures_allowed") == 1
    assert "disk space is back" in agent.log
    after = ["after0.csv", "after1.csv"]
    for name in after:
        (captures / name).write_text(f"t,v\n0,{name}\n")
    on_disk = {p.name for p in captures.iterdir()}
    wait_for(lambda: on_disk <= {line["fileName"] for line in server.index_lines()}, timeout=20)
    assert set(before) | set(after) <= on_disk
    assert agent.proc.poll() is None
    assert agent.stop() == 0
    with sqlite3.connect(small_fs / "state" / "queue.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        states = dict(db.execute("SELECT state, count(*) FROM files GROUP BY state").fetchall())
    assert states == {State.DELIVERED: len(on_disk)}, states


@needs_root
def test_capture_api_and_pruning_on_a_real_small_disk(
    small_fs: Path, server: LocalIngestionServer
) -> None:
    config = write_config(
        small_fs, server.url,
        "[disk]\nmin_free_bytes = 1048576\nprune_delivered = true\ncheck_interval_seconds = 0.5\n",
    )  # fmt: skip
    captures = small_fs / "captures"
    service = Daemon(load_config(config), config_path=config)
    service.start()
    try:
        disk = service.disk
        assert disk is not None
        assert disk.allow_capture(captures) and disk.reason(captures) is None
        names = [f"rec{i}.csv" for i in range(6)]
        for i, name in enumerate(names):
            (captures / name).write_bytes(b"t,v\n" + bytes([48 + i]) * (300 * 1024))
            wait_for(lambda n=name: n in {x["fileName"] for x in server.index_lines()})
        outside = small_fs / "not-watched.csv"  # delivered files elsewhere are never pruned
        outside.write_bytes(b"x" * 1000)

        _fill(small_fs / "ballast")
        # a capture source asks first: refused, with the reason (this first look also
        # wakes the pruning thread, so it is the only one that must see the disk full)
        reason = disk.reason(captures)
        assert reason is not None and f"low disk space on {small_fs}" in reason
        # pruning frees the floor plus a margin, oldest delivered files first
        wait_for(lambda: disk.allow_capture(captures), timeout=10)
        left = sorted(p.name for p in captures.iterdir())
        assert left == names[len(names) - len(left) :], "oldest pruned first"
        assert 0 < len(names) - len(left) <= 5
        assert outside.exists()
        queue = service.queue
        assert queue is not None
        pruned = [r.path for r in queue.rows(State.DELIVERED) if r.after_upload == "pruned"]
        assert sorted(Path(p).name for p in pruned) == names[: len(names) - len(left)]
        assert queue.counts()["delivered"] == 6, "rows stay: the ledger keeps every sample"
    finally:
        service.stop()


class FakeFs:
    def __init__(self, total: int, free: int) -> None:
        self.total, self.free = total, free

    def __call__(self, path: str) -> os.statvfs_result:
        block = 4096
        return os.statvfs_result((block, block, self.total // block, self.free // block,
                                  self.free // block, 0, 0, 0, 0, 255))  # fmt: skip


def test_floor_rules_hysteresis_and_reason(tmp_path: Path) -> None:
    fs = FakeFs(total=1000 * MiB, free=500 * MiB)
    changes: list[str] = []
    recovered: list[bool] = []
    guard = DiskGuard(DiskConfig(min_free_bytes=10 * MiB, min_free_percent=5), [tmp_path],
                      tmp_path / "q.db", on_change=lambda: changes.append("x"),
                      on_recover=lambda: recovered.append(True), statvfs=fs)  # fmt: skip
    guard.check(force=True)
    assert guard.allow_capture() and guard.reason() is None
    state = guard.states()[0]
    assert state.floor_bytes == 50 * MiB, "5 % of 1000 MiB beats 10 MiB"
    fs.free = 49 * MiB
    guard.check(force=True)
    reason = guard.reason(tmp_path / "sub")
    assert reason == (f"low disk space on {tmp_path}: 49.0 MiB free, below the floor of 50.0 MiB"
                      " ([disk] min_free_bytes / min_free_percent)")  # fmt: skip
    assert changes == ["x"]
    fs.free = 51 * MiB  # above the floor but within the 5 % margin: still refused
    guard.check(force=True)
    assert not guard.allow_capture()
    fs.free = 53 * MiB
    guard.check(force=True)
    assert guard.allow_capture() and recovered == [True] and changes == ["x", "x"]


def test_a_zero_floor_never_refuses(tmp_path: Path) -> None:
    fs = FakeFs(total=100 * MiB, free=0)
    guard = DiskGuard(DiskConfig(min_free_bytes=0), [tmp_path], tmp_path / "q.db", statvfs=fs)
    assert guard.allow_capture()


def test_pruning_skips_rewritten_and_foreign_files(tmp_path: Path) -> None:
    watched = tmp_path / "w"
    watched.mkdir()
    queue = Queue(tmp_path / "q.db")
    files = []
    for name in ("old.csv", "changed.csv", "young.csv"):
        p = watched / name
        p.write_bytes(b"x" * 8192)
        files.append(p)
    foreign = tmp_path / "elsewhere.csv"
    foreign.write_bytes(b"y" * 8192)
    rows = []
    for p in [*files, foreign]:
        st = p.stat()
        rows.append(NewFile(str(p), st.st_size, st.st_mtime_ns, "t", None, "training", {}))
    ids = queue.enqueue_many(rows)
    leased = queue.lease(10)
    from edge_uploader.store.queue import Result

    queue.settle([Result(r.id, State.DELIVERED) for r in leased])
    files[1].write_bytes(b"z" * 9000)  # rewritten after delivery: a newer version
    fs = FakeFs(total=100 * MiB, free=1 * MiB)
    guard = DiskGuard(DiskConfig(min_free_bytes=2 * MiB, prune_delivered=True), [watched],
                      tmp_path / "q.db", queue=queue, statvfs=fs)  # fmt: skip
    guard.check(force=True)
    state = guard.states()[0]
    guard._prune(state)  # the thread's work, run here deterministically
    assert not files[0].exists() and not files[2].exists()
    assert files[1].exists() and foreign.exists()
    marked = {r.id for r in queue.rows(State.DELIVERED) if r.after_upload == "pruned"}
    assert marked == {ids[0], ids[2]}
    queue.close()


@pytest.mark.root
@needs_root
def test_queue_on_a_full_disk_while_files_keep_arriving(
    small_fs: Path, server: LocalIngestionServer, agents: list[Agent], tmp_path: Path
) -> None:
    """The queue's file system fills while captures keep landing on another one: files
    that cannot be recorded are not lost (the scan finds them once space is back), the
    agent stays up, the queue stays sound, and each file is stored once."""
    home = tmp_path / "agent"
    config = write_config(home, server.url, "[disk]\nmin_free_bytes = 1048576\n"
                          "check_interval_seconds = 0.5\n")  # fmt: skip
    queue_path = small_fs / "state" / "queue.db"
    config.write_text(config.read_text().replace('"state/queue.db"', f'"{queue_path}"'))
    captures = home / "captures"
    agent = Agent(config, log_dir=tmp_path)
    agents.append(agent)
    wait_for(lambda: "edge-uploader running" in agent.log)

    written: list[str] = []
    stop = threading.Event()

    def arrive() -> None:  # a capture program writing a file every 20 ms, full disk or not
        while not stop.wait(0.02):
            name = f"f{len(written):04d}.csv"
            tmp = captures / f".{name}.tmp"
            tmp.write_text(f"t,v\n0,{name}\n")
            tmp.rename(captures / name)
            written.append(name)

    writer = threading.Thread(target=arrive)
    writer.start()
    try:
        wait_for(lambda: len(server.index_lines()) >= 20)
        ballast = small_fs / "ballast"
        _fill(ballast)
        wait_for(lambda: "database or disk is full" in agent.log, timeout=15)
        during = len(written)
        wait_for(lambda: len(written) >= during + 50)  # 50 more arrive while it is full
        assert agent.proc.poll() is None, "the agent keeps running with its queue disk full"
        ballast.unlink()
        wait_for(lambda: len(written) >= during + 100)
    finally:
        stop.set()
        writer.join()
    wait_for(lambda: set(written) <= {x["fileName"] for x in server.index_lines()}, timeout=30)
    assert agent.stop() == 0
    assert sorted(x["fileName"] for x in server.index_lines()) == sorted(written), "once each"
    with sqlite3.connect(queue_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM files WHERE state=?",
                          (int(State.DELIVERED),)).fetchone()[0] == len(written)  # fmt: skip
