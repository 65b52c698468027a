"""Waking a running daemon from the CLI: ``retry-now`` and ``dead retry`` send SIGUSR1.

A daemon sleeps until its next retry is due; rows the CLI made due *now* would otherwise
wait for that moment. The daemon records its pid and its process start time in the
queue's state; the CLI signals only a process whose start time still matches, so a pid
reused by an unrelated process after a crash is never signalled.

The daemon side (``install``, called by ``Daemon.run_forever``) only clears delivery's
waits and wakes its dispatcher; a signal handler does nothing else.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from types import FrameType

from ..errors import QueueError
from ..store.queue import Queue

log = logging.getLogger(__name__)

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


def install(on_wake: Callable[[], None], queue: Queue) -> None:
    """Daemon side (``run``, after start-up): SIGUSR1 calls ``on_wake`` (which drops the
    delivery's waits), and the daemon's pid and start time are recorded in the queue for
    ``wake_daemon``."""

    def on_usr1(signum: int, frame: FrameType | None) -> None:
        on_wake()

    signal.signal(signal.SIGUSR1, on_usr1)
    pid = os.getpid()
    try:
        queue.set_state(**{STATE_KEY: {"pid": pid, "start": process_start(pid)}})
    except QueueError as exc:  # a full disk: waking by signal is a convenience
        log.warning("could not record the daemon's pid for retry-now: %s", exc)


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
