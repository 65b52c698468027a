"""The daemon's MQTT part: capture commands in, events and the fleet status out.

The walk of one command (each step once)::

    link (paho's thread) ─► inbox ─► command thread: decode and validate (sources.command),
    journal claim (the id never runs twice), plan: name and tags (sources.capture),
    "accepted" ─► capture thread: take the capture, "captured", claim the path from the
    watcher, commit (sidecar, then rename), submit to intake with the tags ─► intake's
    answer gives the queue row, "queued" ─► delivery's event for that row, "delivered"

Captures run on their own threads, one per source at a time. Command ids are remembered
in a durable journal (``store.journal``) so a re-sent command never runs twice, and a
restart finishes reporting on captures a previous run had started. Whatever arrives, the
handler logs and answers, never raises. Event order and the following of each command by
its queue row are ``stages``'s; the retained status document is ``status``'s.
"""

from __future__ import annotations

import logging
import queue as stdqueue
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from ...config import Config, MqttConfig
from ...config.mqtt import topic_ok
from ...core.intake import Item
from ...core.runtime import Runtime
from ...core.tagger import Tagged
from ...errors import AgentError, CaptureError, InputError
from ...loop import Loop
from ...store.journal import CommandJournal, Entry
from ...store.queue import Row
from ..capture import Capturer, Plan, clean_stale
from ..command import decode, id_of, validate_object
from .link import Link, Message, MqttLink
from .stages import STAGES, Stages, Track
from .status import StatusPublisher, encode, offline_document, online_document

log = logging.getLogger(__name__)

MAX_WAITING_COMMANDS = 64
STOP_CAPTURES_SECONDS = 3.0


class _Commands(Loop):
    """The command thread: one message at a time, in arrival order."""

    def __init__(self, handle: Any) -> None:
        super().__init__("mqtt-commands")
        self.handle = handle
        self.inbox: stdqueue.Queue[Message | None] = stdqueue.Queue(MAX_WAITING_COMMANDS)

    def step(self) -> float | None:
        msg = self.inbox.get()
        if msg is not None:
            try:
                self.handle(msg)
            except Exception:
                log.exception("MQTT: a command could not be handled")
        return 0.0

    def interrupt(self) -> None:
        self.inbox.put(None)


class MqttComponent:
    name = "mqtt"

    def __init__(self, config: Config, *, link: Link | None = None) -> None:
        assert config.mqtt is not None
        self.config = config
        self.mqtt: MqttConfig = config.mqtt
        self._link_override = link
        self.capturer: Capturer | None = None
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._commands = _Commands(self.handle)
        self._undo: list[Callable[[], None]] = []
        """How to stop what ``start`` started, in start order (a start may fail half-way)."""

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, runtime: Runtime) -> None:
        cfg = self.config
        self.runtime = runtime
        password = self.mqtt.password.load_optional()
        if cfg.capture is not None:
            self.capturer = Capturer(cfg, cfg.ingestion.hmac_key.load_optional(),
                                     disk_reason=runtime.capture_refusal)  # fmt: skip
            longest = max((getattr(s, "timeout_seconds", 0.0) for s in
                           cfg.capture.sources.values()), default=0.0)  # fmt: skip
            clean_stale(cfg.capture.dir, cfg.capture.max_duration_ms / 1000 + longest + 300)
        self.journal = journal = CommandJournal(runtime.queue.path.parent / "commands.db")
        self._undo.append(journal.close)
        self.link = link = self._link_override or MqttLink(
            self.mqtt, password=password, on_message=self._on_message,
            will=encode(offline_document(cfg.device_id, "connection lost", site=self.mqtt.site)),
            on_connected=lambda: self.status.changed(now_too=True),
        )  # fmt: skip
        self.stages = Stages(link, self.mqtt.events_topic, cfg.device_id, journal, runtime.queue)
        self.status = StatusPublisher(
            self.mqtt.heartbeat_seconds, self._status_document,
            lambda payload: link.publish(self.mqtt.status_topic, payload, retain=True),
            lambda: link.connected,
        )  # fmt: skip
        for listener in (self.stages.on_event, self.status.on_event):
            runtime.stats.subscribe(listener)
            self._undo.append(partial(runtime.stats.unsubscribe, listener))
        self._resume()
        self._commands.start()
        self._undo.append(lambda: self._commands.stop(2.0))
        self.status.start()
        self._undo.append(self.status.stop)
        link.start()
        site = self.mqtt.site

        def stopped() -> bytes:
            return encode(offline_document(cfg.device_id, "stopped", time.time(), site=site))

        self._undo.append(lambda: link.stop(stopped()))

    def stop(self) -> None:
        self._stopping.set()
        if self.capturer is not None:
            self.capturer.stop()
        deadline = time.monotonic() + STOP_CAPTURES_SECONDS
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))
        while self._undo:
            try:
                self._undo.pop()()
            except Exception:
                log.exception("stopping the MQTT component failed")

    def _status_document(self) -> dict[str, Any]:
        cfg, queue = self.config, self.runtime.queue
        disk = cfg.capture.dir if cfg.capture else queue.path.parent
        return online_document(queue, self.runtime.stats, cfg.device_id, disk, len(self._threads),
                               link=cfg.ingestion.link, site=self.mqtt.site)  # fmt: skip

    # -- commands ------------------------------------------------------------------------
    def _on_message(self, msg: Message) -> None:
        """paho's thread: hand over and return at once."""
        try:
            self._commands.inbox.put_nowait(msg)
        except stdqueue.Full:
            log.warning("MQTT: %d commands waiting; dropped one from %s", MAX_WAITING_COMMANDS,
                        msg.topic)  # fmt: skip

    def handle(self, msg: Message) -> None:
        """Validate one command and start its capture, or reject it with the reason."""
        reply = msg.response_topic
        if reply is not None and not topic_ok(reply):
            log.warning("MQTT: ignoring an unusable response topic %r", reply[:80])
            reply = None
        track = Track("", None, reply, msg.correlation)
        if self._stopping.is_set():
            return
        try:
            data: dict[str, Any] | InputError = decode(msg.payload)  # once: id and command
        except InputError as exc:
            data = exc
        if isinstance(data, dict):
            track.id = id_of(data) or ""
        capturer = self.capturer
        if capturer is None or not capturer.capture_config.sources:
            self.stages.reject(track, "source", "no capture sources are configured on this device")
            return
        try:
            if isinstance(data, InputError):
                raise data
            cmd = validate_object(data, capturer.capture_config.sources,
                                  capturer.capture_config.max_duration_ms)  # fmt: skip
            if self.mqtt.is_group_topic(msg.topic) and cmd.session is None:
                # one event on many devices: one group (":" is not in the session's rule)
                cmd = replace(cmd, session=cmd.id.replace(":", "-"))
            plan = capturer.plan(cmd)
        except InputError as exc:
            self.stages.reject(track, exc.field, exc.message)
            return
        track.source = cmd.source
        if self._refused(msg, plan, track):
            return
        self.stages.open(track)
        self.stages.advance(
            track,
            "accepted",
            {
                "source": cmd.source,
                "duration_ms": cmd.duration_ms,
                "label": cmd.label,
                "session": cmd.session,
                "scope": self._scope(msg.topic),
            },
        )
        thread = threading.Thread(target=self._capture, args=(plan, track),
                                  name=f"capture-{cmd.source}", daemon=True)  # fmt: skip
        self._threads.add(thread)
        thread.start()

    def _scope(self, topic: str) -> str:
        """Which audience the command was sent to: ``device``, ``site`` or ``fleet``."""
        if topic == self.mqtt.site_topic:
            return "site"
        return "fleet" if topic == self.mqtt.fleet_topic else "device"

    def _refused(self, msg: Message, plan: Plan, track: Track) -> bool:
        """Reject a retained copy, a refused disk, a busy source or a known id; True if so.
        On False the source is reserved for this command and its id is in the journal."""
        cmd, capturer = plan.command, self.capturer
        assert capturer is not None
        if msg.retain:
            # Remembered apart from the live ids ("/" is never in an id): the retained copy
            # is refused once, and the same command sent without retain, as the refusal
            # advises, is a new command, not a duplicate.
            key = f"retained/{cmd.id}"
            if self.journal.claim(key, cmd.source, track.reply_topic, track.correlation,
                                  "rejected") is None:  # fmt: skip
                self.stages.reject(track, "", "a retained message is not a command (publish"
                                   " without retain)")  # fmt: skip
            return True
        refused = capturer.refusal()
        if refused is not None:
            self.stages.reject(track, "", f"capture refused: {refused}")
            return True
        if not capturer.try_reserve(cmd.source):
            self.stages.reject(
                track, "source", f"busy: {cmd.source} is capturing for another command"
            )
            return True
        try:
            known = self.journal.claim(cmd.id, cmd.source, track.reply_topic, track.correlation)
        except AgentError as exc:
            capturer.release(cmd.source)
            self.stages.reject(track, "", f"cannot record the command: {exc}")
            return True
        if known is not None:
            capturer.release(cmd.source)
            self.stages.reject(track, "id", f"duplicate: command {cmd.id} was already"
                               f" received ({known.state})")  # fmt: skip
            return True
        return False

    def _capture(self, plan: Plan, track: Track) -> None:
        assert self.capturer is not None
        try:
            try:
                captured = self.capturer.capture(plan)
                track.path = str(captured.path)
                self.journal.update(track.id, "captured", path=track.path)
                self.runtime.claim(captured.path)  # submitted here, not by the watcher
                captured.commit()
            except (CaptureError, AgentError) as exc:
                self.stages.fail(track, str(exc))
                return
            except Exception as exc:
                log.exception("capture %s failed unexpectedly", track.id)
                self.stages.fail(track, f"internal error: {type(exc).__name__}: {exc}")
                return
            finally:
                self.capturer.release(plan.command.source)
            self.stages.advance(track, "captured", {
                "file": captured.path.name, "bytes": captured.size,
                "sample_count": captured.sample_count, "frequency_hz": captured.frequency_hz,
                "interval_ms": captured.interval_ms,
            })  # fmt: skip
            self._submit(track, captured.path, captured.tagged)
        finally:
            self._threads.discard(threading.current_thread())
            self.status.changed()

    def _submit(self, track: Track, path: Path, tagged: Tagged | None = None) -> None:
        """Queue the capture's file; intake's answer names its row (or why it has none)."""

        def queued(row_id: int | None, reason: str | None) -> None:
            if row_id is not None:
                row = self.runtime.queue.get(row_id)
                if row is not None:
                    self.stages.follow(track, row)
            elif not path.exists():
                self.stages.fail(track, f"not queued: {reason}")
            else:  # not recorded (a full disk): the scan queues it; its event finds us
                log.warning("command %s: %s is not queued yet (%s)", track.id, path, reason)

        watch = self.config.capture.watch if self.config.capture else None
        self.runtime.submit(Item(path=path, watch=watch, tagged=tagged, on_queued=queued))

    def _resume(self) -> None:
        """Finish reporting on commands a previous run accepted (after a crash or stop)."""
        for entry in self.journal.open_entries():
            track = Track(entry.id, entry.source, entry.reply_topic, entry.correlation,
                          entry.path, next_stage=STAGES.index(entry.state) + 1)  # fmt: skip
            self.stages.open(track)
            row = self._row_of(entry)
            if row is not None:
                self.stages.follow(track, row)
            elif entry.path is not None and Path(entry.path).exists():
                self._submit(track, Path(entry.path))  # tagged again from its sidecar
            else:
                self.stages.fail(track, "interrupted: the agent stopped during the capture")

    def _row_of(self, entry: Entry) -> Row | None:
        queue = self.runtime.queue
        if entry.row_id is not None:
            return queue.get(entry.row_id)
        if entry.path is not None and not Path(entry.path).exists():
            # a journal of an earlier version, or a crash between queueing and journaling
            return queue.latest_for_path(entry.path)
        return None
