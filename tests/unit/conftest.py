"""Unit-test fixtures: a clean environment, a fake clock and config helpers.

Unit tests are pure and fast: real SQLite files and real inotify in ``tmp_path``, fakes
only at the seams (``httpx.MockTransport``, ``agent.clock.FakeClock``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_uploader.config import Config, load_config
from tests.fakes import FakeClock


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets and systemd variables of the developer's shell must not leak into tests."""
    for name in ("EI_API_KEY", "EI_HMAC_KEY", "CREDENTIALS_DIRECTORY", "JOURNAL_STREAM",
                 "STATE_DIRECTORY", "NOTIFY_SOCKET"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``setup_logging`` (also called by ``cli.main``) replaces the root handlers."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {n: logging.getLogger(n).level for n in ("httpx", "httpcore", "watchdog")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in noisy.items():
        logging.getLogger(name).setLevel(lvl)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def write_toml(tmp_path: Path) -> Callable[[str], Path]:
    """Write ``agent.toml`` in ``tmp_path`` and return its path."""

    def write(body: str, name: str = "agent.toml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
        return path

    return write


@pytest.fixture
def load_toml(write_toml: Callable[[str], Path]) -> Callable[..., Config]:
    def load(body: str, **kwargs: Any) -> Config:
        return load_config(write_toml(body), **kwargs)

    return load
