"""The component's bookkeeping with a fake link (the seam): event order, journal, resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_uploader.config import load_config
from edge_uploader.events import Event, Stats
from edge_uploader.sources.mqtt.component import MqttComponent, Track
from edge_uploader.sources.mqtt.link import Message
from edge_uploader.store.journal import CommandJournal
from edge_uploader.store.queue import NewFile, Queue


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


class FakeService:
    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.stats = Stats()
        self.items: list[Any] = []

    def submit(self, item: Any) -> None:
        self.items.append(item)


@pytest.fixture
def parts(tmp_path: Path) -> Any:
    (tmp_path / "agent.toml").write_text(
        '[device]\nid = "d1"\n[queue]\npath = "state/q.db"\n[mqtt]\nhost = "127.0.0.1"\n'
        f'[capture]\ndir = "caps"\n[[capture.command]]\nname = "cam"\nargv = '
        f'[{json.dumps(sys.executable)}, "-c", "pass", "{{output}}"]\nextension = ".png"\n'
    )
    config = load_config(tmp_path / "agent.toml")
    queue = Queue(config.queue.path)
    link = FakeLink()
    comp = MqttComponent(config, link=link)
    service = FakeService(queue)
    comp.start(service)  # type: ignore[arg-type]
    yield comp, link, service
    comp.stop()
    queue.close()


def test_stages_are_published_in_order_whatever_order_they_arrive(parts: Any) -> None:
    comp, link, _ = parts
    track = Track("c1", "cam", "replies/x", b"cid")
    comp._advance(track, "queued", {"row_id": 1})
    comp._advance(track, "accepted", {})
    assert link.events() == ["accepted"]
    comp._advance(track, "delivered", {"sample_id": 5})
    comp._advance(track, "captured", {"file": "f"})
    assert link.events() == ["accepted", "captured", "queued", "delivered"]
    replies = [(d["event"], c) for t, d, c in link.sent if t == "replies/x"]
    assert replies == [(e, b"cid") for e in ("accepted", "captured", "queued", "delivered")]
    comp._fail(track, "late")  # a finished command says nothing more
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
    service.queue.enqueue_many([NewFile(path, 3, 1, "watch:x", "x", "training", {})])
    service.stats.emit(Event.QUEUED, path=path)
    comp._resume()
    events = [d for t, d, _ in link.sent if t.endswith("/events")]
    assert [(d["event"], d["id"]) for d in events] == [("failed", "gone")]
    comp._on_event(Event.DELIVERED, {"path": path, "sample_id": 42})
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
    comp, link, service = parts
    service.disk = None  # no disk floor in this fake
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
