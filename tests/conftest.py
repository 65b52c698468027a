"""Shared fixtures (see ``tests/support.py`` for the process wrappers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_uploader.config import discover
from tests.support import API_KEY, Agent, LocalServer


@pytest.fixture(autouse=True)
def _no_config_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command given no ``--config`` looks for one (``config.discover``): neither this
    machine's system config nor the developer's own may be found by a test, in process or
    in a child (children inherit the variables; the system path is patched in process)."""
    monkeypatch.delenv(discover.CONFIG_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setattr(discover, "SYSTEM_CONFIG", tmp_path / "etc" / "agent.toml")


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "api_key"
    path.write_text(API_KEY + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def server(tmp_path: Path, key_file: Path) -> Iterator[LocalServer]:
    srv = LocalServer(tmp_path / "ingestion", key_file).start()
    yield srv
    srv.stop()


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    """Every agent a test starts is listed here and killed at the end."""
    started: list[Agent] = []
    yield started
    for a in started:
        if a.alive():
            assert a.proc is not None
            a.proc.kill()
            a.proc.wait()
