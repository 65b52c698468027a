"""A wrong ingestion URL path pauses uploads; it never dead-letters the files.

The service answers every file with the same 404 (``.../v1`` prepends a route the service
does not have; a URL that already ends in ``/api/training/files`` doubles the path). That
is a config problem, not a refusal of each file: real agent process, real local server.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edge_uploader.store.queue import State
from tests.support import Agent, child_env, wait_for

from .test_delivery import agent_config, make_file, queue_rows

WRONG_PATHS = ["/v1", "/api/training/files"]


def status(cfg: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "edge_uploader", "status", "--config", str(cfg), "--json"],
        capture_output=True, text=True, env=child_env(), check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def rows(db: Path) -> list[tuple]:
    """The queue's rows; none while the agent is still creating the file."""
    try:
        return queue_rows(db) if db.exists() else []
    except sqlite3.OperationalError:
        return []


def dead(db: Path) -> int:
    return sum(1 for _, state, _ in rows(db) if state == State.DEAD)


@pytest.mark.parametrize("suffix", WRONG_PATHS)
def test_the_daemon_pauses_on_a_wrong_url_path(tmp_path, server, key_file, agents, suffix):
    """Two watches of two categories: the service's 404 names two different routes."""
    (tmp_path / "tests").mkdir()
    extra = f'category = "training"\n\n[[watch]]\npath = "{tmp_path / "tests"}"\n'
    extra += 'category = "testing"\nsettle_seconds = 0.2'
    cfg = agent_config(tmp_path, server.url + suffix, key_file, watch=extra)
    agents.append(agent := Agent(cfg, tmp_path / "agent.log").start())
    for i in range(6):
        make_file(tmp_path / ("captures" if i % 2 else "tests"), f"u{i}.wav")
    db = tmp_path / "queue.db"
    wait_for(lambda: len(rows(db)) == 6, timeout=20)
    wait_for(lambda: "uploads paused" in agent.output() or dead(db), timeout=20)
    assert dead(db) == 0
    assert "wrong URL" in agent.output()
    info = status(cfg)
    assert info["counts"]["dead"] == 0
    assert "404" in info["paused"] and "wrong URL" in info["paused"]
    assert server.index() == []
    assert agent.terminate() == 0
