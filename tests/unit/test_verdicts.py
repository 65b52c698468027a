"""What answers mean for their file and for the service: sporadic errors back off one file,
an outage opens the breaker, a wrong key or URL pauses. Pure: no I/O, an injected time."""

from __future__ import annotations

from edge_uploader.config import IngestionConfig
from edge_uploader.core.verdicts import (
    OUTAGE_AFTER,
    QUICK_RETRIES,
    FailureRun,
    ServiceState,
    pause_cause,
)
from edge_uploader.errors import Outcome
from edge_uploader.remote.ingestion import Answer
from edge_uploader.store.queue import Row, State

T0 = 1_700_000_000.0
OK = Answer(Outcome.DELIVERED, sample_id=1, status=200)
BOOM = Answer(Outcome.RETRY, "HTTP 500: boom", status=500)
REFUSED = Answer(Outcome.RETRY, "network error: connection refused")
NOT_FOUND = Answer(Outcome.DEAD, "HTTP 404: Not found", status=404)


def row(i: int = 1, attempts: int = 0) -> Row:
    return Row(
        id=i, path=f"/d/{i}.wav", size=10, mtime_ns=1, state=State.UPLOADING, source="test",
        label=None, category="training", metadata={}, upload_name=None, extra=None,
        after_upload="keep", move_to=None, allow_duplicates=False, batch=None,
        attempts=attempts, next_attempt_at=0.0, last_error=None, sha256=None, sample_id=None,
        enqueued_at=T0, delivered_at=None,
    )  # fmt: skip


def state() -> ServiceState:
    return ServiceState(IngestionConfig(retry_base_seconds=1.0, retry_max_seconds=300.0,
                                        auth_pause_seconds=300.0), rng=lambda: 0.5)  # fmt: skip


def test_a_sporadic_error_backs_off_its_file_only() -> None:
    s = state()
    v = s.verdict(row(1), BOOM, T0)
    assert v.result is not None and v.result.state is State.PENDING
    assert v.result.next_attempt_at > T0
    assert not s.probe and s.hold_until <= T0 and not s.outage


def test_a_failed_request_of_many_files_is_one_failure() -> None:
    s, run = state(), FailureRun()
    for request in range(OUTAGE_AFTER - 1):  # 7 failed requests of 20 files each
        for i in range(20):
            s.verdict(row(request * 20 + i), BOOM, T0, request=request)
        assert not run.add([BOOM] * 20, at_floor=True)
    assert not s.outage and not s.probe and s.outages_seen == 0
    for i in range(20):  # the eighth
        s.verdict(row(1000 + i), BOOM, T0, request=OUTAGE_AFTER)
    assert run.add([BOOM] * 20, at_floor=True)
    assert s.outage and s.probe and s.outages_seen == 1


def test_a_request_with_one_file_delivered_shows_the_service_working() -> None:
    run = FailureRun()
    for _ in range(OUTAGE_AFTER - 1):
        run.add([BOOM], at_floor=True)
    assert not run.add([BOOM, OK, BOOM], at_floor=True)
    assert not run.add([BOOM], at_floor=True)


def test_the_first_retries_of_a_file_are_quick_then_the_wait_doubles() -> None:
    s = state()  # base 1 s, jitter fixed at half the ceiling
    waits = []
    for attempts in range(QUICK_RETRIES + 3):
        v = s.verdict(row(1, attempts), BOOM, T0)
        s.verdict(row(2), OK, T0)  # sporadic: the service keeps working in between
        assert v.result is not None
        waits.append(v.result.next_attempt_at - T0)
    assert waits == [0.5] * QUICK_RETRIES + [1.0, 2.0, 4.0]


def test_five_percent_errors_never_open_the_breaker() -> None:
    s = state()
    for i in range(4000):  # one failure in twenty, as a busy service gives them
        s.verdict(row(i), BOOM if i % 20 == 7 else OK, T0 + i * 0.01)
    assert s.outages_seen == 0 and not s.probe and s.hold_until <= T0


def test_failures_in_a_row_open_the_breaker_and_a_success_closes_it() -> None:
    s = state()
    for i in range(OUTAGE_AFTER - 1):
        s.verdict(row(i), REFUSED, T0)
    assert not s.outage and not s.probe
    s.verdict(row(99), REFUSED, T0)
    assert s.outage and s.probe and s.outages_seen == 1
    first_hold = s.hold_until
    assert first_hold > T0
    for i in range(20):  # uploads that were in flight fail inside the hold: no escalation
        s.verdict(row(100 + i), REFUSED, T0 + 0.1)
    assert s.hold_until == first_hold
    s.verdict(row(200), REFUSED, first_hold)  # the probe fails: a longer hold
    assert s.hold_until - first_hold > first_hold - T0
    s.verdict(row(201), OK, s.hold_until)
    assert not s.outage and not s.probe and s.outages_seen == 1


def test_a_day_offline_costs_a_handful_of_probes() -> None:
    s = state()
    now, requests = T0, 0
    while now < T0 + 86400:
        if now >= s.hold_until:
            s.verdict(row(requests), REFUSED, now)
            requests += 1
        now = max(now + 0.01, s.hold_until)  # the dispatcher sleeps until the hold ends
    # retry_max 300 s with full jitter (here the middle, 150 s): one probe every 2.5 min
    # whatever the backlog, about 600 requests in a day rather than one per queued file
    assert requests <= OUTAGE_AFTER + 86400 / 150 + 10


def test_answers_that_show_the_service_working_reset_the_count() -> None:
    s = state()
    dead = Answer(Outcome.DEAD, "HTTP 400: bad file", status=400)
    for i in range(100):  # failures interleaved with refusals of single files
        s.verdict(row(i), BOOM if i % 2 else dead, T0)
    assert not s.outage


def test_the_same_404_for_every_file_pauses_without_dead_letters() -> None:
    s = state()
    first = s.verdict(row(1), NOT_FOUND, T0)
    assert first.result is None and s.probe and s.paused is None  # a suspect: back, unsent
    second = s.verdict(row(1), NOT_FOUND, T0)
    assert second.result is None and s.paused is not None and "without /v1" in s.paused
    assert s.newly_paused == s.paused and s.hold_until == T0 + 300.0
    assert pause_cause(s.paused) == "url"


def test_404s_that_name_different_routes_still_mean_a_wrong_url() -> None:
    """The service names the route it lacks: files of two categories get two texts."""
    s = state()
    training = Answer(Outcome.DEAD, "HTTP 404: Unknown API route /v1/api/training/files",
                      status=404)  # fmt: skip
    testing = Answer(Outcome.DEAD, "HTTP 404: Unknown API route /v1/api/testing/files",
                     status=404)  # fmt: skip
    assert s.verdict(row(1), training, T0).result is None
    assert s.verdict(row(2), testing, T0).result is None
    assert s.paused is not None and s.paused.startswith("wrong URL: HTTP 404")


def test_a_redirect_pauses_for_the_url_and_a_401_for_the_key() -> None:
    s = state()
    s.verdict(row(1), Answer(Outcome.PAUSE, "HTTP 301 redirect to 'x'", status=301), T0)
    assert pause_cause(s.paused) == "url"
    s = state()
    s.verdict(row(1), Answer(Outcome.PAUSE, "HTTP 401: Invalid API key", status=401), T0)
    assert pause_cause(s.paused) == "key" and pause_cause(None) is None


def test_after_an_accepted_file_a_404_is_that_files_refusal() -> None:
    s = state()
    s.verdict(row(1), OK, T0)
    v = s.verdict(row(2), NOT_FOUND, T0)
    assert v.result is not None and v.result.state is State.DEAD and s.paused is None


def test_a_refused_key_pauses_and_a_success_resumes() -> None:
    s = state()
    v = s.verdict(row(1), Answer(Outcome.PAUSE, "HTTP 401: Invalid API key", status=401), T0)
    assert v.result is None and s.paused == "HTTP 401: Invalid API key"
    s.verdict(row(1), OK, T0 + 300)
    assert s.paused is None and s.resumed


def test_a_batch_refused_as_a_whole_sends_its_files_alone() -> None:
    s = state()
    v = s.verdict(row(1), Answer(Outcome.RETRY, "HTTP 400: bad", status=400, alone=True), T0)
    assert v.result is None and v.alone
    assert not s.outage


def test_on_a_fast_link_the_quick_retries_wait_a_few_round_trips() -> None:
    """Base 1 s, a 2 ms link: a sporadic error costs its file 16 ms at most (jitter fixed
    at half), then the backoff doubles from the base as before; an unknown round trip
    keeps the base, and a slow link never waits longer than the base."""
    s = state()
    waits = []
    for attempts in range(QUICK_RETRIES + 2):
        v = s.verdict(row(1, attempts), BOOM, T0, rtt=0.002)
        s.verdict(row(2), OK, T0)
        assert v.result is not None
        waits.append(round(v.result.next_attempt_at - T0, 6))
    assert waits == [0.008] * QUICK_RETRIES + [1.0, 2.0]
    v = s.verdict(row(3), BOOM, T0, rtt=5.0)
    assert v.result is not None and v.result.next_attempt_at - T0 == 0.5
