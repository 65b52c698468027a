"""What one answer means for its file, and what the answers together say about the service.

Per file: delivered and duplicate rows are delivered, refused ones dead, vanished ones gone,
and a transient failure backs off *that file only* (exponential backoff with full jitter,
``Retry-After`` honoured; the first ``QUICK_RETRIES`` waits stay within the base). Sporadic
errors therefore cost a retry each, not a stall.

For the whole service, three states, decided here and nowhere else:

- **outage** (a circuit breaker): ``OUTAGE_AFTER`` failures in a row with no answer that
  shows the service working (network errors, timeouts, 5xx; 429 and 503 only once the
  concurrency limit is down to one request, before that they say "busy") mean the link or
  the service is down: delivery holds, then sends one probe at a time with growing waits, so
  a day offline costs a handful of requests, not one per file. The first success closes it.
- **paused**: a refused key (401/403), a redirect (a wrong URL), or a 404/405 for every
  file (a wrong URL path: ``.../v1``, or a URL that already ends in ``/api/training/files``).
  Until one file has been accepted, a 404/405 is a suspect: its file goes back unsent and
  the next request goes alone; a second 404/405 pauses. Answers count as the same by their
  status, not their text: the service names the route it did not find, and files of two
  categories ask for two routes. Once the service has accepted a file the URL is right, and
  a 404 is that file's refusal. Nothing is dead-lettered for a config problem; a person must
  fix the key or the URL (a reload, or the pause times out and a probe tries). A pause for
  the URL has a reason that begins with ``WRONG_URL`` (``pause_cause`` tells them apart).
- **working**: everything else.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..clock import retry_delay
from ..config import IngestionConfig
from ..errors import Outcome
from ..remote.ingestion import Answer
from ..store.queue import Result, Row, State

log = logging.getLogger(__name__)

OUTAGE_AFTER = 8
"""Consecutive failed requests that open the breaker (5 % random errors reach 8 in a row
about once in 25 billion requests; an outage, at once). Requests, not files: one failed
request of 20 files is one failure, or 5 % errors would open it every few requests."""
QUICK_RETRIES = 2
"""A file's first retries all wait within ``retry_base_seconds``; the backoff doubles from
the one after. At a 5 % error rate one file in 400 fails twice in a row, and a doubled
second wait was the tail of a whole bulk upload; a file that keeps failing still backs
off, and a service that fails every request opens the breaker after ``OUTAGE_AFTER``."""
QUICK_ROUND_TRIPS = 8
QUICK_MIN_SECONDS = 0.01
"""On a link whose round trip is known, a quick retry waits within ``QUICK_ROUND_TRIPS``
of it (at least ``QUICK_MIN_SECONDS``, at most ``retry_base_seconds``): a sporadic 500 on
a link that answers in 2 ms costs its file 16 ms, not up to a quarter second, which at
5 % errors was the tail of a whole backlog's drain."""
URL_STATUSES = (404, 405)
WRONG_URL = "wrong URL"
"""How the reason of a pause for the URL begins (in the log, ``status`` and ``upload``)."""
URL_ADVICE = "[ingestion] url is the service's base, e.g. https://ingestion.edgeimpulse.com"


def pause_cause(reason: str | None) -> str | None:
    """Why uploads are paused: ``"url"`` (a wrong URL), ``"key"`` (the API key is refused),
    None (not paused)."""
    if not reason:
        return None
    return "url" if reason.startswith(WRONG_URL) else "key"


@dataclass(frozen=True)
class Verdict:
    result: Result | None
    """What the queue records (None: the row goes back to pending, no attempt counted)."""
    alone: bool = False
    """Send this row in a request of its own next time (its batch was refused as a whole)."""


def pushback(answer: Answer) -> bool:
    """The service or the link asks for fewer requests at once."""
    return answer.outcome is Outcome.RETRY and (answer.status in (429, 503) or answer.timed_out)


def failure(answer: Answer, at_floor: bool = True) -> bool:
    """An answer that shows the service not working (as opposed to refusing one file).
    A 429 or 503 while the concurrency limit can still fall is a busy service asking for
    less (the limit falls), not an outage: an overloaded server must not open the breaker."""
    if answer.outcome is not Outcome.RETRY:
        return False
    if answer.status in (429, 503):
        return at_floor
    return answer.status is None or answer.status >= 500


class FailureRun:
    """The workers' early view of the breaker: failures in a row, counted as answers
    arrive, so no worker starts another request while the dispatcher has yet to read the
    answer that opens the breaker (under load it can lag by several requests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    def add(self, answers: list[Answer], at_floor: bool) -> bool:
        """Count one request's answers; True when the run reaches ``OUTAGE_AFTER``."""
        with self._lock:
            if any(a.outcome in (Outcome.DELIVERED, Outcome.DUPLICATE, Outcome.DEAD)
                   for a in answers):  # fmt: skip
                self._count = 0
            elif any(failure(a, at_floor) for a in answers):
                self._count += 1
            return self._count >= OUTAGE_AFTER


class ServiceState:
    """The breaker, the pause and the wrong-URL suspicion; used by the dispatcher only."""

    def __init__(self, config: IngestionConfig, rng: Callable[[], float] = random.random,
                 paused: str | None = None) -> None:  # fmt: skip
        self.config = config
        self.rng = rng
        self.paused = paused
        self.hold_until = 0.0
        self.probe = False
        """One request at a time: the breaker is open, or an answer is suspect."""
        self._failures = 0
        self._failed_request: int | None = None
        self._outages = 0
        self.outages_seen = 0
        """How often the breaker opened (since start)."""
        self._url_ok = False
        """A file was accepted: the URL is right, a 404 is about one file."""
        self._suspect: tuple[int, str] | None = None
        self.newly_paused: str | None = None
        self.resumed = False
        """Set by ``verdict`` when the pause began or ended with this answer (for events)."""

    def verdict(
        self, row: Row, answer: Answer, now: float, at_floor: bool = True,
        request: int | None = None, rtt: float | None = None,
    ) -> Verdict:  # fmt: skip
        """``request`` names the request the answer came in: its files' answers count as
        one failure (None: every answer counts); ``rtt``: the link's round trip, if known."""
        a = answer
        self.newly_paused, self.resumed = None, False
        if a.outcome in (Outcome.DELIVERED, Outcome.DUPLICATE):
            self._working()
            return Verdict(Result(row.id, State.DELIVERED, None, 0.0, a.sha256, a.sample_id,
                                  bytes_sent=a.bytes_sent))  # fmt: skip
        if a.outcome is Outcome.GONE:
            return Verdict(Result(row.id, State.GONE, a.reason, 0.0, a.sha256,
                                  count_attempt=False))  # fmt: skip
        if a.outcome is Outcome.PAUSE:
            redirect = a.status is not None and 300 <= a.status < 400
            self._pause(f"{WRONG_URL}: {a.reason}" if redirect else a.reason, now)
            return Verdict(None)
        if a.outcome is Outcome.DEAD:
            return self._refused(row, a, now)
        if a.alone:
            return Verdict(None, alone=True)
        return Verdict(self._retry(row, a, now, at_floor, request, rtt))

    def _working(self) -> None:
        if self._failures >= OUTAGE_AFTER:
            log.warning("the service answers again: delivery resumes at full speed")
        self._failures = self._outages = 0
        self.probe = False
        self._url_ok, self._suspect = True, None
        if self.paused:
            log.warning("uploads resumed: the service accepts the key and the URL again")
            self.paused, self.resumed = None, True

    def _refused(self, row: Row, a: Answer, now: float) -> Verdict:
        """A refusal of one file, unless every file gets a 404/405 (a wrong URL)."""
        if a.status in URL_STATUSES and not self._url_ok:
            if self._suspect is not None:
                why = "every file gets this answer, no file was accepted"
                self._pause(f"{WRONG_URL}: {a.reason} ({why}; {URL_ADVICE}, without /v1 or"
                            " /api/...)", now)  # fmt: skip
                return Verdict(None)
            self._suspect = (row.id, a.reason)
            self.probe = True  # the next request goes alone: is the URL wrong?
            return Verdict(None)
        self._failures = 0  # the service answered: it works, this file is refused
        return Verdict(Result(row.id, State.DEAD, a.reason, 0.0, a.sha256))

    def _retry(
        self, row: Row, a: Answer, now: float, at_floor: bool, request: int | None,
        rtt: float | None = None,
    ) -> Result:  # fmt: skip
        cfg = self.config
        step = max(0, row.attempts + 1 - QUICK_RETRIES)
        base = cfg.retry_base_seconds
        if step == 0 and rtt is not None:
            base = min(base, max(QUICK_MIN_SECONDS, QUICK_ROUND_TRIPS * rtt))
        delay = retry_delay(step, base, cfg.retry_max_seconds, a.retry_after, self.rng)
        if failure(a, at_floor) and (request is None or request != self._failed_request):
            self._failed_request = request
            self._failures += 1
            if self._failures == OUTAGE_AFTER:
                self.outages_seen += 1
                log.warning("%d uploads failed in a row (%s): the service looks down; holding"
                            " delivery, one probe at a time", OUTAGE_AFTER, a.reason)  # fmt: skip
            if self._failures >= OUTAGE_AFTER and now >= self.hold_until:
                # One step per probe: uploads in flight when the link went down fail inside
                # the hold and must not escalate it.
                self._outages += 1
                hold = retry_delay(self._outages, cfg.retry_base_seconds,
                                   cfg.retry_max_seconds, a.retry_after, self.rng)  # fmt: skip
                self.hold_until = max(self.hold_until, now + hold)
                self.probe = True
        return Result(row.id, State.PENDING, a.reason, now + delay, a.sha256)

    def _pause(self, reason: str, now: float) -> None:
        """Pause (again): reported once per probe, not once per request that was in flight."""
        if self.paused != reason or now >= self.hold_until:
            self.paused = self.newly_paused = reason
        self.hold_until = max(self.hold_until, now + self.config.auth_pause_seconds)

    @property
    def outage(self) -> bool:
        """The breaker is open: failures in a row, no success since."""
        return self._failures >= OUTAGE_AFTER

    def retry_now(self) -> None:
        self.hold_until = 0.0
