"""When delivery may send on a metered link: upload windows and the daily data budget.

The dispatcher asks ``Meter.hold`` before it leases and ``Meter.fit`` for each request it
is about to queue; it tells ``Meter.settled`` what went out. Outside every window, or with
the day's budget spent, nothing is leased and nothing queued is started: capture and
queueing go on, and the dispatcher sleeps until the window opens or the day ends (one
timer, no polling). ``retry-now`` overrides the windows until the next stop, never the
budget (that is money). The bytes sent per day live in the queue (``link_usage``), so a
restart does not reset the budget.

The budget is spent for the day when the bytes sent reach it, or when the next request
does not fit in what is left (a 2 kB remainder does not send a 5 MB video). A file larger
than the whole budget would never fit: it goes alone as the first request of a day (the
budget is then spent for that day), and the log says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from ..config.link import LinkConfig, local_day, next_midnight, window_state
from ..store.queue import Queue, Row
from ..store.status import BUDGET_FULL_KEY, OVERRIDE_KEY

__all__ = ["BUDGET_FULL_KEY", "OVERRIDE_KEY", "Hold", "Meter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hold:
    until: float
    reason: str
    window: bool
    """Outside the windows (what waits for a worker must not start either); else the
    budget (the requests already reserved in it still go)."""


class Meter:
    """Used by the dispatcher only (not thread-safe)."""

    def __init__(self, link: LinkConfig, queue: Queue, tz: tzinfo | None = None) -> None:
        self.link = link
        self.queue = queue
        self.tz = tz
        self.override = False
        """``retry-now``: send outside the windows until the next stop."""
        self._day = ""
        self._used = 0
        self._reserved = 0
        """Bytes of files in requests out now (counted when their answers are settled)."""
        self._held: str | None = None
        self.full = (
            str(queue.get_state().get(BUDGET_FULL_KEY) or "") if link.max_bytes_per_day else ""
        )
        """The local day on which the next request no longer fitted in the budget: the
        budget is spent for that day (what is left is too little for what waits)."""

    @property
    def active(self) -> bool:
        return bool(self.link.upload_windows or self.link.max_bytes_per_day)

    def hold(self, now: float) -> Hold | None:
        """Why nothing may be sent now and until when; None: sending is allowed."""
        held = self._hold(now)
        reason = held.reason if held else None
        if reason != self._held:
            if held:
                log.info("uploads wait: %s", reason)
            elif self._held:
                log.info("uploads may go again")
            self._held = reason
        return held

    def _hold(self, now: float) -> Hold | None:
        if self.link.upload_windows and not self.override:
            w = window_state(self.link.upload_windows, now, self.tz)
            if not w.open and w.next_open_at is not None:
                return Hold(w.next_open_at, "outside the upload windows (next opens at"
                            f" {self._clock_text(w.next_open_at)})", window=True)  # fmt: skip
        budget = self.link.max_bytes_per_day
        if budget and (self.used(now) + self._reserved >= budget or self.full == self._day):
            midnight = next_midnight(now, self.tz)
            return Hold(midnight, f"the daily data budget of {budget} bytes is spent"
                        f" (it renews at {self._clock_text(midnight)})", window=False)  # fmt: skip
        return None

    def closes_at(self, now: float) -> float | None:
        """When the open window ends (the dispatcher wakes then to stop sending)."""
        if not self.link.upload_windows or self.override:
            return None
        return window_state(self.link.upload_windows, now, self.tz).closes_at

    def used(self, now: float) -> int:
        day = local_day(now, self.tz)
        if day != self._day:
            self._day, self._used = day, self.queue.bytes_sent_on(day)
        return self._used

    def fit(self, grouped: Sequence[list[Row]], now: float) -> int:
        """How many of ``grouped`` (in order) fit in what is left of today's budget; they
        are reserved. The others go back to the queue."""
        budget = self.link.max_bytes_per_day
        if not budget:
            return len(grouped)  # nothing to reserve against
        left = budget - self.used(now) - self._reserved
        for n, request in enumerate(grouped):
            size = sum(r.size for r in request)
            if size > left:
                self.full = self._day
                if size > budget and self._used == 0 and self._reserved == 0 and n == 0:
                    log.warning("%s is larger than the whole daily data budget (%d bytes):"
                                " it goes as today's only upload",
                                request[0].path, budget)  # fmt: skip
                    self._reserved += size
                    return 1
                return n
            left -= size
            self._reserved += size
        return len(grouped)

    @property
    def day(self) -> str:
        """The local day being counted."""
        return self._day

    def settled(self, reserved: int, sent: int, now: float) -> None:
        """A request came back: ``reserved`` bytes are no longer out, ``sent`` of them
        went on the wire (the dispatcher adds those to the queue's count)."""
        self._reserved = max(0, self._reserved - reserved)
        self.used(now)
        self._used += sent

    def _clock_text(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self.tz).strftime("%Y-%m-%d %H:%M")
