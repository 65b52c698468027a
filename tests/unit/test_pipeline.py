"""The delivery pipeline: real queue file, real threads, MockTransport, a fake clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_uploader.config import IngestionConfig
from edge_uploader.core.delivery import Delivery, row_sample
from edge_uploader.core.sidecar import sidecar_path
from edge_uploader.events import Event, Stats
from edge_uploader.remote.ingestion import Uploader, make_client
from edge_uploader.secrets import Secret
from edge_uploader.store.queue import Queue, Result, Row, State
from tests.fakes import FakeClock
from tests.support import wait_for
from tests.unit.helpers import new_file
from tests.unit.multipart import read_parts

T0 = 1_700_000_000.0
Handler = Callable[[httpx.Request], httpx.Response]


class Server:
    """The MockTransport handler: assigns sample ids, or answers from a script."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.next_id = 100
        self.ids: dict[str, int] = {}
        self.script: Handler | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        (part, *_) = read_parts(request)
        assert part.filename is not None
        with self.lock:
            self.requests.append((part.filename, dict(request.headers)))
            script = self.script
        if script is not None:
            return script(request)
        with self.lock:
            self.next_id += 1
            self.ids[part.filename] = self.next_id
            sid = self.next_id
        return httpx.Response(200, json={"success": True, "files": [
            {"success": True, "sampleId": sid, "projectId": 1, "fileName": part.filename}]})  # fmt: skip


class Rig:
    def __init__(self, tmp_path: Path, clock: FakeClock, concurrency: int = 2) -> None:
        self.tmp = tmp_path
        self.clock = clock
        self.root = tmp_path / "in"
        self.root.mkdir()
        self.server = Server()
        self.queue = Queue(tmp_path / "queue.db", clock=clock)
        self.client = make_client(concurrency=concurrency, timeout=5, connect_timeout=5,
                                  transport=httpx.MockTransport(self.server))  # fmt: skip
        self.uploader = Uploader(self.client, "http://ingest.test", Secret("ei_k"), clock=clock)
        # one file per request (as each file here shares its metadata with the others, the
        # default would batch them; tests/unit/test_batches.py covers that)
        self.config = IngestionConfig(concurrency=concurrency, retry_base_seconds=1.0,
                                      retry_max_seconds=300.0, auth_pause_seconds=300.0,
                                      max_files_per_request=1)  # fmt: skip
        self.stats = Stats()
        self.events: list[tuple[Event, dict[str, Any]]] = []
        self.stats.subscribe(lambda e, info: self.events.append((e, info)))
        self.pipeline = Delivery(self.queue, self.uploader, self.config, self.stats, clock=clock,
                                 rng=lambda: 0.5, watch_roots={"watch:in": self.root})  # fmt: skip
        self.started = False

    def start(self) -> Rig:
        self.pipeline.start()
        self.started = True
        return self

    def close(self) -> None:
        if self.started:
            self.pipeline.stop(1.0)
        self.client.close()
        self.queue.close()

    def add(self, rel: str, **over: Any) -> int:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rel.encode() * 50)
        over.setdefault("source", "watch:in")
        (rid,) = self.queue.enqueue_many([new_file(path, **over)])
        self.pipeline.wake()
        return rid

    def row(self, rid: int) -> Row:
        row = self.queue.get(rid)
        assert row is not None
        return row

    def wait_state(self, rid: int, state: State, timeout: float = 5.0) -> Row:
        wait_for(lambda: self.row(rid).state is state, timeout)
        return self.row(rid)

    def named(self, event: Event) -> list[dict[str, Any]]:
        return [info for e, info in list(self.events) if e is event]


@pytest.fixture
def rig(tmp_path: Path, clock: FakeClock) -> Iterator[Rig]:
    r = Rig(tmp_path, clock)
    yield r
    r.close()


def reply(status: int, **kw: Any) -> Handler:
    return lambda request: httpx.Response(status, **kw)


def test_delivered_rows_get_their_sample_ids(rig: Rig) -> None:
    ids = {name: rig.add(f"sess/{name}") for name in ("a.wav", "b.wav", "c.csv", "d.jpg", "e.json")}
    rig.start()
    wait_for(lambda: rig.queue.counts()["delivered"] == 5)
    for name, rid in ids.items():
        row = rig.row(rid)
        assert row.sample_id == rig.server.ids[name]
        assert row.attempts == 1
        assert row.delivered_at == T0
        assert row.sha256 is not None and len(row.sha256) == 64
    assert len(rig.server.requests) == 5
    assert rig.stats.counts["delivered"] == 5
    assert rig.queue.get_state()["last_delivery_at"] == T0
    assert {info["sample_id"] for info in rig.named(Event.DELIVERED)} == set(
        rig.server.ids.values()
    )


def test_500_goes_back_to_pending_with_backoff(rig: Rig, clock: FakeClock) -> None:
    rig.server.script = reply(500, text="boom")
    rid = rig.add("a.wav")
    rig.start()
    wait_for(lambda: rig.row(rid).attempts == 1)
    row = rig.row(rid)
    # first retry: full jitter (rng = 0.5) over min(base, a few round trips of this
    # loopback link): later than now, and no later than half the 1 s base
    assert (row.state, row.last_error) == (State.PENDING, "HTTP 500: boom")
    assert T0 < row.next_attempt_at <= T0 + 0.5
    assert rig.queue.counts()["dead"] == 0
    assert rig.named(Event.RETRY)[0]["reason"] == "HTTP 500: boom"
    assert rig.queue.get_state()["last_error"] == "HTTP 500: boom"
    assert len(rig.server.requests) == 1  # not due again until the clock moves
    rig.server.script = None
    clock.advance(1.0)
    rig.pipeline.wake()
    row = rig.wait_state(rid, State.DELIVERED)
    assert row.attempts == 2
    assert row.sample_id == rig.server.ids["a.wav"]


def test_retry_after_sets_the_next_attempt(rig: Rig) -> None:
    rig.server.script = reply(429, headers={"Retry-After": "30"}, text="slow down")
    rid = rig.add("a.wav")
    rig.start()
    wait_for(lambda: rig.row(rid).attempts == 1)
    assert rig.row(rid).next_attempt_at == T0 + 30


def test_400_is_dead_and_does_not_block_the_rest(rig: Rig) -> None:
    def script(request: httpx.Request) -> httpx.Response:
        if read_parts(request)[0].filename == "bad.wav":
            return httpx.Response(400, json={"success": False, "error": "Could not parse"})
        return httpx.Response(
            200, json={"success": True, "files": [{"success": True, "sampleId": 7}]}
        )

    rig.server.script = script
    bad = rig.add("bad.wav")
    good = rig.add("good.wav")
    rig.start()
    dead = rig.wait_state(bad, State.DEAD)
    assert (dead.last_error, dead.attempts) == ("HTTP 400: Could not parse", 1)
    assert rig.wait_state(good, State.DELIVERED).sample_id == 7
    assert rig.named(Event.DEAD)[0]["reason"] == "HTTP 400: Could not parse"


def test_duplicate_counts_as_delivered(rig: Rig) -> None:
    rig.server.script = reply(
        400, json={"success": False, "error": "An item with this hash already exists"}
    )
    rid = rig.add("a.wav", after_upload="delete")
    rig.start()
    rig.wait_state(rid, State.DELIVERED)
    wait_for(lambda: not (rig.root / "a.wav").exists())
    assert rig.stats.counts["duplicate"] == 1


def test_401_pauses_without_dead_letters(tmp_path: Path, clock: FakeClock) -> None:
    rig = Rig(tmp_path, clock, concurrency=1)
    try:
        rig.server.script = reply(401, json={"success": False, "error": "Invalid API key"})
        ids = [rig.add(f"f{i}.wav") for i in range(3)]
        rig.start()
        wait_for(lambda: rig.pipeline.paused is not None)
        wait_for(lambda: rig.queue.counts()["uploading"] == 0)
        assert rig.pipeline.paused == "HTTP 401: Invalid API key"
        assert rig.queue.get_state()["paused"] == "HTTP 401: Invalid API key"
        assert rig.queue.counts() == {"pending": 3, "uploading": 0, "delivered": 0, "dead": 0,
                                      "held": 0, "gone": 0}  # fmt: skip
        assert all(rig.row(i).attempts == 0 for i in ids)  # a pause is not an attempt
        assert len(rig.server.requests) == 1  # the rest of the queue was not burnt
        assert [info["reason"] for info in rig.named(Event.PAUSED)] == ["HTTP 401: Invalid API key"]
        assert rig.stats.paused == "HTTP 401: Invalid API key"

        # the key is fixed; after the pause one probe goes out, then everything
        rig.server.script = None
        clock.advance(300)
        rig.pipeline.wake()
        wait_for(lambda: rig.queue.counts()["delivered"] == 3)
        assert rig.pipeline.paused is None
        assert "paused" not in rig.queue.get_state()
        assert len(rig.named(Event.RESUMED)) == 1
        assert rig.stats.paused is None
    finally:
        rig.close()


def test_403_pauses_too(rig: Rig) -> None:
    rig.server.script = reply(403, text="Forbidden")
    rid = rig.add("a.wav")
    rig.start()
    wait_for(lambda: rig.pipeline.paused == "HTTP 403: Forbidden")
    wait_for(lambda: rig.row(rid).state is State.PENDING)
    assert rig.queue.counts()["dead"] == 0


def test_paused_state_survives_a_restart(rig: Rig) -> None:
    rig.queue.set_state(paused="HTTP 401: Invalid API key")
    rid = rig.add("a.wav")
    rig.start()
    assert rig.pipeline.paused == "HTTP 401: Invalid API key"
    rig.wait_state(rid, State.DELIVERED)  # the probe succeeds and clears it
    wait_for(lambda: rig.pipeline.paused is None)
    assert "paused" not in rig.queue.get_state()


def test_file_gone_before_upload(rig: Rig) -> None:
    rid = rig.add("a.wav")
    (rig.root / "a.wav").unlink()
    rig.start()
    row = rig.wait_state(rid, State.GONE)
    assert (row.last_error, row.attempts) == ("the file no longer exists", 0)
    assert rig.server.requests == []


def test_a_failure_in_the_bookkeeping_of_an_answer_loses_no_row(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the limit")

    monkeypatch.setattr(rig.pipeline.concurrency, "finished", broken)
    ids = [rig.add(f"f{i}.wav") for i in range(3)]
    rig.start()
    for rid in ids:  # the workers live on and their answers are written back
        rig.wait_state(rid, State.DELIVERED)


# -- after_upload -------------------------------------------------------------------------


def test_delete_only_after_delivery(rig: Rig) -> None:
    seen: list[tuple[bool, State]] = []

    def on_event(event: Event, info: dict[str, Any]) -> None:
        if event is Event.DELIVERED:  # emitted after the commit, before the local action
            seen.append(((rig.root / "a.wav").exists(), rig.row(info["row_id"]).state))

    rig.stats.subscribe(on_event)
    rig.server.script = reply(500, text="boom")
    rid = rig.add("a.wav", after_upload="delete")
    sidecar_path(rig.root / "a.wav").write_text('{"label": "x"}')
    rig.start()
    wait_for(lambda: rig.row(rid).attempts == 1)
    assert (rig.root / "a.wav").exists()  # a retry keeps the file
    rig.server.script = None
    rig.clock.advance(10)
    rig.pipeline.wake()
    rig.wait_state(rid, State.DELIVERED)
    wait_for(lambda: not (rig.root / "a.wav").exists())
    assert not sidecar_path(rig.root / "a.wav").exists()
    assert seen == [(True, State.DELIVERED)]
    wait_for(lambda: rig.queue.unfinished_local_actions() == [])


def test_dead_files_are_kept(rig: Rig) -> None:
    rig.server.script = reply(413, text="too large")
    rid = rig.add("a.wav", after_upload="delete")
    rig.start()
    rig.wait_state(rid, State.DEAD)
    assert (rig.root / "a.wav").exists()
    assert rig.queue.unfinished_local_actions() == []


def test_move_keeps_the_relative_path(rig: Rig) -> None:
    done = rig.tmp / "done"
    (done / "sess-1").mkdir(parents=True)
    (done / "sess-1" / "b.wav").write_bytes(b"older b")
    a = rig.add("sess-1/a.wav", after_upload="move", move_to=str(done))
    sidecar_path(rig.root / "sess-1" / "a.wav").write_text("{}")
    b = rig.add("sess-1/b.wav", after_upload="move", move_to=str(done))
    c = rig.add("deep/er/c.wav", after_upload="move", move_to=str(done))
    rig.start()
    for rid in (a, b, c):
        rig.wait_state(rid, State.DELIVERED)
    wait_for(lambda: rig.queue.unfinished_local_actions() == [])
    assert (done / "sess-1" / "a.wav").read_bytes() == b"sess-1/a.wav" * 50
    assert (done / "sess-1" / "a.wav.meta.json").read_text() == "{}"
    assert (done / "sess-1" / "b.wav").read_bytes() == b"older b"  # never overwritten
    assert (done / "sess-1" / "b.1.wav").read_bytes() == b"sess-1/b.wav" * 50
    assert (done / "deep" / "er" / "c.wav").exists()
    assert sorted(p.name for p in rig.root.rglob("*") if p.is_file()) == []


def test_unfinished_local_actions_are_completed_at_start(rig: Rig) -> None:
    rid = rig.add("a.wav", after_upload="delete")
    rig.queue.lease(1)
    rig.queue.settle([Result(rid, State.DELIVERED, sample_id=3)], durable=True)  # then a crash
    assert [r.id for r in rig.queue.unfinished_local_actions()] == [rid]
    rig.pipeline.after_upload.finish_pending(rig.queue)
    assert not (rig.root / "a.wav").exists()
    assert rig.queue.unfinished_local_actions() == []


# -- stop ---------------------------------------------------------------------------------


def test_stop_returns_leased_rows_to_pending(rig: Rig) -> None:
    release = threading.Event()

    def hang(request: httpx.Request) -> httpx.Response:
        release.wait(10)
        return httpx.Response(
            200, json={"success": True, "files": [{"success": True, "sampleId": 1}]}
        )

    rig.server.script = hang
    ids = [rig.add(f"f{i}.wav") for i in range(3)]
    rig.start()
    wait_for(lambda: rig.queue.counts()["uploading"] == 2)
    assert rig.pipeline.inflight == 2
    started = time.monotonic()
    rig.pipeline.stop(0.5)
    rig.started = False
    assert time.monotonic() - started < 2.0
    assert rig.queue.counts()["pending"] == 3
    assert rig.pipeline.inflight == 0
    assert all(rig.row(i).attempts == 0 for i in ids)
    # nothing of the pipeline touches the queue any more: the caller may close it now
    assert not rig.pipeline.alive()
    release.set()


def test_stop_lets_quick_uploads_finish(rig: Rig) -> None:
    gate, arrived = threading.Event(), threading.Event()

    def slow(request: httpx.Request) -> httpx.Response:
        arrived.set()
        gate.wait(10)
        return httpx.Response(
            200, json={"success": True, "files": [{"success": True, "sampleId": 9}]}
        )

    rig.server.script = slow
    rid = rig.add("a.wav")
    rig.start()
    # leased is not sent: a request no worker has started yet stays queued at a stop
    assert arrived.wait(10)
    threading.Timer(0.2, gate.set).start()
    rig.pipeline.stop(3.0)
    rig.started = False
    assert rig.row(rid).state is State.DELIVERED


def test_row_sample() -> None:
    row = Row(id=1, path="/d/a.wav", size=3, mtime_ns=4, state=State.UPLOADING, source="s",
              label="", category="testing", metadata={"k": "v"}, upload_name="b.wav",
              extra={"parts": [{"name": "bounding_boxes.labels", "content": "{}"}]},
              after_upload="keep", move_to=None, allow_duplicates=True, batch=None, attempts=0,
              next_attempt_at=0, last_error=None, sha256=None, sample_id=None, enqueued_at=0,
              delivered_at=None)  # fmt: skip
    s = row_sample(row)
    assert (s.path, s.file_name, s.category, s.label, dict(s.metadata)) == (
        "/d/a.wav",
        "b.wav",
        "testing",
        "",
        {"k": "v"},
    )
    assert s.allow_duplicates is True
    assert (s.expect_size, s.expect_mtime_ns) == (3, 4)
    assert s.extra_parts == (("bounding_boxes.labels", b"{}", "application/json"),)
    assert replace(row, upload_name=None).file_name == "a.wav"


def test_a_file_rewritten_after_delivery_is_not_deleted(rig: Rig) -> None:
    rid = rig.add("a.wav", after_upload="delete")
    sidecar_path(rig.root / "a.wav").write_text('{"label": "v2"}')
    rig.queue.lease(1)
    rig.queue.settle([Result(rid, State.DELIVERED, sample_id=3)], durable=True)  # then a crash
    (rig.root / "a.wav").write_bytes(b"version 2, not yet delivered")  # a new capture
    rig.pipeline.after_upload.finish_pending(rig.queue)
    assert (rig.root / "a.wav").read_bytes() == b"version 2, not yet delivered"
    assert sidecar_path(rig.root / "a.wav").exists()
    assert rig.queue.unfinished_local_actions() == []
