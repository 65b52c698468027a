"""Delivery on real links: the project's ingestion server on loopback, with latency,
sporadic failures, dropped connections and overload; a real queue file and real threads.

These prove the behaviour (the limit follows the link, sporadic errors cost a retry each,
several files share a request with per-file results); the speed figures belong to
``bench/links.py``, not to tests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_uploader.config import IngestionConfig
from edge_uploader.core.concurrency import INITIAL_LIMIT
from edge_uploader.core.delivery import Delivery
from edge_uploader.events import Event, Stats
from edge_uploader.localserver import FaultConfig, LocalIngestionServer
from edge_uploader.remote.ingestion import Uploader, make_client
from edge_uploader.secrets import Secret
from edge_uploader.store.queue import NewFile, Queue, State
from edge_uploader.store.status import gather
from tests.support import wait_for

KEY = "ei_adaptive_test_key"


class CountingTransport(httpx.HTTPTransport):
    """The real transport, counting requests by answer (None: no answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.answers: list[int | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = super().handle_request(request)
        except httpx.TransportError:
            with self.lock:
                self.answers.append(None)
            raise
        with self.lock:
            self.answers.append(response.status_code)
        return response


@dataclass
class Rig:
    server: LocalIngestionServer
    queue: Queue
    delivery: Delivery
    transport: CountingTransport
    stats: Stats
    events: list[tuple[Event, dict[str, Any]]]
    folder: Path

    def add(self, n: int, *, size: int = 300, prefix: str = "f", **over: Any) -> list[int]:
        files = []
        for i in range(n):
            p = self.folder / f"{prefix}{i:05d}.json"
            p.write_bytes((f"{prefix}{i}:".encode() * size)[:size])
            st = p.stat()
            fields: dict[str, Any] = {
                "path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "source": "test", "label": "idle", "category": "training",
                "metadata": {"session": "s1"},
            }  # fmt: skip
            fields.update(over)
            files.append(NewFile(**fields))
        ids = self.queue.enqueue_many(files)
        self.delivery.wake()
        return ids

    def delivered(self) -> int:
        return self.queue.counts()["delivered"]

    def named(self, event: Event) -> list[dict[str, Any]]:
        return [info for e, info in list(self.events) if e is event]


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Any]:
    made: list[Rig] = []

    def make(faults: FaultConfig | None = None, *, server: dict[str, Any] | None = None,
             **ingestion: Any) -> Rig:  # fmt: skip
        srv = LocalIngestionServer(tmp_path / f"srv{len(made)}", api_keys=[KEY], quiet=True,
                                   faults=faults, **(server or {})).start()  # fmt: skip
        ingestion.setdefault("retry_base_seconds", 0.02)
        ingestion.setdefault("retry_max_seconds", 0.2)
        ing = IngestionConfig(url=srv.url, auth_pause_seconds=1.0, **ingestion)
        transport = CountingTransport()
        client = make_client(concurrency=ing.workers, timeout=10, connect_timeout=5,
                             transport=transport)  # fmt: skip
        uploader = Uploader(client, srv.url, Secret(KEY))
        queue = Queue(tmp_path / f"q{len(made)}.db")
        stats = Stats()
        events: list[tuple[Event, dict[str, Any]]] = []
        stats.subscribe(lambda e, info: events.append((e, info)))
        delivery = Delivery(queue, uploader, ing, stats)
        folder = tmp_path / f"files{len(made)}"
        folder.mkdir()
        rig = Rig(srv, queue, delivery, transport, stats, events, folder)
        made.append(rig)
        return rig

    yield make
    for r in made:
        r.delivery.stop(2.0)
        r.delivery.uploader.close()
        r.queue.close()
        r.server.stop()


def once_each(rig: Rig, n: int) -> None:
    names = [s.original_filename for s in rig.server.samples()]
    assert len(names) == n and len(set(names)) == n


def test_the_limit_rises_to_hide_latency(make_rig: Any) -> None:
    rig = make_rig(FaultConfig(latency_ms=100), max_files_per_request=1)
    assert rig.delivery.concurrency.limit == INITIAL_LIMIT == 8
    rig.add(400)
    rig.delivery.start()
    assert wait_for(lambda: rig.delivered() == 400, 60)
    assert rig.delivery.concurrency.limit > 16  # climbed past the start
    once_each(rig, 400)
    facts = gather(rig.queue)["concurrency"]
    assert facts["adaptive"] and facts["maximum"] == 32 and facts["limit"] > 16
    assert facts["rtt_ms"] >= 100


def test_the_limit_falls_on_503_and_every_file_arrives(make_rig: Any) -> None:
    """A service that answers 503 above 4 requests in flight."""
    rig = make_rig(FaultConfig(latency_ms=30, overload_above=4), max_files_per_request=1,
                   max_concurrency=24)  # fmt: skip
    rig.add(300)
    rig.delivery.start()
    assert wait_for(lambda: rig.delivered() == 300, 90)
    once_each(rig, 300)
    answers = rig.transport.answers
    assert rig.delivery.concurrency.limit <= 8
    assert answers.count(503) < 0.15 * len(answers)  # the target for the bench
    assert rig.delivery.state.outages_seen == 0


@pytest.mark.parametrize(
    "faults",
    [FaultConfig(fail_rate=0.05, fail_status=500, seed=7),
     FaultConfig(fail_rate=0.05, fail_status=503, seed=8),
     FaultConfig(drop_rate=0.02, seed=9)],
    ids=["5% 500", "5% 503", "2% dropped"],
)  # fmt: skip
def test_sporadic_errors_cost_a_retry_each_not_a_stall(make_rig: Any, faults: FaultConfig) -> None:
    rig = make_rig(faults, max_files_per_request=1)
    rig.add(400)
    rig.delivery.start()
    assert wait_for(lambda: rig.delivered() == 400, 60)
    once_each(rig, 400)
    assert rig.delivery.state.outages_seen == 0  # the breaker never opened
    retries = len(rig.named(Event.RETRY))
    assert 0 < retries < 60
    assert len(rig.transport.answers) == 400 + retries


def test_an_outage_opens_the_breaker_and_the_first_success_closes_it(make_rig: Any) -> None:
    rig = make_rig(FaultConfig(fail_rate=1.0, fail_status=502), max_files_per_request=1,
                   max_concurrency=4)  # fmt: skip
    rig.add(200)
    rig.delivery.start()
    assert wait_for(lambda: rig.delivery.state.outage, 30)
    sent_when_opened = len(rig.transport.answers)
    assert sent_when_opened <= 8 + 4  # OUTAGE_AFTER, plus the requests already in flight
    rig.server.set_faults(FaultConfig())
    assert wait_for(lambda: rig.delivered() == 200, 60)
    assert not rig.delivery.state.outage and rig.delivery.state.outages_seen >= 1
    once_each(rig, 200)


def test_files_that_agree_share_requests(make_rig: Any) -> None:
    rig = make_rig(max_files_per_request=25, concurrency=2)
    rig.add(200)
    rig.delivery.start()
    assert wait_for(lambda: rig.delivered() == 200, 30)
    once_each(rig, 200)
    # a request per 25 files, once the dispatcher has learnt that they share (2, 4, 8, ...)
    assert len(rig.transport.answers) <= 200 / 25 + 6
    ids = {r.sample_id for r in rig.queue.rows(State.DELIVERED)}
    assert len(ids) == 200 and None not in ids  # each file its own sample id
    stored = rig.server.samples()
    assert {s.label for s in stored} == {"idle"}
    assert all(s.metadata["session"] == "s1" for s in stored)


def test_files_that_differ_do_not_share(make_rig: Any) -> None:
    rig = make_rig(max_files_per_request=25, concurrency=1)
    for session in ("a", "b"):
        rig.add(10, prefix=session, metadata={"session": session})
    rig.add(5, prefix="big", size=300_000)  # large files share too, up to max_request_bytes
    rig.delivery.start()
    assert wait_for(lambda: rig.delivered() == 25, 30)
    by_name = {s.original_filename: s for s in rig.server.samples()}
    assert all(by_name[f"a{i:05d}.json"].metadata["session"] == "a" for i in range(10))
    assert all(by_name[f"b{i:05d}.json"].metadata["session"] == "b" for i in range(10))
    assert 2 + 2 <= len(rig.transport.answers) <= 2 + 5 + 6


def test_a_duplicate_in_a_request_counts_as_delivered_alone(make_rig: Any) -> None:
    rig = make_rig(max_files_per_request=25, concurrency=1)
    rig.add(1, prefix="dup")
    rig.delivery.start()
    assert wait_for(lambda: rig.delivered() == 1, 30)
    rig.add(1, prefix="dup", path=str(rig.folder / "dup00000.json"))  # the same bytes again
    rig.add(9, prefix="new")
    assert wait_for(lambda: rig.delivered() == 11, 30)
    assert len(rig.named(Event.DUPLICATE)) == 1
    assert len(rig.named(Event.DELIVERED)) == 10
    assert len(rig.server.samples()) == 10


def test_a_request_refused_as_a_whole_is_resent_file_by_file(make_rig: Any) -> None:
    """The service refuses a duplicate by failing the whole request (HTTP 400): which file
    it meant is unknown, so each goes again alone and only the duplicate stays refused."""
    rig = make_rig(server={"duplicate_style": "400"}, max_files_per_request=25, concurrency=1)
    rig.add(1, prefix="dup")
    rig.delivery.start()
    assert wait_for(lambda: rig.delivered() == 1, 30)
    rig.add(1, prefix="dup", path=str(rig.folder / "dup00000.json"))
    rig.add(9, prefix="new")
    assert wait_for(lambda: rig.delivered() == 11, 30)
    assert len(rig.named(Event.DUPLICATE)) == 1
    assert len(rig.server.samples()) == 10
    assert all(r.attempts == 1 for r in rig.queue.rows(State.DELIVERED))  # no attempt burnt


def test_a_refused_file_is_dead_lettered_alone(make_rig: Any) -> None:
    rig = make_rig(server={"max_file_bytes": 4000}, max_files_per_request=25, concurrency=1)
    rig.add(6, prefix="ok", size=1000)
    (big,) = rig.add(1, prefix="big", size=5000)  # small enough to share, too big to store
    rig.delivery.start()
    assert wait_for(lambda: rig.queue.counts()["dead"] == 1 and rig.delivered() == 6, 30)
    row = rig.queue.get(big)
    assert row is not None and row.state is State.DEAD and "413" in (row.last_error or "")
    once_each(rig, 6)
