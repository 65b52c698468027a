"""Time as a dependency: backoff and schedules take a clock, so tests need not sleep."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Seconds since the epoch, like ``time.time``."""

system_clock: Clock = time.time


def backoff_delay(
    attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)).

    Full jitter spreads a fleet's retries after an outage instead of having every device
    knock at the same instant ("thundering herd").
    """
    ceiling = min(cap, base * (2.0 ** min(attempt, 62)))
    return rng() * ceiling


RETRY_AFTER_CAP_SECONDS = 3600.0
"""The longest a server's ``Retry-After`` makes the agent wait (``Retry-After: 999999``
must not park a file for eleven days)."""


def retry_delay(
    attempt: int, base: float, cap: float, retry_after: float | None,
    rng: Callable[[], float] = random.random,
) -> float:  # fmt: skip
    """The wait before the next attempt: the server's ``Retry-After`` wins, within 1 hour."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), RETRY_AFTER_CAP_SECONDS)
    return backoff_delay(attempt, base, cap, rng)
