"""The daemon's MQTT part: capture commands in, events and the heartbeat out.

For one command the events on ``{prefix}/events`` (and on the MQTT 5 response topic,
with the correlation data, when the command names one) are, in this order::

    accepted -> captured -> queued -> delivered          or, at any point, failed
    rejected                                             (invalid, duplicate id, busy)

Each event is ``{"event": ..., "id": <command id>, "device_id": ..., "at": ...}`` plus
its facts (``field`` and ``reason`` for rejected; ``reason`` for failed; ``file``,
``sample_count``, ``frequency_hz``, ``interval_ms`` for captured; ``row_id`` for queued;
``sample_id`` for delivered). Stages reach us on different threads (the capture worker,
intake, the upload dispatcher), so each command keeps a small re-order buffer: a stage
is published only after the ones before it.

Captures run on their own threads, one per source at a time. Command ids are
remembered in a durable journal so a re-sent command never runs twice, and a restart
finishes reporting on captures a previous run had started. Payloads are validated by
``agent.capture_command``; whatever arrives, the handler logs and answers, never raises.
"""

from __future__ import annotations

import json
import logging
import queue as stdqueue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...config import Config, MqttConfig, WatchConfig
from ...config.mqtt import topic_ok
from ...core.intake import Item
from ...core.tagger import iso_utc
from ...errors import AgentError, CaptureError, InputError
from ...events import Event
from ...store.journal import CommandJournal
from ...store.queue import State
from ..capture import Captured, Capturer, check_command_tags, clean_stale
from .command import Command, command_id_of, validate
from .link import Link, Message, MqttLink
from .status import Heartbeat, encode, offline_document, online_document

if TYPE_CHECKING:
    from ...daemon.components import Component
    from ...daemon.lifecycle import Service

log = logging.getLogger(__name__)

STAGES = ("accepted", "captured", "queued", "delivered")
MAX_WAITING_COMMANDS = 64
STOP_CAPTURES_SECONDS = 3.0


@dataclass
class Track:
    """One command on its way through the stages."""

    id: str
    source: str | None
    reply_topic: str | None = None
    correlation: bytes | None = None
    path: str | None = None
    next_stage: int = 0
    held: dict[int, dict[str, Any]] = field(default_factory=dict)
    done: bool = False


def mqtt_components(config: Config) -> list[Component]:
    """The MQTT component when the config has an ``[mqtt]`` section."""
    return [MqttComponent(config)] if config.mqtt is not None else []


class MqttComponent:
    name = "mqtt"

    def __init__(self, config: Config, *, link: Link | None = None) -> None:
        assert config.mqtt is not None
        self.config = config
        self.mqtt: MqttConfig = config.mqtt
        self._link_override = link
        self.capturer: Capturer | None = None
        self.watch: WatchConfig | None = None
        self._tracks: dict[str, Track] = {}
        self._by_path: dict[str, Track] = {}
        self._lock = threading.RLock()
        self._inbox: stdqueue.Queue[Message | None] = stdqueue.Queue(MAX_WAITING_COMMANDS)
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------
    def _disk_reason(self, folder: Path) -> str | None:
        """The daemon's disk floor, read at the time of use (a reload replaces the guard)."""
        service = getattr(self, "service", None)
        disk = service.disk if service is not None else None
        return disk.reason(folder) if disk is not None else None

    def start(self, service: Service) -> None:
        cfg = self.config
        assert service.queue is not None
        self.service = service
        self.queue = service.queue
        self.stats = service.stats
        password = self.mqtt.password.load_optional()
        if cfg.capture is not None:
            self.capturer = Capturer(
                cfg, cfg.ingestion.hmac_key.load_optional(), disk_reason=self._disk_reason
            )
            self.watch = next((w for w in cfg.watches if w.path == cfg.capture.dir), None)
            sources = cfg.capture.sources.values()
            longest = max((getattr(s, "timeout_seconds", 0.0) for s in sources), default=0.0)
            clean_stale(cfg.capture.dir, cfg.capture.max_duration_ms / 1000 + longest + 300)
        self.journal = CommandJournal(self.queue.path.parent / "commands.db")
        self.link: Link = self._link_override or MqttLink(
            self.mqtt,
            password=password,
            will=encode(offline_document(cfg.device_id, "connection lost")),
            on_message=self._on_message,
            on_connected=self._on_connected,
        )
        self.heartbeat = Heartbeat(
            self.mqtt.heartbeat_seconds,
            self._status,
            lambda payload: self.link.publish(self.mqtt.status_topic, payload, retain=True),
            lambda: self.link.connected,
        )
        self.stats.subscribe(self._on_event)
        self.stats.subscribe(self.heartbeat.on_event)
        self._resume()
        worker = threading.Thread(target=self._commands, name="mqtt-commands", daemon=True)
        worker.start()
        self._worker = worker
        self.heartbeat.start()
        self.link.start()

    def stop(self) -> None:
        self._stopping.set()
        try:
            if self.capturer is not None:
                self.capturer.stop()
            deadline = time.monotonic() + STOP_CAPTURES_SECONDS
            for t in list(self._threads):
                t.join(max(0.0, deadline - time.monotonic()))
            # A start() that failed half-way (a bad TLS file) left some parts unbuilt.
            worker = getattr(self, "_worker", None)
            if worker is not None:
                self._inbox.put(None)
                worker.join(2)
            heartbeat: Heartbeat | None = getattr(self, "heartbeat", None)
            if heartbeat is not None:
                heartbeat.stop()
                self.stats.unsubscribe(heartbeat.on_event)
            if hasattr(self, "stats"):
                self.stats.unsubscribe(self._on_event)
            link: Link | None = getattr(self, "link", None)
            if link is not None:
                link.stop(encode(offline_document(self.config.device_id, "stopped", time.time())))
            journal: CommandJournal | None = getattr(self, "journal", None)
            if journal is not None:
                journal.close()
        except Exception:
            log.exception("stopping the MQTT component failed")

    def _on_connected(self) -> None:
        self.heartbeat.changed(now_too=True)

    def _status(self) -> dict[str, Any]:
        cfg = self.config
        disk = cfg.capture.dir if cfg.capture else self.queue.path.parent
        return online_document(self.queue, self.stats, cfg.device_id, disk, len(self._threads))

    # -- commands ------------------------------------------------------------------------
    def _on_message(self, msg: Message) -> None:
        """paho's thread: hand over and return at once."""
        try:
            self._inbox.put_nowait(msg)
        except stdqueue.Full:
            log.warning(
                "MQTT: %d commands waiting; dropped one from %s", MAX_WAITING_COMMANDS, msg.topic
            )

    def _commands(self) -> None:
        while True:
            msg = self._inbox.get()
            if msg is None:
                return
            try:
                self.handle(msg)
            except Exception:
                log.exception("MQTT: a command could not be handled")

    def handle(self, msg: Message) -> None:
        """Validate one command and start its capture, or reject it with the reason."""
        reply = msg.response_topic
        if reply is not None and not topic_ok(reply):
            log.warning("MQTT: ignoring an unusable response topic %r", reply[:80])
            reply = None
        track = Track(command_id_of(msg.payload) or "", None, reply, msg.correlation)
        if self._stopping.is_set():
            return
        capturer = self.capturer
        if capturer is None or not capturer.capture_config.sources:
            self._reject(track, "source", "no capture sources are configured on this device")
            return
        try:
            cmd = validate(
                msg.payload,
                capturer.capture_config.sources,
                capturer.capture_config.max_duration_ms,
            )
            check_command_tags(capturer, cmd)
        except InputError as exc:
            self._reject(track, exc.field, exc.message)
            return
        track.source = cmd.source
        if msg.retain:
            # Remembered apart from the live ids ("/" is never in an id): the retained copy
            # is refused once, and the same command sent without retain, as the refusal
            # advises, is a new command, not a duplicate.
            key = f"retained/{cmd.id}"
            if self.journal.claim(key, cmd.source, reply, msg.correlation, "rejected") is None:
                self._reject(
                    track, "", "a retained message is not a command (publish without retain)"
                )
            return
        refused = capturer.refusal()
        if refused is not None:
            self._reject(track, "", f"capture refused: {refused}")
            return
        if not capturer.try_reserve(cmd.source):
            self._reject(track, "source", f"busy: {cmd.source} is capturing for another command")
            return
        try:
            known = self.journal.claim(cmd.id, cmd.source, reply, msg.correlation)
        except AgentError as exc:
            capturer.release(cmd.source)
            self._reject(track, "", f"cannot record the command: {exc}")
            return
        if known is not None:
            capturer.release(cmd.source)
            self._reject(
                track, "id", f"duplicate: command {cmd.id} was already received ({known.state})"
            )
            return
        with self._lock:
            self._tracks[cmd.id] = track
        self._advance(
            track,
            "accepted",
            {
                "source": cmd.source,
                "duration_ms": cmd.duration_ms,
                "label": cmd.label,
                "session": cmd.session,
            },
        )
        thread = threading.Thread(
            target=self._capture,
            args=(capturer, cmd, track),
            name=f"capture-{cmd.source}",
            daemon=True,
        )
        self._threads.add(thread)
        thread.start()

    def _capture(self, capturer: Capturer, cmd: Command, track: Track) -> None:
        captured: Captured | None = None
        try:
            try:
                captured = capturer.capture(cmd)
                path = str(captured.path)
                with self._lock:
                    track.path = path
                    self._by_path[path] = track
                self.journal.update(cmd.id, "captured", path=path)
                captured.commit()
            except CaptureError as exc:
                self._fail(track, str(exc))
                return
            except Exception as exc:
                log.exception("capture %s failed unexpectedly", cmd.id)
                self._fail(track, f"internal error: {type(exc).__name__}: {exc}")
                return
            finally:
                capturer.release(cmd.source)
            self._advance(
                track,
                "captured",
                {
                    "file": captured.path.name,
                    "bytes": captured.size,
                    "sample_count": captured.sample_count,
                    "frequency_hz": captured.frequency_hz,
                    "interval_ms": captured.interval_ms,
                },
            )
            self.service.submit(Item(path=captured.path, watch=self.watch))
        finally:
            self._threads.discard(threading.current_thread())
            self.heartbeat.changed()

    # -- stages --------------------------------------------------------------------------
    def _advance(self, track: Track, stage: str, facts: dict[str, Any]) -> None:
        """Publish ``stage`` once every earlier stage is out (a per-command re-order buffer)."""
        index = STAGES.index(stage)
        with self._lock:
            if track.done or index < track.next_stage:
                return
            track.held[index] = {"event": stage, **facts}
            while track.next_stage in track.held:
                self._send(track, track.held.pop(track.next_stage))
                track.next_stage += 1
            if track.next_stage == len(STAGES):
                self._finish(track, "delivered")
        if stage in ("queued",):
            self._journal(track.id, stage)

    def _fail(self, track: Track, reason: str) -> None:
        with self._lock:
            if track.done:
                return
            self._send(track, {"event": "failed", "reason": reason})
            self._finish(track, "failed")

    def _finish(self, track: Track, state: str) -> None:
        track.done = True
        self._tracks.pop(track.id, None)
        if track.path is not None:
            self._by_path.pop(track.path, None)
        self._journal(track.id, state)

    def _journal(self, command_id: str, state: str) -> None:
        try:
            self.journal.update(command_id, state)
        except AgentError as exc:
            log.warning("command journal: %s", exc)

    def _reject(self, track: Track, field_name: str, reason: str) -> None:
        self._send(track, {"event": "rejected", "field": field_name or None, "reason": reason})

    def _send(self, track: Track, doc: dict[str, Any]) -> None:
        event = {
            **doc,
            "id": track.id or None,
            "device_id": self.config.device_id,
            "at": iso_utc(time.time()),
        }
        if track.source is not None:
            event.setdefault("source", track.source)
        payload = json.dumps(event, separators=(",", ":"), sort_keys=True).encode("utf-8")
        level = logging.WARNING if doc["event"] in ("rejected", "failed") else logging.INFO
        log.log(
            level,
            "command %s: %s%s",
            track.id or "(no id)",
            doc["event"],
            f" ({doc['reason']})" if "reason" in doc else "",
        )
        self.link.publish(self.mqtt.events_topic, payload)
        if track.reply_topic:
            self.link.publish(track.reply_topic, payload, correlation=track.correlation)

    # -- what the rest of the agent reports ------------------------------------------------
    def _on_event(self, event: Event, info: dict[str, Any]) -> None:
        path = info.get("path")
        if path is None:
            return
        with self._lock:
            track = self._by_path.get(str(path))
        if track is None:
            return
        name = Path(str(path)).name
        if event is Event.QUEUED:
            row = self.queue.latest_for_path(str(path))
            self._advance(track, "queued", {"file": name, "row_id": row.id if row else None})
        elif event in (Event.DELIVERED, Event.DUPLICATE):
            self._advance(
                track,
                "delivered",
                {
                    "file": name,
                    "sample_id": info.get("sample_id"),
                    "duplicate": event is Event.DUPLICATE,
                },
            )
        elif event in (Event.DEAD, Event.HELD, Event.GONE):
            self._fail(track, f"not delivered ({event.value}): {info.get('reason')}")

    def _resume(self) -> None:
        """Finish reporting on commands a previous run accepted (after a crash or stop)."""
        for entry in self.journal.open_entries():
            track = Track(
                entry.id,
                entry.source,
                entry.reply_topic,
                entry.correlation,
                entry.path,
                next_stage=STAGES.index(entry.state) + 1,
            )
            if entry.path is None or not (
                Path(entry.path).exists() or self.queue.latest_for_path(entry.path)
            ):
                self._fail(track, "interrupted: the agent stopped during the capture")
                continue
            with self._lock:
                self._tracks[entry.id] = track
                self._by_path[entry.path] = track
            row = self.queue.latest_for_path(entry.path)
            if row is None:
                continue  # the reconciliation scan queues it; its QUEUED event moves us on
            self._advance(track, "queued", {"file": Path(row.path).name, "row_id": row.id})
            if row.state is State.DELIVERED:
                facts = {"file": Path(row.path).name, "sample_id": row.sample_id}
                self._advance(track, "delivered", {**facts, "duplicate": False})
            elif row.state in (State.DEAD, State.GONE, State.HELD):
                self._fail(track, f"not delivered ({row.state.label}): {row.last_error}")
