"""Fixtures for the unattended-operation tests: a local ingestion server, agent
subprocesses, a datagram socket standing in for systemd's ``NOTIFY_SOCKET``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_uploader.localserver import LocalIngestionServer

API_KEY = "ei_ops_test_key_0123456789abcdef"
REPO = Path(__file__).resolve().parents[2]


def wait_for(pred: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> object:
    """Poll ``pred`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {pred}")
        time.sleep(interval)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalIngestionServer]:
    srv = LocalIngestionServer(tmp_path / "server", api_keys=[API_KEY], quiet=True).start()
    yield srv
    srv.stop()


def write_config(folder: Path, url: str, extra: str = "", *, key: str = API_KEY) -> Path:
    """An agent config with one watch folder ``folder/captures`` and a key file."""
    (folder / "captures").mkdir(parents=True, exist_ok=True)
    key_file = folder / "api_key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    config = folder / "agent.toml"
    config.write_text(
        f"""
[device]
id = "ops-test"

[metadata]
site = "lab"

[ingestion]
url = "{url}"
api_key_file = "api_key"
retry_base_seconds = 0.05
retry_max_seconds = 0.5

[queue]
path = "state/queue.db"
scan_interval_seconds = 600

[[watch]]
path = "captures"
settle_seconds = 0.2
{extra}
"""
    )
    config.chmod(0o600)
    return config


class NotifySocket:
    """What systemd would receive: every datagram sent to ``NOTIFY_SOCKET``."""

    def __init__(self) -> None:
        self.name = f"@edge-uploader-test-{uuid.uuid4().hex[:12]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + self.name[1:].encode())
        self.messages: list[tuple[float, dict[str, str]]] = []

    def _receive(self, timeout: float) -> bool:
        self.sock.settimeout(max(0.001, timeout))
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return False
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.messages.append((time.monotonic(), fields))
        return True

    def wait(self, key: str, value: str | None = None, *, contains: str | None = None,
             timeout: float = 10.0, since: float = 0.0) -> dict[str, str]:  # fmt: skip
        """The first message (received after ``since``) whose ``key`` is ``value`` (or
        contains ``contains``; or just has ``key``)."""
        deadline = time.monotonic() + timeout
        while True:
            for at, fields in self.messages:
                if at < since or key not in fields:
                    continue
                if value is not None and fields[key] != value:
                    continue
                if contains is not None and contains not in fields[key]:
                    continue
                return fields
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no {key}={value or contains or '*'} within {timeout} s: {self.messages}"
                )
            self._receive(left)

    def flush(self) -> None:
        """Read what is already waiting in the socket (it was sent before now)."""
        while self._receive(0.001):
            pass

    def drain(self, seconds: float) -> list[tuple[float, dict[str, str]]]:
        """Collect for ``seconds``; returns what was sent in that window."""
        self.flush()
        start = time.monotonic()
        end = start + seconds
        while (left := end - time.monotonic()) > 0:
            self._receive(left)
        return [(at, f) for at, f in self.messages if at >= start]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


class Agent:
    """``python -m edge_uploader run`` as a child process, its output in a log file."""

    def __init__(self, config: Path, *, env: dict[str, str] | None = None,
                 level: str = "info", log_dir: Path | None = None) -> None:  # fmt: skip
        self.log_path = (log_dir or config.parent) / f"agent-{uuid.uuid4().hex[:6]}.log"
        self._log = open(self.log_path, "wb")
        full_env = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_VARS}
        full_env.update(env or {})
        self.argv = [sys.executable, "-m", "edge_uploader", "--log-level", level, "run",
                     "--config", str(config)]  # fmt: skip
        self.proc = subprocess.Popen(self.argv, env=full_env, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=REPO)  # fmt: skip

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            self.proc.kill()
            self.proc.wait()
            tail = "\n".join(self.log.splitlines()[-40:])
            raise AssertionError(
                f"the agent did not stop in {timeout} s; its log ends:\n{tail}"
            ) from exc
        finally:
            self._log.close()


_SYSTEMD_VARS = (
    "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
    "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "EI_API_KEY", "EI_HMAC_KEY",
)  # fmt: skip


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    """Agents started by a test; any still running at the end are killed."""
    started: list[Agent] = []
    yield started
    for agent in started:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()
        agent._log.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str) -> tuple[int, str]:
    """(status, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), str(response.read().decode())
    except urllib.error.HTTPError as exc:
        return int(exc.code), str(exc.read().decode())
