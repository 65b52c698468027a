"""A bandwidth cap on request bodies, shared by every upload of a client.

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
from collections.abc import Callable, Iterator

import httpx

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


class _PacedStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, throttle: Throttle) -> None:
        self.inner = inner
        self.throttle = throttle

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            for at in range(0, len(chunk), PIECE_BYTES):
                piece = chunk[at : at + PIECE_BYTES]
                self.throttle.take(len(piece))
                yield piece

    def close(self) -> None:
        self.inner.close()


def pace_bodies(client: httpx.Client, throttle: Throttle) -> None:
    """Every request body the client sends waits for ``throttle`` (a request hook, so it
    works with any transport, proxy or not)."""

    def hook(request: httpx.Request) -> None:
        if isinstance(request.stream, httpx.SyncByteStream):
            request.stream = _PacedStream(request.stream, throttle)

    hooks = client.event_hooks
    client.event_hooks = {**hooks, "request": [*hooks["request"], hook]}
