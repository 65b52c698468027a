"""Fakes for the seams the package offers (its clock); they live here, never in the package."""

from __future__ import annotations

import threading


class FakeClock:
    """A settable clock for unit tests: ``advance`` moves time without sleeping."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
