"""The component's bookkeeping with a fake link (the seam) and a runtime whose doors are
recorded: event order, journal, resume, one submission per capture, following by row."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edge_uploader.config import Config, load_config
from edge_uploader.core.intake import Item
from edge_uploader.core.runtime import Runtime
from edge_uploader.events import Event, Stats
from edge_uploader.sources.mqtt.component import MqttComponent
from edge_uploader.sources.mqtt.link import Message
from edge_uploader.sources.mqtt.stages import Track
from edge_uploader.store.journal import CommandJournal
from edge_uploader.store.queue import NewFile, Queue, Result, State


class FakeLink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], bytes | None]] = []
        self.connected = True

    def start(self) -> None:
        pass

    def stop(self, last_status: bytes | None) -> None:
        self.last_status = last_status

    def publish(self, topic: str, payload: bytes, *, retain: bool = False,
                correlation: bytes | None = None) -> bool:  # fmt: skip
        self.sent.append((topic, json.loads(payload), correlation))
        return True

    def events(self) -> list[str]:
        return [d["event"] for t, d, _ in self.sent if t.endswith("/events")]


class Doors:
    """The runtime's doors into the daemon, recorded."""

    def __init__(self, config: Config, queue: Queue) -> None:
        self.items: list[Item] = []
        self.claims: list[Path] = []
        self.runtime = Runtime(config=config, queue=queue, stats=Stats(), clock=time.time,
                               submit=self.items.append, claim=self.claims.append,
                               capture_refusal=lambda folder: None)  # fmt: skip

    @property
    def queue(self) -> Queue:
        return self.runtime.queue

    @property
    def stats(self) -> Stats:
        return self.runtime.stats


WRITE = "import sys; open(sys.argv[1], 'wb').write(b'img')"


@pytest.fixture
def parts(tmp_path: Path) -> Any:
    (tmp_path / "agent.toml").write_text(
        '[device]\nid = "d1"\n[queue]\npath = "state/q.db"\n[mqtt]\nhost = "127.0.0.1"\n'
        f'[capture]\ndir = "caps"\n[[capture.command]]\nname = "cam"\nargv = '
        f'[{json.dumps(sys.executable)}, "-c", {json.dumps(WRITE)}, "{{output}}"]\n'
        'extension = ".png"\n'
    )
    config = load_config(tmp_path / "agent.toml")
    queue = Queue(config.queue.path)
    link = FakeLink()
    comp = MqttComponent(config, link=link)
    doors = Doors(config, queue)
    comp.start(doors.runtime)
    yield comp, link, doors
    comp.stop()
    queue.close()


def test_stages_are_published_in_order_whatever_order_they_arrive(parts: Any) -> None:
    comp, link, _ = parts
    track = Track("c1", "cam", "replies/x", b"cid")
    comp.stages.advance(track, "queued", {"row_id": 1})
    comp.stages.advance(track, "accepted", {})
    assert link.events() == ["accepted"]
    comp.stages.advance(track, "delivered", {"sample_id": 5})
    comp.stages.advance(track, "captured", {"file": "f"})
    assert link.events() == ["accepted", "captured", "queued", "delivered"]
    replies = [(d["event"], c) for t, d, c in link.sent if t == "replies/x"]
    assert replies == [(e, b"cid") for e in ("accepted", "captured", "queued", "delivered")]
    comp.stages.fail(track, "late")  # a finished command says nothing more
    assert link.events()[-1] == "delivered"


def test_rejections_name_the_field_and_the_agent_keeps_going(parts: Any) -> None:
    comp, link, _ = parts
    for raw in (
        b"\x00",
        b"{}",
        json.dumps({"id": "x", "source": "cam", "duration_ms": -1}).encode(),
    ):
        comp.handle(Message("t", raw))
    events = [d for t, d, _ in link.sent if t.endswith("/events")]
    assert [(e["event"], e["field"]) for e in events] == [
        ("rejected", None), ("rejected", "id"), ("rejected", "duration_ms")
    ]  # fmt: skip
    assert events[2]["id"] == "x" and events[0]["id"] is None


def test_retained_commands_are_refused_once_then_ignored(parts: Any) -> None:
    comp, link, _ = parts
    raw = json.dumps({"id": "ret", "source": "cam", "duration_ms": 5}).encode()
    comp.handle(Message("t", raw, retain=True))
    comp.handle(Message("t", raw, retain=True))
    assert link.events() == ["rejected"]


def test_resume_reports_a_delivered_row_after_restart(parts: Any, tmp_path: Path) -> None:
    comp, link, service = parts
    path = str(tmp_path / "caps" / "cam.x.png")
    comp.journal.claim("old", "cam", None, None)
    comp.journal.update("old", "queued", path=path)
    comp.journal.claim("gone", "cam", None, None)  # accepted, then the agent died
    (rid,) = service.queue.enqueue_many([NewFile(path, 3, 1, "watch:x", "x", "training", {})])
    service.stats.emit(Event.QUEUED, path=path, row_id=rid)
    comp._resume()
    events = [d for t, d, _ in link.sent if t.endswith("/events")]
    assert [(d["event"], d["id"]) for d in events] == [("failed", "gone")]
    comp.stages.on_event(Event.DELIVERED, {"path": path, "row_id": rid, "sample_id": 42})
    events = [d for t, d, _ in link.sent if t.endswith("/events")]
    assert [(d["event"], d["id"]) for d in events][1:] == [("delivered", "old")]
    assert events[-1]["sample_id"] == 42
    assert [e.id for e in comp.journal.open_entries()] == []


def test_journal_is_durable_and_bounded(tmp_path: Path) -> None:
    now = [1000.0]
    j = CommandJournal(tmp_path / "c.db", max_rows=50, keep_seconds=100, clock=lambda: now[0])
    assert j.claim("a", "s", None, None) is None
    assert j.claim("a", "s", None, None).state == "accepted"  # type: ignore[union-attr]
    j.close()
    j = CommandJournal(tmp_path / "c.db", max_rows=50, keep_seconds=100, clock=lambda: now[0])
    assert j.claim("a", "s", None, None) is not None
    for i in range(300):
        now[0] += 0.01
        j.claim(f"id-{i}", "s", None, None)
    j.prune()
    count = j.db.connection.execute("SELECT count(*) FROM commands").fetchone()[0]
    assert count == 50
    now[0] += 1000
    j.prune()
    assert j.db.connection.execute("SELECT count(*) FROM commands").fetchone()[0] == 0
    j.close()


def test_a_command_refused_as_retained_runs_when_sent_again_without_retain(parts: Any) -> None:
    """The refusal says "publish without retain": doing exactly that must work, the id was
    never run (a retained message is remembered apart, so it is still refused only once)."""
    comp, link, _doors = parts
    raw = json.dumps({"id": "c-77", "source": "cam", "duration_ms": 5}).encode()
    comp.handle(Message("t", raw, retain=True))
    comp.handle(Message("t", raw))
    for t in list(comp._threads):
        t.join(10)  # the capture ends (the source is free again)
    comp.handle(Message("t", raw, retain=True))  # the retained copy again: still ignored
    comp.handle(Message("t", raw))  # the live id again: a duplicate
    events = [(d["event"], d.get("reason") or "") for t, d, _ in link.sent
              if t.endswith("/events") and d["id"] == "c-77"]  # fmt: skip
    assert events[0][0] == "rejected" and "without retain" in events[0][1]
    assert ("accepted", "") in events
    rejected = [reason for event, reason in events if event == "rejected"]
    assert len(rejected) == 2 and "duplicate" in rejected[1]


def run_capture(comp: MqttComponent, command_id: str) -> None:
    raw = json.dumps({"id": command_id, "source": "cam", "duration_ms": 5,
                      "label": "dog", "session": "s-1"}).encode()  # fmt: skip
    comp.handle(Message("t", raw))
    for t in list(comp._threads):
        t.join(10)


def test_a_capture_is_submitted_once_with_its_tags_and_followed_by_its_row(parts: Any) -> None:
    """The command is tagged once: the item carries the tags (no second tagging from the
    sidecar), the watcher is told to leave the path alone, and from the queue row on the
    command is followed by row id, not by its file's path."""
    comp, link, doors = parts
    run_capture(comp, "c-1")
    assert link.events() == ["accepted", "captured"]
    (item,) = doors.items
    assert doors.claims == [item.path] and item.path.exists()
    assert item.tagged is not None and item.tagged.label == "dog"
    assert item.tagged.metadata["session"] == "s-1" and item.tagged.metadata["command_id"] == "c-1"
    assert item.tagged.metadata["captured_at"].endswith("Z")
    st = item.path.stat()
    (rid,) = doors.queue.enqueue_many([NewFile(str(item.path), st.st_size, st.st_mtime_ns,
                                               "watch:caps", "dog", "training", {})])  # fmt: skip
    assert item.on_queued is not None
    item.on_queued(rid, None)
    assert link.events() == ["accepted", "captured", "queued"]
    assert [d for t, d, _ in link.sent if t.endswith("/events")][-1]["row_id"] == rid
    doors.stats.emit(Event.DELIVERED, path="/renamed/elsewhere.png", row_id=rid, sample_id=9)
    assert link.events() == ["accepted", "captured", "queued", "delivered"]
    assert comp.journal.open_entries() == []


def test_a_row_delivered_before_it_was_followed_is_reported(parts: Any) -> None:
    comp, link, doors = parts
    run_capture(comp, "c-2")
    (item,) = doors.items
    st = item.path.stat()
    (rid,) = doors.queue.enqueue_many([NewFile(str(item.path), st.st_size, st.st_mtime_ns,
                                               "watch:caps", "dog", "training", {})])  # fmt: skip
    (row,) = doors.queue.lease(1)
    doors.queue.settle([Result(row.id, State.DELIVERED, sample_id=77)])
    assert item.on_queued is not None
    item.on_queued(rid, None)  # the upload was faster than intake's answer
    events = [d for t, d, _ in link.sent if t.endswith("/events")]
    assert [d["event"] for d in events] == ["accepted", "captured", "queued", "delivered"]
    assert events[-1]["sample_id"] == 77


def test_resume_follows_a_journaled_row(parts: Any, tmp_path: Path) -> None:
    comp, link, doors = parts
    (rid,) = doors.queue.enqueue_many([NewFile("/caps/x.png", 3, 1, "watch:caps", None,
                                               "training", {})])  # fmt: skip
    comp.journal.claim("c-3", "cam", None, None)
    comp.journal.update("c-3", "queued", row_id=rid)
    comp._resume()
    assert link.events() == []  # queued before the restart: waiting for delivery
    doors.stats.emit(Event.DEAD, path="/caps/x.png", row_id=rid, reason="HTTP 400: bad")
    events = [d for t, d, _ in link.sent if t.endswith("/events")]
    assert [(d["event"], d["id"]) for d in events] == [("failed", "c-3")]
    assert "HTTP 400: bad" in events[0]["reason"]


def test_a_file_queued_while_nobody_followed_it_is_found_by_its_command_id(parts: Any) -> None:
    """The queue could not record the capture (a full disk); the scan queued it later."""
    comp, link, doors = parts
    run_capture(comp, "c-4")
    (item,) = doors.items
    assert item.on_queued is not None
    item.on_queued(None, "not recorded in the queue: database or disk is full")
    assert link.events() == ["accepted", "captured"]  # not failed: the file is there
    st = item.path.stat()
    (rid,) = doors.queue.enqueue_many([NewFile(str(item.path), st.st_size, st.st_mtime_ns,
                                               "watch:caps", "dog", "training",
                                               {"command_id": "c-4"})])  # fmt: skip
    doors.stats.emit(Event.QUEUED, path=str(item.path), row_id=rid)
    assert link.events() == ["accepted", "captured", "queued"]
