"""A queue that cannot be written (a full disk) must not lose results or strand rows:
the pipeline keeps finished uploads and writes them when it can, intake tells waiting
sources their file is not recorded, and the health check does not call it a hang."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx

from edge_uploader.config import load_config
from edge_uploader.core.delivery import Delivery
from edge_uploader.core.intake import Intake, Item
from edge_uploader.errors import QueueError
from edge_uploader.events import Stats
from edge_uploader.remote.ingestion import build_uploader
from edge_uploader.store.queue import NewFile, Queue, State

from .conftest import wait_for, write_config


class FlakyQueue(Queue):
    """Raises "database or disk is full" from chosen writes while ``full`` is set."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.full = threading.Event()
        self.failed: dict[str, int] = {}

    def _fail(self, what: str) -> None:
        if self.full.is_set():
            self.failed[what] = self.failed.get(what, 0) + 1
            raise QueueError(f"{self.path}: database or disk is full")

    def settle(self, results: Any, **kw: Any) -> None:
        self._fail("settle")
        super().settle(results, **kw)

    def record(self, files: Any) -> Any:
        self._fail("enqueue")
        return super().record(files)


def _ok(request: httpx.Request) -> httpx.Response:
    request.read()
    body = {"success": True, "files": [{"success": True, "sampleId": 7}]}
    return httpx.Response(200, content=json.dumps(body).encode())


def test_results_survive_a_failed_settle(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9"))
    queue = FlakyQueue(tmp_path / "q.db")
    data = tmp_path / "captures" / "a.csv"
    data.write_text("t,v\n0,1\n")
    st = data.stat()
    queue.enqueue_many([NewFile(str(data), st.st_size, st.st_mtime_ns, "test", None,
                                "training", {})])  # fmt: skip
    stats = Stats()
    uploader = build_uploader(cfg, transport=httpx.MockTransport(_ok))
    pipeline = Delivery(queue, uploader, cfg.ingestion, stats)
    queue.full.set()
    pipeline.start()
    try:
        wait_for(lambda: queue.failed.get("settle", 0) >= 1)
        assert pipeline.inflight == 1, "the row stays in flight until its result is written"
        assert pipeline.queue_error and "disk is full" in pipeline.queue_error
        assert stats.counts["delivered"] == 0
        queue.full.clear()
        pipeline.wake()
        wait_for(lambda: queue.counts()["delivered"] == 1, timeout=10)
        assert pipeline.inflight == 0 and pipeline.queue_error is None
        assert stats.counts["delivered"] == 1
        row = queue.get(1)
        assert row is not None and row.sample_id == 7 and row.attempts == 1
    finally:
        pipeline.stop()
        queue.close()


def test_intake_tells_a_waiting_source_when_the_queue_is_full(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9"))
    queue = FlakyQueue(tmp_path / "q.db")
    intake = Intake(queue, cfg, Stats(), on_queued=lambda: None)
    data = tmp_path / "captures" / "cap.csv"
    data.write_text("t,v\n0,1\n")
    answers: list[tuple[int | None, str | None]] = []
    queue.full.set()
    intake.start()
    try:
        intake.submit(Item(path=data, on_queued=lambda row, why: answers.append((row, why))))
        assert intake.wait_idle(5)
        assert len(answers) == 1 and answers[0][0] is None
        assert "not recorded in the queue" in str(answers[0][1])
        assert intake.alive(), "intake keeps running"
        queue.full.clear()
        intake.submit(Item(path=data, on_queued=lambda row, why: answers.append((row, why))))
        assert intake.wait_idle(5)
        assert answers[1][0] is not None and answers[1][1] is None
        assert queue.counts()[State.PENDING.label] == 1
    finally:
        intake.stop()
        queue.close()
