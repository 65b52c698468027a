"""What is in flight between the dispatcher and its upload workers.

A request is a list of leased rows; it comes back as ``Sent`` (its answers, one per row,
and its round-trip time) and each row then waits as ``Done`` until its result is written.
``Gate`` keeps the requests being sent at or under the current limit: workers wait there,
one wake-up per freed slot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import Outcome
from ..remote.ingestion import Answer, Sample
from ..store.queue import Result, Row

NOT_SENT = Answer(Outcome.RETRY, "not sent: the pipeline stopped or the service is in trouble")
"""A prefetched row a worker gave back unsent; it returns to pending without an attempt."""


@dataclass
class Sent:
    """One request's rows and their answers, from a worker to the dispatcher."""

    rows: list[Row]
    answers: list[Answer]
    latency: float
    alarm: bool = False
    """The worker set the caution for this answer (a pause, or the breaker's run)."""


@dataclass
class Done:
    row: Row
    answer: Answer
    latency: float
    decided: bool = False
    result: Result | None = None
    """What the queue records (None: requeue), decided once even if the write is retried."""
    request: int | None = None
    """Which request the answer came in (the files of one count as one failure)."""


def row_sample(row: Row) -> Sample:
    extra = row.extra or {}
    parts = tuple(
        (str(p["name"]), str(p["content"]).encode("utf-8"), str(p.get("type", "application/json")))
        for p in extra.get("parts", [])
    )
    return Sample(
        path=row.path, file_name=row.file_name, category=row.category, label=row.label,
        metadata=row.metadata, allow_duplicates=row.allow_duplicates, extra_parts=parts,
        expect_size=row.size, expect_mtime_ns=row.mtime_ns,
    )  # fmt: skip


class Gate:
    """Requests in flight, never more than the current limit: workers wait here."""

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self._n = 0
        self._open = True
        self._cv = threading.Condition()

    def enter(self) -> int | None:
        """Wait for a free slot; how many are in flight now (None: stopping)."""
        with self._cv:
            while self._open and self._n >= self._limit():
                self._cv.wait()
            if not self._open:
                return None
            self._n += 1
            if self._n < self._limit():
                self._cv.notify()  # the limit grew: pass the wake-up on, one at a time
            return self._n

    def leave(self) -> None:
        with self._cv:
            self._n -= 1
            self._cv.notify()  # one slot, one waiter (not a herd of 32 threads)

    def close(self) -> None:
        with self._cv:
            self._open = False
            self._cv.notify_all()
