"""What an ``upload`` run knows while it runs (``Tracker``) and how it ended (``Summary``).

Shared by the run (``bulk.run``), which writes them, and the display (``bulk.progress``),
which reads them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..store.queue import Queue


@dataclass
class Tracker:
    """What the run knows: the batch's totals from the queue, and this run's events.

    Written by the pipeline's dispatcher (events), the feeder and the progress thread;
    every access holds the lock.
    """

    batch: str
    started: float = field(default_factory=time.monotonic)
    totals: dict[str, tuple[int, int]] = field(default_factory=dict)
    scanning: bool = True
    sent_files: int = 0
    sent_bytes: int = 0
    duplicates: int = 0
    dead: int = 0
    retries: int = 0
    finals: int = 0
    skipped: int = 0
    skipped_examples: list[tuple[str, str]] = field(default_factory=list)
    last_error: str | None = None
    paused: str | None = None
    trouble_since: float | None = None
    last_change: float = field(default_factory=time.monotonic)
    """When the last event arrived or the batch's counts last moved."""
    wake_at_finals: int = 0
    """The waiting command is woken when ``finals`` reaches this (not on every file)."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    changed: threading.Event = field(default_factory=threading.Event, repr=False)

    def refresh(self, queue: Queue) -> dict[str, tuple[int, int]]:
        totals = queue.batch_totals(self.batch)
        with self.lock:
            before = self._final_count(self.totals) if self.totals else None
            self.totals = totals
            if before is not None and self._final_count(totals) > before:
                self.trouble_since = None  # someone (maybe the daemon) delivers: reachable
                self.last_change = time.monotonic()
        return totals

    @staticmethod
    def _final_count(totals: dict[str, tuple[int, int]]) -> int:
        return sum(totals[s][0] for s in ("delivered", "dead", "gone"))

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            totals = dict(self.totals)
            return {
                "totals": totals,
                "scanning": self.scanning,
                "sent_files": self.sent_files,
                "sent_bytes": self.sent_bytes,
                "retries": self.retries,
                "skipped": self.skipped,
                "last_error": self.last_error,
                "paused": self.paused,
                "trouble_since": self.trouble_since,
                "elapsed": time.monotonic() - self.started,
            }


EXIT_AUTH_REFUSED = 77
"""sysexits.h EX_NOPERM: the service refused the API key (authentication refused)."""
EXIT_WRONG_URL = 76
"""sysexits.h EX_PROTOCOL: the service has no such route (the URL is wrong)."""
OUTCOME_EXIT = {"interrupted": 130, "refused": EXIT_AUTH_REFUSED, "wrong-url": EXIT_WRONG_URL}


@dataclass(frozen=True)
class Summary:
    """How a run ended, for the final report and the exit status."""

    batch: str
    outcome: str
    """done, gave-up (service unreachable), refused (API key), wrong-url, budget,
    interrupted."""
    totals: dict[str, tuple[int, int]]
    sent_files: int
    sent_bytes: int
    duplicates: int
    skipped: int
    skipped_examples: list[tuple[str, str]]
    elapsed: float
    last_error: str | None
    dead_examples: list[tuple[int, str, str]]

    @property
    def undelivered(self) -> int:
        t = self.totals
        return sum(t[s][0] for s in ("pending", "uploading", "dead", "held", "gone"))

    @property
    def exit_code(self) -> int:
        """0 all delivered; 77 the API key was refused; 76 the URL is wrong; 130 interrupted;
        1 anything else left undelivered (``upload --help`` lists them)."""
        if self.outcome in OUTCOME_EXIT:
            return OUTCOME_EXIT[self.outcome]
        return 0 if self.outcome == "done" and not self.undelivered and not self.skipped else 1
