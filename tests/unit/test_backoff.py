"""Backoff: exponential with full jitter, capped, Retry-After first; an injected rng."""

from __future__ import annotations

import random

import pytest

from edge_uploader.clock import backoff_delay, retry_delay
from tests.fakes import FakeClock


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 1.0), (1, 2.0), (2, 4.0), (5, 32.0), (8, 256.0), (9, 300.0), (60, 300.0), (10_000, 300.0)],
)
def test_ceiling_doubles_then_caps(attempt: int, ceiling: float) -> None:
    assert backoff_delay(attempt, 1.0, 300.0, lambda: 0.5) == ceiling / 2
    assert backoff_delay(attempt, 1.0, 300.0, lambda: 0.0) == 0.0
    assert backoff_delay(attempt, 1.0, 300.0, lambda: 0.999999) == pytest.approx(ceiling * 0.999999)


def test_base_scales() -> None:
    assert backoff_delay(3, 0.25, 300.0, lambda: 1.0) == 2.0


def test_full_jitter_spreads_over_the_whole_range() -> None:
    rng = random.Random(1234)
    delays = [backoff_delay(4, 1.0, 300.0, rng.random) for _ in range(5000)]
    assert all(0.0 <= d < 16.0 for d in delays)
    assert min(delays) < 0.1  # full jitter: as low as zero...
    assert max(delays) > 15.9  # ...and up to the ceiling
    assert 7.5 < sum(delays) / len(delays) < 8.5  # uniform: mean is half the ceiling


def test_capped_delays_never_exceed_the_cap() -> None:
    rng = random.Random(99)
    assert (
        max(backoff_delay(a, 1.0, 30.0, rng.random) for a in range(200) for _ in range(20)) < 30.0
    )


def test_retry_after_wins() -> None:
    assert retry_delay(1, 1.0, 300.0, 42.0, lambda: 0.5) == 42.0
    assert retry_delay(20, 1.0, 300.0, 0.0, lambda: 0.5) == 0.0
    # the server's hint may exceed our cap (it knows best), within an hour
    assert retry_delay(1, 1.0, 300.0, 1200.0, lambda: 0.5) == 1200.0
    assert retry_delay(1, 1.0, 300.0, 86400.0, lambda: 0.5) == 3600.0
    assert retry_delay(1, 1.0, 300.0, -5.0, lambda: 0.5) == 0.0


def test_without_retry_after_it_is_backoff() -> None:
    assert retry_delay(3, 1.0, 300.0, None, lambda: 0.25) == 2.0


def test_fake_clock() -> None:
    clock = FakeClock(100.0)
    assert clock() == 100.0
    clock.advance(2.5)
    assert clock() == 102.5
