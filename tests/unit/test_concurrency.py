"""The adaptive limit on requests in flight, driven by a simulated link on an injected clock.

Each round sends ``limit`` requests at once; a link model says how long each took and
whether it was pushed back. Nothing sleeps: the clock moves by the round trip.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import pytest

from edge_uploader.core.concurrency import INITIAL_LIMIT, RISE_FLOOR, Concurrency
from tests.fakes import FakeClock

Link = Callable[[int], tuple[float, int]]
"""limit -> (round-trip seconds, how many of the limit's requests were pushed back)."""


def drive(c: Concurrency, clock: FakeClock, link: Link, rounds: int) -> tuple[list[int], int, int]:
    """Run ``rounds`` rounds; the limits seen, requests sent and requests pushed back."""
    limits, sent, refused = [], 0, 0
    for _ in range(rounds):
        n = c.limit
        for i in range(n):
            c.started(i + 1)
        rtt, pushed = link(n)
        clock.advance(rtt)
        for i in range(n):
            c.finished(rtt, pushback=i < pushed)
        limits.append(c.limit)
        sent, refused = sent + n, refused + pushed
    return limits, sent, refused


def test_the_limit_rises_to_hide_latency(clock: FakeClock) -> None:
    c = Concurrency(None, 32, clock=clock)
    limits, _, _ = drive(c, clock, lambda n: (0.2, 0), rounds=12)
    assert limits[-1] == 32  # a 200 ms link with spare capacity: all 32 in flight
    assert limits.index(32) <= 6  # slow start: doubling, not +1 per round trip
    assert c.rtt == pytest.approx(0.2)


def test_the_limit_falls_on_pushback(clock: FakeClock) -> None:
    c = Concurrency(None, 32, clock=clock)
    drive(c, clock, lambda n: (0.05, 0), rounds=10)
    assert c.limit == 32
    limits, _, _ = drive(c, clock, lambda n: (0.05, n), rounds=30)  # every request 503
    assert limits == sorted(limits, reverse=True)
    assert limits[-1] <= 8


def test_an_overloaded_service_is_met_just_below_its_capacity(clock: FakeClock) -> None:
    """A service that answers 503 above 6 requests in flight."""
    c = Concurrency(None, 32, clock=clock)
    limits, sent, refused = drive(c, clock, lambda n: (0.05, max(0, n - 6)), rounds=200)
    settled = limits[50:]
    assert max(settled) <= 8 and min(settled) >= 4
    assert refused / sent < 0.15


def pipelined(c: Concurrency, clock: FakeClock, capacity: int, rtt: float, n: int) -> int:
    """Send ``n`` requests as a worker pool does, a new one as each answer arrives, each
    taking 2 ms to send; a request sent while ``capacity`` are in progress is refused after
    the round trip (so the answers that say "too many" come a round trip late, after those
    of the requests sent before them, as on a real link). Requests refused."""
    out: list[tuple[float, int, bool]] = []  # (answered at, order, refused)
    sent = refused = 0
    while sent < n or out:
        while len(out) < c.limit and sent < n:
            clock.advance(0.002)
            c.started(len(out) + 1)
            heapq.heappush(out, (clock() + rtt, sent, len(out) >= capacity))
            sent += 1
        at, _, pushed = heapq.heappop(out)
        clock.advance(max(0.0, at - clock()))
        c.finished(rtt, pushback=pushed)
        refused += pushed
    return refused


def test_leaving_slow_start_into_an_overloaded_service_refuses_few(clock: FakeClock) -> None:
    """The limit doubles only on answers of requests sent once it was reached (the first
    answers after a doubling are of requests the service could take), and the first cut
    halves it: otherwise it doubled to 16 against a service that takes 6, and cut by a
    tenth per round trip, refused about half of the first 150 requests."""
    c = Concurrency(None, 32, clock=clock)
    refused = pipelined(c, clock, capacity=6, rtt=0.05, n=150)
    assert refused / 150 < 0.10
    assert 4 <= c.limit <= 7


def test_slow_start_doubles_once_per_round_trip(clock: FakeClock) -> None:
    """Sending takes time, so the limit is reached a little after it rose, and the answer
    that judges it comes a round trip later: the window waits for it rather than closing
    without a verdict (which made every doubling take two round trips)."""
    c = Concurrency(None, 32, initial=4, clock=clock)
    start = clock()
    pipelined(c, clock, capacity=1000, rtt=0.2, n=4 + 8 + 16 + 32 + 32)
    assert c.limit == 32
    assert clock() - start < 7 * 0.2  # 5 round trips and the sending; two per step: 8


def test_slow_start_doubles_on_the_answer_that_judges_the_limit(clock: FakeClock) -> None:
    """The first window opens when the agent starts, before its first request: waiting for
    that window's end after the judging answer cost one round trip (32 in flight after four
    round trips of a 200 ms link instead of three)."""
    assert climb_to_32(Concurrency(None, 32, initial=4, clock=clock), clock) < 3.5 * 0.2
    # 4 -> 8 -> 16 -> 32: three round trips; from where "auto" starts (8), two
    assert INITIAL_LIMIT == Concurrency(None, 32).limit == 8
    assert climb_to_32(Concurrency(None, 32, clock=clock), clock) < 2.5 * 0.2


def climb_to_32(c: Concurrency, clock: FakeClock) -> float:
    """Seconds from the first request to 32 in flight on a 200 ms link with room for more."""
    clock.advance(0.3)  # start-up: the first request leaves a while after the limit is made
    start, out, sent = clock(), list[tuple[float, int]](), 0
    while c.limit < 32:
        while len(out) < c.limit:
            clock.advance(0.0005)
            c.started(len(out) + 1)
            heapq.heappush(out, (clock() + 0.2, sent))
            sent += 1
        at, _ = heapq.heappop(out)
        clock.advance(max(0.0, at - clock()))
        c.finished(0.2)
    return clock() - start


def test_rising_round_trips_stop_the_climb(clock: FakeClock) -> None:
    """A service that queues above 8 in flight: no 503, but the round trip grows."""
    c = Concurrency(None, 32, clock=clock)
    limits, _, refused = drive(c, clock, lambda n: (0.02 * max(1.0, n / 8), 0), rounds=90)
    assert refused == 0
    assert max(limits[20:]) <= 16  # the round trip may grow by half (12 in flight), not double


def test_a_rising_round_trip_alone_keeps_a_few_requests_in_flight(clock: FakeClock) -> None:
    """A CPU-bound agent on a loopback link: each answer waits for the interpreter, so the
    round trip jitters by more than itself (one quick window sets a floor the others all
    "rise" above) and says nothing about the service."""
    c = Concurrency(None, 32, clock=clock)
    rounds = iter(range(10**6))

    def jittery(n: int) -> tuple[float, int]:
        quick = next(rounds) % 600 < 150  # 75 ms of 0.5 ms round trips: a window's worth
        return (0.0005 if quick else 0.003 + 0.0005 * n), 0

    limits, _, _ = drive(c, clock, jittery, rounds=3000)
    assert min(limits[200:]) == RISE_FLOOR
    drive(c, clock, lambda n: (0.001 * n, n), rounds=30)  # and now the service refuses
    assert c.limit == 1


def test_the_limit_rises_only_when_it_was_used(clock: FakeClock) -> None:
    c = Concurrency(None, 32, clock=clock)
    for _ in range(50):  # one request at a time: the link never saw the limit
        c.started(1)
        clock.advance(0.1)
        c.finished(0.1)
    assert c.limit == INITIAL_LIMIT


def test_a_fixed_limit_stays_but_the_round_trip_is_measured(clock: FakeClock) -> None:
    c = Concurrency(4, 32, clock=clock)
    limits, _, _ = drive(c, clock, lambda n: (0.1, n // 2), rounds=20)
    assert set(limits) == {4}
    assert not c.adaptive and c.maximum == 4
    assert c.rtt is None  # every window saw pushback: its times say nothing about the link
    drive(c, clock, lambda n: (0.1, 0), rounds=3)
    assert c.rtt == pytest.approx(0.1)


def test_answers_without_timing_do_not_move_the_round_trip(clock: FakeClock) -> None:
    c = Concurrency(None, 32, clock=clock)
    drive(c, clock, lambda n: (0.05, 0), rounds=5)
    before = c.rtt
    for _ in range(20):  # connection refused at once: no timing
        c.started(1)
        clock.advance(0.06)
        c.finished(None)
    assert c.rtt == pytest.approx(before)


def test_a_sporadic_503_does_not_drive_the_limit_down(clock: FakeClock) -> None:
    """One answer in 40 is a 503 from a service with room to spare (a 5 % error rate,
    half of it 503): the limit keeps requests in flight instead of falling to one, as a
    cut on every pushback made it. Pushback that is not alone still cuts."""
    c = Concurrency(None, 32, clock=clock)
    answers = 0

    def sporadic(n: int) -> tuple[float, int]:
        nonlocal answers
        answers += n
        return 0.05, 1 if answers % 40 < n else 0

    limits, _, _ = drive(c, clock, sporadic, rounds=200)
    assert min(limits[20:]) >= INITIAL_LIMIT // 2
    limits, _, _ = drive(c, clock, lambda n: (0.05, max(1, n // 4)), rounds=30)  # a quarter
    assert limits[-1] < INITIAL_LIMIT // 2
