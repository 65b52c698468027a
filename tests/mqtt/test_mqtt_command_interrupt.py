"""Ctrl-C during ``edge-uploader capture`` with a command source: the program runs in its
own session (the terminal's SIGINT never reaches it), so the agent must end it itself
instead of leaving a camera or microphone program running for its whole timeout."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_uploader.config import CommandSource
from edge_uploader.sources.program import CommandRunner


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")  # a zombie: dead, not reaped
    except FileNotFoundError:
        return True


def test_an_interrupted_capture_ends_its_program(tmp_path: Path) -> None:
    out = tmp_path / "o.png"
    pid_file = tmp_path / "pid"
    code = "import os, sys, time; open(sys.argv[2], 'w').write(str(os.getpid())); time.sleep(60)"
    source = CommandSource("cam", (sys.executable, "-c", code, "{output}", str(pid_file)),
                           ".png", 60.0)  # fmt: skip

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    def arm() -> None:
        deadline = time.monotonic() + 10
        while not pid_file.exists() or not pid_file.read_text():
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does to the agent

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        threading.Thread(target=arm, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            CommandRunner().run(source, out, 1000)
    finally:
        signal.signal(signal.SIGINT, previous)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert _gone(pid), "the capture program outlived the interrupted capture"
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)
