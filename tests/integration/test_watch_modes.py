"""Polling with a settle time: for file systems without inotify, and when inotify fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_uploader.config import parse_config
from edge_uploader.daemon.lifecycle import Daemon
from edge_uploader.localserver import LocalIngestionServer
from edge_uploader.sources import watcher as watcher_mod
from tests.support import API_KEY, wait_for


@pytest.fixture
def local(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("EI_API_KEY", API_KEY)
    srv = LocalIngestionServer(tmp_path / "srv", api_keys={API_KEY}, quiet=True).start()
    yield srv
    srv.stop()


def service(tmp_path: Path, url: str, **watch: object) -> Daemon:
    (tmp_path / "cap").mkdir()
    data = {
        "ingestion": {"url": url, "retry_max_seconds": 0.5},
        "queue": {"path": str(tmp_path / "q.db")},
        "watch": [{"path": str(tmp_path / "cap"), "settle_seconds": 0.3, **watch}],
    }
    return Daemon(parse_config(data, "test.toml", tmp_path))


def names(srv: LocalIngestionServer) -> list[str]:
    return sorted(r["fileName"] for r in srv.index_lines())


def test_force_polling_takes_a_file_once_it_settles(tmp_path, local):
    svc = service(tmp_path, local.url, force_polling=True)
    svc.start()
    try:
        with open(tmp_path / "cap" / "slow.wav", "wb") as fh:
            fh.write(b"a" * 1000)
            fh.flush()
            assert names(local) == []  # still being written: not taken
            fh.write(b"b" * 1000)
        wait_for(lambda: names(local) == ["slow.wav"], timeout=15)
        assert local.index_lines()[0]["size"] == 2000
    finally:
        svc.stop()


def test_inotify_failure_falls_back_to_polling(tmp_path, local, monkeypatch, caplog):
    from watchdog.observers.inotify import InotifyObserver

    class Broken(InotifyObserver):  # type: ignore[misc]
        def start(self) -> None:
            raise OSError(28, "inotify watch limit reached")

    Broken.__name__ = "InotifyObserver"
    monkeypatch.setattr(watcher_mod, "_event_observer", Broken)
    svc = service(tmp_path, local.url)
    svc.start()
    try:
        (tmp_path / "cap" / "x.wav").write_bytes(b"x" * 10)
        wait_for(lambda: names(local) == ["x.wav"], timeout=15)
        assert "polling with a settle time instead" in caplog.text
    finally:
        svc.stop()
