"""``make run``'s demo starts clean: the shipped ``config/dev.toml`` and ``config/dev-api-key``,
as a fresh clone leaves them (0644), run in a real agent process without a warning, while
the same files holding any other key are still warned about."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_uploader.config.preflight import prepare
from edge_uploader.localserver import LocalIngestionServer
from edge_uploader.secrets import DEMO_API_KEY

from .conftest import REPO, Agent, wait_for


def _demo_copy(root: Path, url: str, key: str = DEMO_API_KEY) -> Path:
    """The repository's demo config and key under ``root/config``, world-readable like a
    fresh clone; only the service's address is changed (port 4810 may be taken)."""
    (root / "config").mkdir()
    (root / "captures").mkdir()
    config = root / "config" / "dev.toml"
    text = (REPO / "config" / "dev.toml").read_text().replace("http://127.0.0.1:4810", url)
    config.write_text(text)
    shutil.copy(REPO / "config" / "dev-api-key", root / "config" / "dev-api-key")
    if key != DEMO_API_KEY:
        (root / "config" / "dev-api-key").write_text(key + "\n")
    for path in (config, root / "config" / "dev-api-key"):
        path.chmod(0o644)
    return config


def test_the_shipped_key_file_holds_the_demo_key() -> None:
    """The key the permission check recognises is the one `make run` ships."""
    assert (REPO / "config" / "dev-api-key").read_text().strip() == DEMO_API_KEY


def test_the_demo_runs_without_a_warning(tmp_path: Path, agents: list[Agent]) -> None:
    server = LocalIngestionServer(tmp_path / "server", api_keys=[DEMO_API_KEY], quiet=True)
    server.start()
    try:
        config = _demo_copy(tmp_path, server.url)
        agent = Agent(config, log_dir=tmp_path)
        agents.append(agent)
        (tmp_path / "captures" / "x.csv").write_text("t,v\n0,1\n")
        wait_for(lambda: len(server.index_lines()) == 1, timeout=20)
        assert agent.stop() == 0
    finally:
        server.stop()
    log = agent.log
    assert "WARNING" not in log, log
    assert "can be read by other users" not in log, log
    assert "using the public demo API key" in log
    assert DEMO_API_KEY not in log


def test_a_real_key_in_the_same_files_is_still_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _demo_copy(tmp_path, "http://127.0.0.1:1", key="ei_" + "7" * 64)
    with caplog.at_level(logging.WARNING, logger="edge_uploader.config.preflight"):
        prepare(config)
    assert f"config file {config} can be read by other users" in caplog.text
    assert f"{tmp_path / 'config' / 'dev-api-key'} can be read by other users" in caplog.text


def _planned(target: str, venv: Path) -> str:
    """What ``make TARGET`` would run for a fresh clone (no venv yet), without running it."""
    result = subprocess.run(["make", "-n", target, f"VENV={venv}"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_the_demo_installs_only_the_runtime(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run = _planned("run", venv)
    assert f"{venv}/bin/pip install --quiet -e .\n" in run
    assert "[dev]" not in run
    for target in ("check", "test"):
        assert f"{venv}/bin/pip install --quiet -e '.[dev]'" in _planned(target, venv)
