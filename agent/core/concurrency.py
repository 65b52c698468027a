"""How many upload requests may be in flight: fixed, or adapted to the link (AIMD).

A fixed number cannot suit every link: 4 requests hide none of a 200 ms round trip, and
20 overwhelm a service that starts answering 503 above 6. With ``concurrency = "auto"``
the limit follows the link, the way TCP finds its window (the model is Vector's adaptive
request concurrency and Netflix's concurrency-limits):

- the time is cut into windows of about one round trip;
- the first back-pressure answer of a window (429, 503, a timeout) cuts the limit at once
  to ``DECREASE_RATIO`` of itself (and by one request at least); so does a window whose
  mean round-trip time rose clearly above the link's floor (the least window mean of the
  last ``FLOOR_WINDOWS`` windows, times ``1 + RISE_TOLERANCE``, plus
  ``RISE_SLACK_SECONDS``), though not below ``RISE_FLOOR``. The first pushback of all
  halves it (``SLOW_START_DECREASE``, as TCP leaves slow start). Comparing with the
  floor, not with a running mean, matters: a running mean follows a slow climb and never
  sees the queue it builds. The floor forgets old windows, so a link whose latency really
  grew is relearned within ``FLOOR_WINDOWS`` round trips;
- a window in which the limit was used (requests in flight reached it), latency stayed
  level and an answer came from a request sent once the limit was reached raises it by
  one (the first answers after a rise are of requests sent below it: they say nothing);
  until the first cut it doubles instead ("slow start", as TCP does), at once on that
  answer rather than at the window's end, so a 200 ms link reaches 32 requests in flight
  in two round trips, not in six seconds.
  Just below the level refused last it rises only every ``CEILING_WINDOWS`` windows (as
  CUBIC lingers near its last loss), so an overloaded service sees few refused probes.

So on a link with latency but spare capacity the limit climbs until the round trip starts
to grow (the service or the CPU is saturated), and on an overloaded service it settles just
below the level where it pushes back. The clock is injected; nothing here sleeps.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

DECREASE_RATIO = 0.9
SLOW_START_DECREASE = 0.5
"""The cut of the first pushback: slow start doubles the limit each round trip, so the
level refused first can be up to twice what the service takes; half of it is the last
level that worked, as TCP does. Cut by a tenth, a service that takes 6 saw 16 in flight
for nine round trips (a quarter of all requests refused)."""
EWMA_ALPHA = 0.4
"""Weight of the newest window in the reported round-trip time."""
RISE_TOLERANCE = 0.5
RISE_SLACK_SECONDS = 0.002
"""A window's mean may exceed the floor by half of it, and by 2 ms (round trips of a
millisecond on loopback jitter by more than themselves), before it counts as a rise."""
FLOOR_WINDOWS = 100
INITIAL_LIMIT = 8
"""Where "auto" starts, as TCP starts with ten segments (RFC 6928), not one: a browser
opens six connections to a host, and a service that takes fewer refuses two or three
requests once (those files back off alone; the first pushback halves the limit). From 8,
a 200 ms link has 32 in flight after two round trips, not three."""
RISE_FLOOR = 4
"""A rising round trip alone cuts no lower: with a few requests in flight it is as often
the agent's own CPU as the service (on a fast link each answer waits for the interpreter
lock), and one request at a time then halves what a CPU-bound agent sends. A service in
real trouble says so (429, 503, timeouts), and those cut down to one."""
PUSHBACK_ANSWERS = 20
PUSHBACK_SHARE = 3
"""Out of slow start, a pushback cuts only when it is not alone: at least this many of
the last ``PUSHBACK_ANSWERS`` answers were pushed back (15 %). A service over its capacity
refuses every request above it (a quarter at 8 against 6); one with a sporadic 503 in 40
is not asking for less, and cutting on each drove the limit to one request at a time
(a fifth of the loopback rate lost at 5 % errors, 2.5 % of them 503)."""
CEILING_WINDOWS = 10
"""Full windows without trouble before the limit probes the level refused last again."""
MIN_WINDOW_SECONDS = 0.05
MAX_WINDOW_SECONDS = 5.0


class Concurrency:
    """The limit on requests in flight. Thread-safe."""

    def __init__(
        self, fixed: int | None, maximum: int, *, initial: int = INITIAL_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.fixed = fixed
        self.maximum = fixed if fixed is not None else maximum
        self._limit = float(fixed if fixed is not None else min(max(1, initial), maximum))
        self._clock = clock
        self._lock = threading.Lock()
        self._mean: float | None = None
        """The running mean round-trip time (an EWMA of the windows' means), for status."""
        self._floors: deque[float] = deque(maxlen=FLOOR_WINDOWS)
        self._window_start = clock()
        self._window_sum = 0.0
        self._window_count = 0
        self._window_full = False
        self._window_judged = False
        """An answer in this window came from a request sent once the current limit was
        reached: only such an answer says how the service takes that many in flight."""
        self._window_pushback = False
        self._recent: deque[bool] = deque(maxlen=PUSHBACK_ANSWERS)
        """Whether each of the last answers was pushed back."""
        self._slow_start = True
        self._ceiling: int | None = None
        """The level refused last (pushback or a rising round trip)."""
        self._calm = 0
        self._cut_at = -math.inf
        self._full_since: float | None = None
        """When requests in flight first reached the current limit (None: not yet)."""

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    @property
    def adaptive(self) -> bool:
        return self.fixed is None

    @property
    def at_floor(self) -> bool:
        """Nothing left to cut: a fixed limit, or one request at a time. Only then does a
        "slower, please" (429, 503) say the service is down rather than busy."""
        return self.fixed is not None or self._limit <= 1.0

    @property
    def rtt(self) -> float | None:
        """The running mean round-trip time in seconds (None before the first answer; the
        open window's mean until a window has closed, so two quick uploads show one)."""
        with self._lock:  # read by /metrics and status while workers close windows
            if self._mean is None and self._window_count and not self._window_pushback:
                return self._window_sum / self._window_count
            return self._mean

    def started(self, in_flight: int) -> None:
        """A request went out; ``in_flight`` counts it."""
        if in_flight >= self.limit:
            with self._lock:
                self._window_full = True
                if self._full_since is None:
                    self._full_since = self._clock()

    def finished(self, rtt: float | None, *, pushback: bool = False) -> None:
        """A request came back after ``rtt`` seconds (None: no useful timing, e.g. a
        connection refused at once); ``pushback``: the service or the link said "slower"."""
        with self._lock:
            now = self._clock()
            if rtt is not None:
                self._window_sum += rtt
                self._window_count += 1
                full = self._full_since
                self._window_judged |= full is not None and now - rtt >= full
            self._recent.append(pushback)
            pushback = pushback and (self._slow_start or sum(self._recent) >= PUSHBACK_SHARE)
            if pushback and (rtt is None or now - rtt >= self._cut_at):
                # At once (a fast 503 frees its slot for another 503 at once), and once per
                # level: only a request sent after the last cut says the new level is too high.
                self._cut(SLOW_START_DECREASE if self._slow_start else DECREASE_RATIO)
                self._cut_at = now
            self._window_pushback = self._window_pushback or pushback
            window = min(MAX_WINDOW_SECONDS, max(MIN_WINDOW_SECONDS, self._mean or 0.0))
            elapsed = now - self._window_start
            # a used window waits (up to twice its length) for the answer that judges the
            # limit: closed without it, every doubling of slow start would take two
            waiting = self._window_full and not self._window_judged and elapsed < 2 * window
            # in slow start the answer that judges the limit closes its window at once: the
            # window opened before the first answers is a round trip long, and waiting for
            # its end would cost slow start a round trip per doubling
            judged = self._slow_start and self._window_full and self._window_judged
            if (elapsed >= window and not waiting) or judged:
                self._close_window(now)

    def _close_window(self, now: float) -> None:
        mean = self._window_sum / self._window_count if self._window_count else None
        if self.fixed is not None or self._window_pushback:
            pass  # fixed: only the round trip is followed; pushback: already cut
        elif mean is not None and self._rising(mean):
            if self._limit > RISE_FLOOR:
                self._cut(floor=RISE_FLOOR)
        elif self._window_full and self._window_judged and self._limit < self.maximum:
            self._grow()  # only answers of requests sent at this limit say it is safe
        if mean is not None and not self._window_pushback:
            self._mean = mean if self._mean is None else self._mean + EWMA_ALPHA * (
                mean - self._mean)  # fmt: skip
            self._floors.append(mean)
        self._window_start = now
        self._window_sum, self._window_count = 0.0, 0
        self._window_full = self._window_pushback = self._window_judged = False

    def _cut(self, ratio: float = DECREASE_RATIO, floor: float = 1.0) -> None:
        """Down by ``ratio``, and by at least one request (5.9 * 0.9 is still 5 requests
        in flight, the level that was just refused), to ``floor`` at the lowest."""
        if self.fixed is not None:
            return
        self._ceiling = math.floor(self._limit)
        self._limit = max(floor, min(self._limit * ratio, self._ceiling - 1.0))
        self._slow_start = False
        self._calm = 0
        self._full_since = None

    def _grow(self) -> None:
        """Double in slow start, else one more; just below the level that was refused
        last, one more only every ``CEILING_WINDOWS`` windows (each probe of it costs a
        few refused requests)."""
        if self._slow_start:
            self._limit = min(float(self.maximum), self._limit * 2)
            self._full_since = None
            return
        nearing = self._ceiling is not None and math.floor(self._limit) + 1 >= self._ceiling
        self._calm += 1
        if nearing and self._calm < CEILING_WINDOWS:
            return
        self._calm = 0
        self._limit = min(float(self.maximum), math.floor(self._limit) + 1.0)
        self._full_since = None

    def _rising(self, mean: float) -> bool:
        if not self._floors:
            return False
        return mean > min(self._floors) * (1 + RISE_TOLERANCE) + RISE_SLACK_SECONDS
