"""Fixtures: a real local ingestion server (ingestion + Studio routes on one port), a
config pointing the agent at it, and a helper that delivers files through the real daemon.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_uploader.config import Config, load_config
from edge_uploader.daemon.lifecycle import Daemon
from edge_uploader.localserver import LocalIngestionServer
from edge_uploader.store.queue import Queue, State

API_KEY = "ei_studio_test_key"


def wait_for(cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``cond`` until it is truthy (tests wait on outcomes, never fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class RequestLog(io.StringIO):
    """The server's request log (``ADDR METHOD PATH STATUS TIMEms``), parsed on demand."""

    LINE = re.compile(r"^\S+ (GET|POST|PUT|DELETE|HEAD) (\S+) (\d+|drop) ")

    def requests(self) -> list[tuple[str, str]]:
        out = []
        for line in self.getvalue().splitlines():
            m = self.LINE.match(line)
            if m:
                out.append((m.group(1), m.group(2)))
        return out

    def count(self, method: str, pattern: str) -> int:
        rx = re.compile(pattern)
        return sum(1 for m, p in self.requests() if m == method and rx.fullmatch(p))

    def clear(self) -> None:
        self.seek(0)
        self.truncate()


@dataclass
class Env:
    root: Path
    server: LocalIngestionServer
    log: RequestLog
    captures: Path
    config_path: Path

    def write_config(self, extra: str = "", *, after_upload: str = "keep",
                     metadata: str = 'session = "{dir}"') -> Path:  # fmt: skip
        text = f"""
[device]
id = "pi-07"

[metadata]
line = "L1"

[ingestion]
url = "{self.server.url}"
api_key_file = "key"
concurrency = 4
retry_base_seconds = 0.05
retry_max_seconds = 0.2

[studio]
url = "{self.server.url}/v1"
retry_base_seconds = 0.01
retry_max_seconds = 0.05

[queue]
path = "queue.db"
scan_interval_seconds = 3600

[[watch]]
path = "captures"
after_upload = "{after_upload}"
settle_seconds = 0
metadata = {{ {metadata} }}
{extra}
"""
        self.config_path.write_text(text)
        return self.config_path

    def config(self) -> Config:
        return load_config(self.config_path)

    def changes(self) -> list[dict[str, Any]]:
        path = self.server.data_dir / "changes.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def make_files(self, n: int, *, folder: str = "s1", prefix: str = "f") -> list[Path]:
        d = self.captures / folder
        d.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(n):
            p = d / f"{prefix}{i:04d}.csv"
            p.write_text(f"t,v\n0,{folder}-{prefix}-{i}\n")
            paths.append(p)
        return paths

    def deliver(self, expected: int, *, config: Config | None = None) -> None:
        """Run the real daemon until ``expected`` rows are
        delivered, then stop it."""
        cfg = config or self.config()
        svc = Daemon(cfg)
        svc.start()
        try:
            assert svc.queue is not None
            queue = svc.queue
            wait_for(lambda: queue.counts()["delivered"] >= expected, 60, "deliveries")
        finally:
            svc.stop()

    def queue(self) -> Queue:
        return Queue(self.config().queue.path)

    def ledger_ids(self) -> list[int]:
        q = self.queue()
        try:
            return sorted(r.sample_id for r in q.rows(State.DELIVERED) if r.sample_id)
        finally:
            q.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    log = RequestLog()
    server = LocalIngestionServer(tmp_path / "server", api_keys=[API_KEY], log_stream=log)
    server.start()
    (tmp_path / "key").write_text(API_KEY + "\n")
    captures = tmp_path / "captures"
    captures.mkdir()
    e = Env(tmp_path, server, log, captures, tmp_path / "agent.toml")
    e.write_config()
    try:
        yield e
    finally:
        server.stop()
