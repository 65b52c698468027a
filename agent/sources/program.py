"""Command sources: run a fixed program (camera, microphone) that writes one file.

The argument list comes from the config; only the declared placeholders ``{output}``,
``{duration_ms}`` and ``{duration_s}`` are filled, with values the agent made (a temp path
inside the capture folder, a validated whole number). No shell, no payload text.

The program runs in its own session so a timeout or a stop kills its whole process group
(``arecord`` piped into something, a wrapper script). Its output and errors go to a
pipe of which only the last few KiB are kept (its last line is the failure reason); the agent's
secrets (API key, HMAC key, MQTT password variables) are removed from its environment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import threading
from pathlib import Path
from typing import IO

from ..config import CommandSource
from ..config.capture import render_arg
from ..errors import CaptureError

SECRET_ENV = ("EI_API_KEY", "EI_HMAC_KEY", "EI_MQTT_PASSWORD", "CREDENTIALS_DIRECTORY")
MAX_OUTPUT_BYTES = 100_000_000
"""The ingestion service's per-file limit."""
MAX_REASON_CHARS = 200


def build_argv(source: CommandSource, output: Path, duration_ms: int) -> list[str]:
    seconds = duration_ms / 1000
    values = {
        "output": str(output),
        "duration_ms": str(duration_ms),
        "duration_s": f"{seconds:g}" if seconds >= 0.001 else "0.001",
    }
    return [render_arg(arg, values) for arg in source.argv]


TAIL_BYTES = 4096
"""How much of a program's output is kept, for the failure reason."""


class CommandRunner:
    """Runs command captures; ``kill_all`` ends every running one (used on stop)."""

    def __init__(self) -> None:
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def run(self, source: CommandSource, output: Path, duration_ms: int) -> int:
        """Run the program; return the size of the file it wrote at ``output``."""
        argv = build_argv(source, output, duration_ms)
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
        with self._lock:
            if self._stopping:
                raise CaptureError("capture cancelled: the agent is stopping")
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    cwd=output.parent,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise CaptureError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
            self._procs.add(proc)
        tail = _Tail(proc.stdout)
        try:
            try:
                code = proc.wait(timeout=source.timeout_seconds)
            except subprocess.TimeoutExpired:
                _kill(proc)
                proc.wait()
                raise CaptureError(
                    f"{argv[0]} did not finish within {source.timeout_seconds:g} s"
                ) from None
            except BaseException:
                # Ctrl-C in `edge-uploader capture`: the program is in its own session
                # and never saw the SIGINT; do not leave it running.
                _kill(proc)
                proc.wait()
                raise
        finally:
            with self._lock:
                self._procs.discard(proc)
            tail.data()
        if self._stopping:
            raise CaptureError("capture cancelled: the agent is stopping")
        if code != 0:
            what = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
            raise CaptureError(f"{argv[0]} {what}{_last_line(tail.data())}")
        return _check_output(output, argv[0])

    def kill_all(self) -> None:
        with self._lock:
            self._stopping = True
            procs = list(self._procs)
        for proc in procs:
            _kill(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class _Tail:
    """Reads a program's output as it comes and keeps only the last ``TAIL_BYTES``: a
    chatty program cannot fill memory or a disk, and cannot block on a full pipe."""

    def __init__(self, stream: IO[bytes] | None) -> None:
        self._stream = stream
        self._data = b""
        self._thread = threading.Thread(target=self._read, name="capture-output", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        if self._stream is None:
            return
        try:
            with contextlib.suppress(OSError, ValueError):
                while chunk := self._stream.read1(65536):  # type: ignore[attr-defined]
                    self._data = (self._data + chunk)[-TAIL_BYTES:]
        finally:
            with contextlib.suppress(OSError):
                self._stream.close()

    def data(self) -> bytes:
        """What was kept; waits a moment for the last output (a child of the program that
        kept the pipe open must not hold the capture up: its reader ends at its EOF)."""
        self._thread.join(1.0)
        return self._data


def _last_line(data: bytes) -> str:
    tail = data.decode("utf-8", "replace").strip().splitlines()
    if not tail:
        return ""
    line = " ".join(tail[-1].split())[:MAX_REASON_CHARS]
    return f": {line}"


def _check_output(output: Path, program: str) -> int:
    try:
        st = os.lstat(output)
    except FileNotFoundError:
        raise CaptureError(f"{program} exited without writing its output file") from None
    except OSError as exc:
        raise CaptureError(f"cannot check the output of {program}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CaptureError(f"{program} left something other than a regular file at {{output}}")
    if st.st_size == 0:
        raise CaptureError(f"{program} wrote an empty file")
    if st.st_size > MAX_OUTPUT_BYTES:
        raise CaptureError(f"{program} wrote {st.st_size} bytes, over the ingestion limit")
    return st.st_size
