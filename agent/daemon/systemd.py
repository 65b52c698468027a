"""systemd's notification protocol (sd_notify), without a dependency.

The protocol is one datagram of ``KEY=VALUE`` lines sent to the ``AF_UNIX`` socket named
by ``$NOTIFY_SOCKET`` (a leading ``@`` names the abstract namespace). The agent sends:

- ``READY=1`` once the queue is open and the sources run, and again after a reload;
- ``STATUS=...`` with the queue depth and the last delivery (``systemctl status`` shows it);
- ``WATCHDOG=1`` every half ``$WATCHDOG_USEC``, but only while the health check says the
  pipeline makes progress or is idle by design: a hung uploader stops the pings and
  systemd restarts the service (``WatchdogSec=`` in the unit);
- ``RELOADING=1`` with ``MONOTONIC_USEC=`` on SIGHUP, ``STOPPING=1`` on stop.

Without ``$NOTIFY_SOCKET`` every call is a no-op, so the same code runs in a terminal.
A failed send is logged at debug level and never raised: systemd being away must not
take the daemon down.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..events import Event
from ..loop import Loop
from ..text import one_line

log = logging.getLogger(__name__)

SEND_TIMEOUT_SECONDS = 1.0
STATUS_MIN_INTERVAL_SECONDS = 2.0
MAX_STATUS_CHARS = 400


def _address(value: str) -> str | bytes:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_seconds(environ: Mapping[str, str] = os.environ) -> float | None:
    """The watchdog timeout systemd expects pings within, if it is meant for this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000


class Notifier:
    """Sends notifications to ``$NOTIFY_SOCKET``; a no-op when it is not set."""

    def __init__(self, socket_path: str | None = None) -> None:
        path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address = _address(path) if path else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: object) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram (keys upper-cased). True when sent."""
        if self.address is None:
            return False
        text = "\n".join(f"{k.upper()}={_one_line(v)}" for k, v in fields.items())
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                    self._sock.settimeout(SEND_TIMEOUT_SECONDS)
                self._sock.sendto(text.encode("utf-8", "replace"), self.address)
            except OSError as exc:
                log.debug("sd_notify %s failed: %s", text.split("\n", 1)[0], exc)
                self._close_locked()
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send(ready=1, **({"status": status} if status else {}))

    def reloading(self) -> bool:
        return self.send(
            reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        )

    def stopping(self, status: str | None = None) -> bool:
        return self.send(stopping=1, **({"status": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.send(status=text)

    def watchdog(self) -> bool:
        return self.send(watchdog=1)

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(value: object) -> str:
    return one_line(str(value), MAX_STATUS_CHARS)


class SystemdReporter(Loop):
    """The thread that keeps systemd informed: watchdog pings and ``STATUS=`` updates.

    It wakes every half watchdog interval (when systemd asked for a watchdog) and when
    ``poke`` says something changed; with neither it sleeps. ``STATUS=`` is sent only when
    its text changed, at most every ``STATUS_MIN_INTERVAL_SECONDS``.
    """

    def __init__(
        self,
        notifier: Notifier,
        *,
        alive: Callable[[], tuple[bool, list[str]]],
        status: Callable[[], str],
        watchdog: float | None = None,
    ) -> None:
        super().__init__("systemd-notify")
        self.notifier = notifier
        self.is_alive = alive
        self.status_text = status
        self.watchdog = watchdog
        self._interval = watchdog / 2 if watchdog else None
        self._next_ping = 0.0
        self._changed = True
        self._last_status = ""
        self._last_status_at = 0.0
        self._withheld: list[str] | None = None

    def start(self) -> None:
        if not self.notifier.enabled:
            return
        if self.watchdog:
            log.info("systemd watchdog: %.0f s; pinging every %.1f s while healthy",
                     self.watchdog, self.watchdog / 2)  # fmt: skip
        super().start()

    def poke(self) -> None:
        """Something changed (an upload, a queued file): refresh ``STATUS=`` soon. A change
        already waiting to be sent wakes nothing (every file queued and sent pokes)."""
        if self._changed:
            return
        self._changed = True
        self.wake()

    def on_event(self, event: Event, info: dict[str, Any]) -> None:
        """A ``Stats`` listener: every lifecycle event may change the status line."""
        self.poke()

    def send_status(self, *, force: bool = False) -> None:
        try:
            text = self.status_text()
        except Exception:
            log.exception("building the systemd status failed")
            return
        if force or text != self._last_status:
            self._last_status = text
            self._last_status_at = time.monotonic()
            self.notifier.status(text)

    def step(self) -> float | None:
        now = time.monotonic()
        waits: list[float] = []
        if self._interval is not None:
            if now >= self._next_ping:
                self._ping()
                self._next_ping = now + self._interval
            waits.append(self._next_ping - now)
        if self._changed:
            status_due = self._last_status_at + STATUS_MIN_INTERVAL_SECONDS - now
            if status_due <= 0:
                self._changed = False
                self.send_status()
            else:  # a change came too soon after the last update: send it when allowed
                waits.append(status_due)
        return max(0.0, min(waits)) if waits else None

    def _ping(self) -> None:
        try:
            ok, reasons = self.is_alive()
        except Exception:
            log.exception("the health check failed")
            ok, reasons = False, ["the health check raised an error"]
        if ok:
            if self._withheld is not None:
                log.warning("healthy again: systemd watchdog pings resume")
                self._withheld = None
                self._changed = True  # refresh STATUS=
            self.notifier.watchdog()
        elif reasons != self._withheld:
            log.error("not healthy (%s): withholding the systemd watchdog ping; systemd will"
                      " restart the service if this lasts", "; ".join(reasons))  # fmt: skip
            self._withheld = reasons
            self._changed = True
