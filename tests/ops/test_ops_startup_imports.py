"""What a process loads: a real daemon, started and delivering a file, never imports the
local ingestion server (it is a test and demo tool, not part of the agent), and ``--help``
loads no HTTP client. ``python -X importtime`` lists every module a process imports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from edge_uploader.localserver import LocalIngestionServer

from .conftest import _SYSTEMD_VARS, REPO, wait_for, write_config


def _imported(importtime_stderr: str) -> set[str]:
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", importtime_stderr, re.M))


def test_the_running_daemon_never_imports_the_local_server(
    tmp_path: Path, server: LocalIngestionServer
) -> None:
    config = write_config(tmp_path, server.url)
    err = tmp_path / "stderr.txt"
    env = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_VARS}
    with open(err, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "edge_uploader", "run", "--config",
             str(config)],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env,
        )  # fmt: skip
        try:
            (tmp_path / "captures" / "x.csv").write_text("t,v\n0,1\n")
            wait_for(lambda: len(server.index_lines()) == 1, timeout=30)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    modules = _imported(err.read_text())
    assert {"edge_uploader.daemon.lifecycle", "edge_uploader.core.delivery",
            "edge_uploader.remote.wire"} <= modules  # fmt: skip
    assert "httpx" not in modules  # a direct link uploads on its own client
    assert not [m for m in modules if m.startswith("edge_uploader.localserver")]


def test_help_loads_no_http_client_and_no_local_server() -> None:
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "edge_uploader", "--help"],
                            capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip
    assert result.returncode == 0
    modules = _imported(result.stderr)
    assert "edge_uploader.cli" in modules
    assert "httpx" not in modules
    assert not [m for m in modules if m.startswith("edge_uploader.localserver")]


def test_local_ingestion_still_runs_from_the_command(tmp_path: Path) -> None:
    """The server's own options, parsed by it (no abbreviations), behind the one command."""
    cmd = [sys.executable, "-m", "edge_uploader", "local-ingestion"]
    shown = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "--data-dir" in shown.stdout
    assert shown.stdout.startswith("usage: edge-uploader local-ingestion")
    refused = subprocess.run([*cmd, "--dat", str(tmp_path)], capture_output=True, text=True,
                             timeout=60)  # fmt: skip
    assert refused.returncode == 2, "an abbreviation is not --data-dir"
    assert "required: --data-dir" in refused.stderr
    proc = subprocess.Popen([*cmd, "--port", "0", "--data-dir", str(tmp_path / "d"), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("local-ingestion listening on http://127.0.0.1:"), line
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
