"""The daemon, as a real process, against a server that turns hostile and back: it stays
up, delivers only what the service confirmed, and ``status`` names what went wrong."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.ops.conftest import REPO, Agent, wait_for, write_config

from .server import Hostile, HostileServer


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    srv = HostileServer(Hostile("ok", drip_seconds=0.2)).start()
    yield srv
    srv.stop()


def status(config: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "edge_uploader", "status", "--json", "--config", str(config)],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def row_error(queue: Path, name: str) -> str:
    """The row's own last error (``status`` shows the latest of them)."""
    with closing(sqlite3.connect(f"file:{queue}?mode=ro", uri=True)) as db:
        found = db.execute("SELECT last_error FROM files WHERE path LIKE ?", (f"%/{name}",))
        row = found.fetchone()
        return str(row[0]) if row else ""  # not recorded yet


def named(doc: dict[str, Any], reason: str) -> dict[str, Any] | None:
    """``doc`` if its ``last_error`` names ``reason``."""
    return doc if reason in (doc["last_error"] or "") else None


def test_daemon_against_a_server_turning_hostile(hostile: HostileServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, hostile.url)
    config.write_text(config.read_text().replace(
        "retry_max_seconds = 0.5", "retry_max_seconds = 0.5\ntimeout_seconds = 1"))  # fmt: skip
    captures = tmp_path / "captures"
    queue = tmp_path / "state" / "queue.db"
    agent = Agent(config)
    try:
        wait_for(lambda: "edge-uploader running" in agent.log)
        hostile.state.mode = "sid-huge"  # stored, with an id SQLite cannot hold
        (captures / "a.csv").write_text("t,v\n0,1\n")
        wait_for(lambda: status(config)["counts"]["delivered"] == 1)
        assert "is not a sample id" in agent.log

        for mode, reason in (
            ("drip", "timed out: the answer did not arrive whole within 1 s"),
            ("no-files", "the service listed no files in its answer"),
            ("huge", "the service's answer was over 1024 KiB: not read"),
        ):
            hostile.state.mode = mode
            seen = hostile.state.requests
            (captures / f"{mode}.csv").write_text(f"t,v\n0,{mode}\n")
            wait_for(lambda: hostile.state.requests >= seen + 2, timeout=20)  # tried, retried
            wait_for(lambda: reason in row_error(queue, f"{mode}.csv"), timeout=20)
            # A request sent under the previous mode may settle after this mode's first
            # answers and be the latest error for a moment; the next retry names this mode.
            doc = wait_for(lambda: named(status(config), reason), timeout=20)
            assert isinstance(doc, dict)
            assert doc["counts"]["delivered"] == 1, f"{mode}: nothing new is delivered"
            assert agent.proc.poll() is None

        hostile.state.mode = "ok"
        wait_for(lambda: status(config)["counts"]["delivered"] == 4, timeout=30)
    finally:
        agent.stop()
    assert agent.proc.returncode == 0
    assert "Traceback" not in agent.log
