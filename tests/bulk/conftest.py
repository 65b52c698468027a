"""Fixtures for the bulk upload and queue-care tests: a real local ingestion server (in
process, or as a subprocess that can be killed), and an isolated environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_uploader.localserver import LocalIngestionServer

from .helpers import API_KEY, ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalIngestionServer]:
    srv = LocalIngestionServer(tmp_path / "server", api_keys=[API_KEY], quiet=True).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: LocalIngestionServer
) -> dict[str, str]:
    """The upload command's environment without a config file: key, URL, state folder."""
    values = {
        "EI_API_KEY": API_KEY,
        "EI_INGESTION_URL": server.url,
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    return values


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Server subprocesses a test starts; all stopped at the end."""
    started: list[ServerProcess] = []
    yield started
    for s in started:
        s.stop()
