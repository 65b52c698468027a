"""Files intake could not record (the queue's disk was full) bring a rescan within
seconds, not at the next scan interval (ten minutes by default)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from edge_uploader.core.intake import Intake, Item
from edge_uploader.errors import QueueError
from edge_uploader.events import Stats
from edge_uploader.sources import scan as scan_mod
from edge_uploader.sources.scan import Scanner
from edge_uploader.store.queue import Queue
from tests.unit.helpers import make_config


def test_intake_reports_files_it_could_not_record(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.csv").write_text("t,v\n")
    config = make_config({"device": {"id": "pi"}, "watch": [{"path": str(root)}]})
    queue = Queue(tmp_path / "q.db")
    missed: list[bool] = []
    intake = Intake(queue, config, Stats(), on_queued=lambda: None,
                    on_missed=lambda: missed.append(True))  # fmt: skip

    def full(*_: object) -> None:
        raise QueueError(f"{queue.path}: database or disk is full")

    monkeypatch.setattr(queue, "record", full)
    intake.submit(Item(path=root / "a.csv", watch=config.watches[0]))
    intake.step()
    assert missed == [True]
    queue.close()


def test_a_missed_file_brings_a_rescan_soon(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(scan_mod, "MISSED_RESCAN_SECONDS", 0.2)
    root = tmp_path / "in"
    root.mkdir()
    path = root / "a.csv"
    path.write_text("t,v\n")
    os.utime(path, (time.time() - 60, time.time() - 60))  # settled
    config = make_config({"device": {"id": "pi"}, "watch": [{"path": str(root)}]})
    queue = Queue(tmp_path / "q.db")
    handed = threading.Semaphore(0)
    scanner = Scanner(config.watches, queue, lambda item: handed.release(), interval=600)
    scanner.start()
    try:
        assert handed.acquire(timeout=5), "the start-up scan"
        assert not handed.acquire(timeout=0.5), "no scan before the interval"
        started = time.monotonic()
        scanner.missed()  # intake could not record it
        assert handed.acquire(timeout=5), "a rescan soon after"
        assert time.monotonic() - started < 2
    finally:
        scanner.stop()
        queue.close()
