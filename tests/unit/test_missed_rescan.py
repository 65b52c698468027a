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


def test_a_scan_of_a_large_folder_hands_each_unknown_file_once(tmp_path: Path) -> None:
    """A folder is asked about in chunks (its statuses are not all held at once): across
    the chunk boundaries, every file the queue does not know is handed once, and the ones
    it knows are not handed."""
    from edge_uploader.store.queue import KNOWN_CHUNK, NewFile

    root = tmp_path / "in"
    root.mkdir()
    old = time.time() - 60
    n = 2 * KNOWN_CHUNK + 7
    for i in range(n):
        p = root / f"f{i:05d}.csv"
        p.write_text("t,v\n")
        os.utime(p, (old, old))
    config = make_config({"device": {"id": "pi"}, "watch": [{"path": str(root)}]})
    queue = Queue(tmp_path / "q.db")
    try:
        known = [root / f"f{i:05d}.csv" for i in range(0, n, 3)]
        queue.enqueue_many([NewFile(str(p), p.stat().st_size, p.stat().st_mtime_ns, "w", None,
                                    "training", {}) for p in known])  # fmt: skip
        handed: list[Path] = []
        scanner = Scanner(config.watches, queue, lambda item: handed.append(item.path),
                          interval=600)  # fmt: skip
        assert scanner.scan() == n - len(known)
        assert sorted(handed) == sorted(set(root.iterdir()) - set(known))
    finally:
        queue.close()
