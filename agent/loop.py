"""One pattern for every long-lived thread of the agent (huey's ``BaseProcess`` is the model).

A ``Loop`` is a named daemon thread that runs ``step`` until it is stopped::

    start() ─► initialize() ─► step() ─► wait ─► step() ─► ... ─► finish()
                                 ▲         │
                                 └ wake() ─┘        stop(): ends the wait, joins the thread

``step`` returns how long to wait before the next step (``None``: until ``wake``), so an
idle loop sleeps on an event instead of polling. A step that raises is logged with its
traceback and tried again after ``error_delay`` seconds: one bad file or one bug must not
end a thread the daemon's guarantee depends on. ``wake`` may be called from any thread
(and from a signal handler); a wake that arrives during a step makes the next wait return
at once, so no wake is ever lost.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Loop:
    """Subclasses implement ``step`` and may override the other hooks."""

    error_delay = 5.0
    """Seconds to wait after a step raised."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.steps_started = 0
        self.steps_done = 0
        """Steps begun and ended: a step that began after a change saw it (tests and
        health checks wait on these instead of sleeping)."""

    # -- hooks (run on the loop's thread, except ``interrupt``) ---------------------------
    def initialize(self) -> None:
        """Once, before the first step."""

    def step(self) -> float | None:
        """One round of work; the seconds until the next round (``None``: until woken)."""
        raise NotImplementedError

    def finish(self) -> None:
        """Once, after the last step (drain what is in flight, close what was opened)."""

    def running(self) -> bool:
        """Whether to run another step; a loop that must drain first overrides it."""
        return not self._stop.is_set()

    def interrupt(self) -> None:
        """Make a blocked step or wait return (from ``stop``, on the caller's thread)."""
        self._wake.set()

    # -- control -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the loop to end and wait up to ``timeout`` seconds for its thread."""
        self._stop.set()
        self.interrupt()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def alive(self) -> bool:
        """The thread runs (for health checks: false before ``start`` and after the end)."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            self.initialize()
            while self.running():
                self._wake.clear()
                self.steps_started += 1
                try:
                    wait = self.step()
                except Exception:
                    log.exception("%s: a step failed; trying again in %.0f s", self.name,
                                  self.error_delay)  # fmt: skip
                    wait = self.error_delay
                self.steps_done += 1
                if not self.running():
                    break
                if wait is None or wait > 0:
                    self._wake.wait(wait)
        finally:
            try:
                self.finish()
            except Exception:
                log.exception("%s: finishing failed", self.name)
