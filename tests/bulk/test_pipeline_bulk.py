"""The pipeline's bulk mode (prefetch, gathered settles) keeps the daemon's promises: a
wrong key or an outage costs one request, not a queue's worth; a stop returns everything."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from edge_uploader.config import IngestionConfig
from edge_uploader.core.delivery import Delivery
from edge_uploader.core.verdicts import OUTAGE_AFTER
from edge_uploader.events import Stats
from edge_uploader.remote.ingestion import Uploader, make_client
from edge_uploader.secrets import Secret
from edge_uploader.store.queue import NewFile, Queue, State
from tests.fakes import FakeClock

from .helpers import wait_for

Handler = Callable[[httpx.Request], httpx.Response]


class Rig:
    def __init__(self, tmp_path: Path, handler: Handler, concurrency: int, n: int) -> None:
        self.clock = FakeClock()
        self.requests = 0
        self.lock = threading.Lock()

        def counting(request: httpx.Request) -> httpx.Response:
            with self.lock:
                self.requests += 1
            return handler(request)

        self.queue = Queue(tmp_path / "q.db", clock=self.clock)
        files = []
        for i in range(n):
            p = tmp_path / f"f{i}.wav"
            p.write_bytes(b"x%d" % i)
            st = p.stat()
            files.append(NewFile(path=str(p), size=st.st_size, mtime_ns=st.st_mtime_ns,
                                 source="upload", label=None, category="training", metadata={},
                                 batch="B"))  # fmt: skip
        self.ids = self.queue.enqueue_many(files)
        self.client = make_client(concurrency=concurrency, timeout=5, connect_timeout=5,
                                  transport=httpx.MockTransport(counting))  # fmt: skip
        uploader = Uploader(self.client, "http://ingest.test", Secret("ei_k"), clock=self.clock)
        config = IngestionConfig(
            concurrency=concurrency, auth_pause_seconds=300.0, max_files_per_request=1
        )
        self.pipeline = Delivery(self.queue, uploader, config, Stats(), clock=self.clock,
                                 rng=lambda: 0.5, batch="B", prefetch=8)  # fmt: skip

    def close(self) -> None:
        self.client.close()
        self.queue.close()


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(handler: Handler, concurrency: int = 2, n: int = 20) -> Rig:
        rig = Rig(tmp_path, handler, concurrency, n)
        rigs.append(rig)
        return rig

    yield make
    for r in rigs:
        r.close()


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"success": True, "files": [{"success": True, "sampleId": 1}]})


def test_everything_is_delivered_once(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(ok, concurrency=3, n=40)
    rig.pipeline.start()
    try:
        assert wait_for(lambda: rig.queue.counts()["delivered"] == 40)
    finally:
        rig.pipeline.stop(1.0)
    assert rig.requests == 40
    assert all(r.attempts == 1 for r in rig.queue.rows(State.DELIVERED))


def test_a_refused_key_costs_one_request(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(lambda r: httpx.Response(401, json={"error": "Invalid API key"}), concurrency=1)
    rig.pipeline.start()
    try:
        assert wait_for(lambda: rig.pipeline.paused is not None)
        assert wait_for(lambda: rig.queue.counts()["pending"] == 20 and rig.pipeline.inflight == 0)
    finally:
        rig.pipeline.stop(1.0)
    assert rig.requests == 1
    assert all(r.attempts == 0 for r in rig.queue.rows())


def test_an_outage_costs_a_handful_of_requests(make_rig: Callable[..., Rig]) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    rig = make_rig(down, concurrency=2, n=60)
    rig.pipeline.start()
    try:
        assert wait_for(lambda: rig.pipeline.state.outage)
        assert wait_for(lambda: rig.queue.counts()["pending"] == 60 and rig.pipeline.inflight == 0)
        time.sleep(0.2)  # nothing else goes out while the hold lasts
    finally:
        rig.pipeline.stop(1.0)
    # the breaker opens after OUTAGE_AFTER failures in a row; the requests already out
    # (one per worker) fail inside the hold; the prefetched ones return unsent
    assert rig.requests <= OUTAGE_AFTER + 2
    assert sum(r.attempts for r in rig.queue.rows()) == rig.requests


def test_stop_returns_prefetched_rows(make_rig: Callable[..., Rig]) -> None:
    release = threading.Event()

    def hang(request: httpx.Request) -> httpx.Response:
        release.wait(10)
        return ok(request)

    rig = make_rig(hang, concurrency=2)
    rig.pipeline.start()
    try:
        assert wait_for(lambda: rig.requests == 2)  # both workers are sending
        assert rig.queue.counts()["uploading"] == 10  # and 8 rows wait for them
        started = time.monotonic()
        rig.pipeline.stop(0.5)
        assert time.monotonic() - started < 2.5
        assert rig.queue.counts()["pending"] == 20 and rig.pipeline.inflight == 0
        assert all(r.attempts == 0 for r in rig.queue.rows())
        assert rig.requests == 2
    finally:
        release.set()
