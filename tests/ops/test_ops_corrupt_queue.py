"""A damaged queue file, with real processes: truncated or overwritten with garbage while
the agent was stopped, ``run`` stops at once with exit status 65 and a message naming the
file and ``queue rebuild``; the rebuild moves the file aside (kept byte for byte) and the
next run's reconciliation scan delivers what was missing, each file stored once. A -wal
deleted after a crash loses only commits the scan finds again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from edge_uploader.localserver import LocalIngestionServer

from .conftest import REPO, Agent, wait_for, write_config


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_uploader", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def stored(server: LocalIngestionServer) -> list[str]:
    return sorted(s.original_filename for s in server.samples())


def deliver(config: Path, agents: list[Agent], server: LocalIngestionServer,
            names: list[str]) -> Agent:  # fmt: skip
    """Start an agent, drop ``names`` in, wait until the server holds all of them."""
    captures = config.parent / "captures"
    agent = Agent(config)
    agents.append(agent)
    wait_for(lambda: "edge-uploader running" in agent.log)
    for name in names:
        (captures / name).write_text(f"t,v\n0,{name}\n")
    wait_for(lambda: set(names) <= set(stored(server)), timeout=20)
    return agent


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def _truncated(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _header_overwritten(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.write(b"\xff" * 100)


@pytest.mark.parametrize("damage", [_garbage, _truncated, _header_overwritten],
                         ids=["garbage", "truncated", "header-overwritten"])  # fmt: skip
def test_a_damaged_queue_is_named_set_aside_and_rebuilt(
    server: LocalIngestionServer, agents: list[Agent], tmp_path: Path,
    damage: Callable[[Path], None],
) -> None:  # fmt: skip
    config = write_config(tmp_path, server.url)
    queue = tmp_path / "state" / "queue.db"
    before = [f"before{i}.csv" for i in range(40)]
    assert deliver(config, agents, server, before).stop() == 0
    (tmp_path / "captures" / "while-stopped.csv").write_text("t,v\n0,stopped\n")
    damage(queue)
    damaged = queue.read_bytes()

    run = cli("run", "--config", str(config))
    assert run.returncode == 65, run.stderr
    assert f"{queue}: " in run.stderr and "the queue file is damaged" in run.stderr
    assert "edge-uploader queue rebuild --config" in run.stderr
    assert cli("queue", "check", "--config", str(config)).returncode == 65

    rebuilt = cli("queue", "rebuild", "--config", str(config))
    assert rebuilt.returncode == 0, rebuilt.stderr
    (aside,) = queue.parent.glob("queue.db.damaged-*[0-9]Z")
    assert aside.read_bytes() == damaged, "the damaged file is kept as it was"
    assert str(aside) in rebuilt.stdout
    assert cli("queue", "check", "--config", str(config)).returncode == 0

    deliver(config, agents, server, ["after.csv"])
    wait_for(lambda: "while-stopped.csv" in stored(server), timeout=20)
    assert stored(server) == sorted([*before, "while-stopped.csv", "after.csv"])  # once each


def test_a_rebuild_keeps_the_delivered_rows_it_can_read(
    server: LocalIngestionServer, agents: list[Agent], tmp_path: Path
) -> None:
    """A queue that is readable but damaged past its rows: the delivered rows are copied,
    so their files are not even offered to the service again."""
    config = write_config(tmp_path, server.url)
    queue = tmp_path / "state" / "queue.db"
    names = [f"f{i}.csv" for i in range(10)]
    assert deliver(config, agents, server, names).stop() == 0
    requests = server.upload_requests
    with closing(sqlite3.connect(queue)) as db:  # an index damaged: rows readable, file not sound
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name='files_path'").fetchone()
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    with open(queue, "r+b") as handle:
        handle.seek((root[0] - 1) * page_size)
        handle.write(b"\x0d" + b"\xee" * 40)
    assert cli("queue", "check", "--config", str(config)).returncode == 65
    rebuilt = cli("queue", "rebuild", "--config", str(config))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "with 10 delivered file(s) read from the old one" in rebuilt.stdout
    agent = deliver(config, agents, server, ["new.csv"])
    assert agent.stop() == 0
    assert server.upload_requests == requests + 1, "only the new file was sent"


def test_rebuild_refuses_while_the_agent_runs(
    server: LocalIngestionServer, agents: list[Agent], tmp_path: Path
) -> None:
    config = write_config(tmp_path, server.url)
    agent = deliver(config, agents, server, ["a.csv"])
    out = cli("queue", "rebuild", "--force", "--config", str(config))
    assert out.returncode == 1
    assert f"is open in process(es) {agent.proc.pid}" in out.stdout
    assert not list((tmp_path / "state").glob("*.damaged-*"))


def test_a_wal_deleted_after_a_crash_loses_nothing_the_scan_cannot_find(
    server: LocalIngestionServer, agents: list[Agent], tmp_path: Path
) -> None:
    """kill -9 leaves the last commits in queue.db-wal; deleting it rolls the queue back
    to its last checkpoint. The agent starts, the queue is sound, and the scan queues the
    forgotten files again: the service refuses the ones it has as duplicates."""
    config = write_config(tmp_path, server.url)
    queue = tmp_path / "state" / "queue.db"
    names = [f"w{i}.csv" for i in range(20)]
    agent = deliver(config, agents, server, names)
    agent.signal(signal.SIGKILL)
    agent.proc.wait()
    wal = Path(f"{queue}-wal")
    assert wal.stat().st_size > 0, "the crash left commits in the WAL"
    wal.unlink()
    (tmp_path / "captures" / "later.csv").write_text("t,v\n0,later\n")

    agent = deliver(config, agents, server, [])
    wait_for(lambda: "later.csv" in stored(server), timeout=20)
    with closing(sqlite3.connect(queue)) as db:
        wait_for(lambda: db.execute("SELECT count(*) FROM files WHERE state=2").fetchone()[0]
                 == len(names) + 1, timeout=20)  # fmt: skip
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert agent.stop() == 0
    assert stored(server) == sorted([*names, "later.csv"])
