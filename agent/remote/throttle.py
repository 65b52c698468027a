"""What paces request bodies: a bandwidth cap shared by every upload of a client, and the
progress tick that proves a long upload is not hung.

A backlog after a week offline must not take a site's whole uplink. Each body chunk waits
for its turn on one schedule for all workers (the generic cell rate algorithm: a "next
free" instant that every chunk moves on by ``len / rate``), so the sum of all uploads
stays at the cap whatever the concurrency. ``BURST_SECONDS`` of credit lets a chunk go
at once after a quiet spell, the way a token bucket does, and absorbs a worker that a busy
CPU wakes late; over a minute the rate is the cap to within that credit. Answers are not
counted: they are small and not ours to pace.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

BURST_SECONDS = 0.5
PIECE_BYTES = 16 * 1024
"""Chunks are paced in pieces of at most this size: a 1 MiB body of small files must not
go as one burst of ten seconds' worth of a 100 kB/s cap."""


class Throttle:
    """Paces bytes to ``rate`` per second. Thread-safe; the clock and wait are injectable."""

    def __init__(
        self, rate: int, *, clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], object] | None = None,
    ) -> None:  # fmt: skip
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._clock = clock
        self._closed = threading.Event()
        self._wait = wait or self._closed.wait
        self._lock = threading.Lock()
        self._next = 0.0
        self._mine = threading.local()

    def take(self, n: int) -> None:
        """Wait until ``n`` more bytes may go."""
        with self._lock:
            now = self._clock()
            start = max(self._next, now - BURST_SECONDS)
            self._next = start + n / self.rate
            delay = start - now
        if delay > 0 and not self._closed.is_set():
            self._mine.waited = getattr(self._mine, "waited", 0.0) + delay
            self._wait(delay)

    def waited(self) -> float:
        """Seconds this thread waited for the cap since it last asked: a request's round
        trip without them is what the link did (the adaptive limit must not read the cap's
        pacing as a slow service)."""
        seconds = getattr(self._mine, "waited", 0.0)
        self._mine.waited = 0.0
        return float(seconds)

    def close(self) -> None:
        """Stop pacing (the process is stopping: let what is in flight finish)."""
        self._closed.set()


PROGRESS_MIN_INTERVAL_SECONDS = 0.5


def progress_ticker(on_progress: Callable[[], None]) -> Callable[[], None]:
    """``on_progress``, called at most every ``PROGRESS_MIN_INTERVAL_SECONDS`` however
    often the returned tick is (once per body piece, from any thread)."""
    lock = threading.Lock()
    last = [0.0]

    def tick() -> None:
        now = time.monotonic()
        with lock:
            if now - last[0] < PROGRESS_MIN_INTERVAL_SECONDS:
                return
            last[0] = now
        on_progress()

    return tick
