"""A capture command's way through the stages, reported in order on ``{prefix}/events``.

For one command the events (also sent on the MQTT 5 response topic, with the correlation
data, when the command names one) are, in this order::

    accepted -> captured -> queued -> delivered          or, at any point, failed
    rejected                                             (invalid, duplicate id, busy)

Each event is ``{"event": ..., "id": <command id>, "device_id": ..., "at": ...}`` plus
its facts (``field`` and ``reason`` for rejected; ``reason`` for failed; ``file``,
``sample_count``, ``frequency_hz``, ``interval_ms`` for captured; ``row_id`` for queued;
``sample_id`` for delivered). Stages reach us on different threads (the capture worker,
intake, the upload dispatcher), so each command keeps a small re-order buffer: a stage
is published only after the ones before it.

Once its file is queued a command is followed by its queue row id: the dispatcher's
``delivered`` / ``dead`` / ``gone`` events name the row. A command whose file was queued
while nobody followed it (a queue write failed, then the scan found the file) is found
again by the ``command_id`` its capture carries in its metadata.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...core.tagger import iso_utc
from ...errors import AgentError
from ...events import Event
from ...store.journal import CommandJournal
from ...store.queue import Queue, Row, State
from .link import Link

log = logging.getLogger(__name__)

STAGES = ("accepted", "captured", "queued", "delivered")


@dataclass
class Track:
    """One command on its way through the stages."""

    id: str
    source: str | None
    reply_topic: str | None = None
    correlation: bytes | None = None
    path: str | None = None
    row_id: int | None = None
    next_stage: int = 0
    held: dict[int, dict[str, Any]] = field(default_factory=dict)
    done: bool = False


class Stages:
    """Publishes each command's stages in order and follows it by its queue row."""

    def __init__(self, link: Link, events_topic: str, device_id: str, journal: CommandJournal,
                 queue: Queue) -> None:  # fmt: skip
        self.link = link
        self.events_topic = events_topic
        self.device_id = device_id
        self.journal = journal
        self.queue = queue
        self._by_id: dict[str, Track] = {}
        self._by_row: dict[int, Track] = {}
        self._lock = threading.RLock()

    def open(self, track: Track) -> None:
        """A command was accepted: it is followed until it is delivered or failed."""
        with self._lock:
            self._by_id[track.id] = track

    def advance(self, track: Track, stage: str, facts: dict[str, Any]) -> None:
        """Publish ``stage`` once every earlier stage is out (a per-command re-order buffer)."""
        index = STAGES.index(stage)
        with self._lock:
            if track.done or index < track.next_stage:
                return
            track.held[index] = {"event": stage, **facts}
            while track.next_stage in track.held:
                self.send(track, track.held.pop(track.next_stage))
                track.next_stage += 1
            if track.next_stage == len(STAGES):
                self._finish(track, "delivered")
        if stage == "queued":
            self._journal(track.id, stage, row_id=track.row_id)

    def fail(self, track: Track, reason: str) -> None:
        with self._lock:
            if track.done:
                return
            self.send(track, {"event": "failed", "reason": reason})
            self._finish(track, "failed")

    def reject(self, track: Track, field_name: str, reason: str) -> None:
        self.send(track, {"event": "rejected", "field": field_name or None, "reason": reason})

    def send(self, track: Track, doc: dict[str, Any]) -> None:
        event = {**doc, "id": track.id or None, "device_id": self.device_id,
                 "at": iso_utc(time.time())}  # fmt: skip
        if track.source is not None:
            event.setdefault("source", track.source)
        payload = json.dumps(event, separators=(",", ":"), sort_keys=True).encode("utf-8")
        level = logging.WARNING if doc["event"] in ("rejected", "failed") else logging.INFO
        reason = f" ({doc['reason']})" if "reason" in doc else ""
        log.log(level, "command %s: %s%s", track.id or "(no id)", doc["event"], reason)
        self.link.publish(self.events_topic, payload)
        if track.reply_topic:
            self.link.publish(track.reply_topic, payload, correlation=track.correlation)

    # -- following a queued file -------------------------------------------------------
    def follow(self, track: Track, row: Row) -> None:
        """The command's file is the queue row ``row``: report what it is and will be."""
        with self._lock:
            track.row_id = row.id
            self._by_row[row.id] = track
        name = Path(row.path).name
        self.advance(track, "queued", {"file": name, "row_id": row.id})
        if row.state is State.DELIVERED:  # delivered before we looked (a fast upload, a restart)
            self.advance(track, "delivered", {"file": name, "sample_id": row.sample_id,
                                              "duplicate": False})  # fmt: skip
        elif row.state in (State.DEAD, State.GONE, State.HELD):
            self.fail(track, f"not delivered ({row.state.label}): {row.last_error}")

    def on_event(self, event: Event, info: dict[str, Any]) -> None:
        """A ``Stats`` listener: delivery's verdicts, matched to commands by queue row."""
        row_id = info.get("row_id")
        if not isinstance(row_id, int):
            return
        with self._lock:
            track = self._by_row.get(row_id)
            unplaced = (
                track is None
                and event is Event.QUEUED
                and any(t.row_id is None and t.next_stage >= 2 for t in self._by_id.values())
            )
        if unplaced:
            self._place(row_id)
            return
        if track is None:
            return
        name = Path(str(info.get("path", ""))).name
        if event in (Event.DELIVERED, Event.DUPLICATE):
            self.advance(track, "delivered", {"file": name, "sample_id": info.get("sample_id"),
                                              "duplicate": event is Event.DUPLICATE})  # fmt: skip
        elif event in (Event.DEAD, Event.HELD, Event.GONE):
            self.fail(track, f"not delivered ({event.value}): {info.get('reason')}")

    def _place(self, row_id: int) -> None:
        """A file was queued while captured commands wait for their row: is it one of theirs?"""
        row = self.queue.get(row_id)
        command_id = row.metadata.get("command_id") if row is not None else None
        with self._lock:
            track = self._by_id.get(command_id or "")
        if row is not None and track is not None and track.row_id is None:
            self.follow(track, row)

    def _finish(self, track: Track, state: str) -> None:
        track.done = True
        self._by_id.pop(track.id, None)
        if track.row_id is not None:
            self._by_row.pop(track.row_id, None)
        self._journal(track.id, state)

    def _journal(self, command_id: str, state: str, *, row_id: int | None = None) -> None:
        try:
            self.journal.update(command_id, state, row_id=row_id)
        except AgentError as exc:
            log.warning("command journal: %s", exc)
