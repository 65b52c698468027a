"""Waking a running daemon from the CLI: ``retry-now`` and ``dead retry`` send SIGUSR1.

A daemon sleeps until its next retry is due; rows the CLI made due *now* would otherwise
wait for that moment. The daemon records its pid and its process start time in the
queue's state; the CLI signals only a process whose start time still matches, so a pid
reused by an unrelated process after a crash is never signalled.

The daemon side is a ``Component`` (started in the main thread, where Python allows signal
handlers); the handler only clears the pipeline's waits and wakes its dispatcher.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.queue import Queue
    from agent.service import Service

log = logging.getLogger("agent.wake")

STATE_KEY = "daemon"


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of stat(5)


class WakeOnSignal:
    """Daemon component: SIGUSR1 makes every due row go out now."""

    name = "wake-on-signal"

    def __init__(self) -> None:
        self._previous: Any = None
        self._installed = False
        self._queue: Queue | None = None

    def start(self, service: Service) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (tests)
        pipeline = service.pipeline

        def on_usr1(signum: int, frame: FrameType | None) -> None:
            if pipeline is not None:
                pipeline.retry_now()

        self._previous = signal.signal(signal.SIGUSR1, on_usr1)
        self._installed = True
        self._queue = service.queue
        if self._queue is not None:
            pid = os.getpid()
            self._queue.set_state(**{STATE_KEY: {"pid": pid, "start": process_start(pid)}})

    def stop(self) -> None:
        if not self._installed:
            return
        with contextlib.suppress(Exception):
            signal.signal(signal.SIGUSR1, self._previous or signal.SIG_DFL)
            if self._queue is not None:
                self._queue.set_state(**{STATE_KEY: None})
        self._installed = False


def wake_daemon(queue: Queue) -> int | None:
    """Signal the daemon that uses ``queue`` if it runs; its pid, or None."""
    info = queue.get_state().get(STATE_KEY)
    if not isinstance(info, dict):
        return None
    pid, start = info.get("pid"), info.get("start")
    if not isinstance(pid, int) or pid <= 1 or start is None or process_start(pid) != start:
        return None
    try:
        os.kill(pid, signal.SIGUSR1)
    except OSError as exc:
        log.debug("could not wake pid %d: %s", pid, exc)
        return None
    return pid
