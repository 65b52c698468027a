"""Helpers shared by the bulk tests (imported relatively: ``from .helpers import ...``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

API_KEY = "ei_bulk_test_key"
ROOT = Path(__file__).resolve().parents[2]


def queue_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "edge-uploader" / "queue.db"


def index(server_dir: Path) -> list[dict[str, Any]]:
    path = server_dir / "index.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def make_files(folder: Path, n: int, *, prefix: str = "idle", ext: str = ".wav") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"{prefix}.{i:05d}{ext}"
        p.write_bytes(f"{folder.name}/{p.name} unique body {i}\n".encode())
        paths.append(p)
    return paths


def run_cli(
    args: list[str], env: dict[str, str], **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "edge_uploader", *args],
        env=full,
        text=True,
        capture_output=True,
        timeout=60,
        cwd=ROOT,
        **kwargs,
    )


def cli_popen(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[str]:
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "edge_uploader", *args], env=full, text=True, cwd=ROOT, **kwargs
    )


class ServerProcess:
    """``python -m agent.localserver`` as a child process (it can be killed and restarted)."""

    def __init__(self, data_dir: Path, port: int = 0, extra: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.extra = extra or []
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key_file = self.data_dir.parent / "server-keys"
        key_file.write_text(API_KEY + "\n")
        cmd = [
            sys.executable,
            "-m",
            "edge_uploader.localserver",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--api-key-file",
            str(key_file),
            "--quiet",
            *self.extra,
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("local-ingestion listening on "), line
        self.url = line.split()[3]
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def wait_for(condition: Any, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll a condition with a deadline (for a subprocess's progress only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())
