"""Test support: the real local ingestion server and the real agent, as subprocesses.

Everything runs on 127.0.0.1 with free ports; processes are children of the test and are
always reaped. Waiting is done on conditions with deadlines, never on fixed sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

API_KEY = "ei_test_key_0123456789"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll ``cond`` until truthy; fail with a clear message at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {cond}")
        time.sleep(interval)


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EI_", "NOTIFY_", "JOURNAL"))}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class LocalServer:
    """``edge-uploader local-ingestion`` as a child process."""

    def __init__(self, data_dir: Path, key_file: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.key_file = key_file
        self.port = port or free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.log = data_dir.parent / f"{data_dir.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *extra: str) -> LocalServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "edge_uploader", "local-ingestion", "--host", "127.0.0.1",
            "--port", str(self.port), "--data-dir", str(self.data_dir),
            "--api-key-file", str(self.key_file), "--quiet", *extra,
        ]  # fmt: skip
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=child_env()
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "listening on" in line, f"server did not start: {line!r}; see {self.log}"
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def index(self) -> list[dict[str, Any]]:
        path = self.data_dir / "index.jsonl"
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


class Agent:
    """``edge-uploader run`` as a child process, killable with SIGKILL."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, **env: str) -> Agent:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_uploader", "run", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, env=child_env(**env),
            )  # fmt: skip
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


def write_config(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path
