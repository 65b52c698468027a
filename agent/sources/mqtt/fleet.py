"""The operator's side of the fleet: read every device's heartbeat, follow one command.

``edge-uploader fleet`` connects to the broker with the ``[mqtt]`` settings of its config
file (as ``{client_id}-fleet-<random>``, so it never takes over a device's session) and:

- reads the retained heartbeats on ``{topic_pattern}/status``. Retained messages have no
  end marker, so the reader also subscribes to a private marker topic and publishes one
  message there: Mosquitto sends a subscription's retained messages before it routes the
  client's next publish, so when the marker comes back every retained heartbeat is in
  (the marker's topic is a device topic no device has: ``fleet-view-<random>`` for the
  device id). Where the ACL refuses the marker, the wait is bounded by ``wait_seconds``.
- follows one command's events on ``{topic_pattern}/events``, per device, forward only
  (QoS 1 may repeat an event; a repeat never moves a device back).
"""

from __future__ import annotations

import json
import queue as stdqueue
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ...config import MqttConfig
from ...errors import BrokerError
from ...secrets import Secret
from .link import Message, tls_context

CONNECT_SECONDS = 10.0
STAGES = ("waiting", "accepted", "captured", "queued", "delivered")
TERMINAL = ("delivered", "failed", "rejected")


class FleetClient:
    """A short-lived broker connection: subscribe, publish, read messages from a queue."""

    def __init__(self, config: MqttConfig, password: Secret | None) -> None:
        self.config = config
        self.client_id = f"{config.client_id[:100]}-fleet-{secrets.token_hex(4)}"
        v5 = config.protocol == "5"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, clean_session=None if v5 else True,
        )  # fmt: skip
        if config.username is not None:
            self.client.username_pw_set(config.username, password.reveal() if password else None)
        if config.tls is not None:
            self.client.tls_set_context(tls_context(config))
        self.inbox: stdqueue.Queue[Message] = stdqueue.Queue()
        self._acked: set[int] = set()
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self._refusal: str | None = None
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def connect(self) -> FleetClient:
        cfg = self.config
        try:
            self.client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_seconds)
        except OSError as exc:
            raise BrokerError(f"cannot reach the MQTT broker {cfg.host}:{cfg.port}:"
                              f" {exc.strerror or exc}") from None  # fmt: skip
        self.client.loop_start()
        if not self._connected.wait(CONNECT_SECONDS) or self._refusal:
            self.close()
            why = self._refusal or f"no answer within {CONNECT_SECONDS:g} s"
            raise BrokerError(f"the MQTT broker {cfg.host}:{cfg.port} refused us: {why}")
        return self

    def subscribe(self, topics: Iterable[str]) -> None:
        """Subscribe at QoS 1 and wait for the broker's acknowledgement."""
        rc, mid = self.client.subscribe([(t, 1) for t in topics])
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise BrokerError(f"cannot subscribe: {mqtt.error_string(rc)}")
        with self._cond:  # the acknowledgement may already be in: it is kept in ``_acked``
            if not self._cond.wait_for(lambda: mid in self._acked, CONNECT_SECONDS):
                raise BrokerError("the broker did not acknowledge the subscription")

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        try:
            info.wait_for_publish(CONNECT_SECONDS)
        except (RuntimeError, ValueError) as exc:
            raise BrokerError(f"cannot publish to {topic}: {exc}") from None
        if not info.is_published():
            raise BrokerError(f"the broker did not acknowledge the message to {topic}")

    def next_message(self, timeout: float) -> Message | None:
        try:
            return self.inbox.get(timeout=max(0.0, timeout))
        except stdqueue.Empty:
            return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # paho's thread
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._refusal = str(reason)
        self._connected.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        with self._cond:
            self._acked.add(mid)
            self._cond.notify_all()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self.inbox.put(Message(str(msg.topic), bytes(msg.payload), bool(msg.retain)))


def device_topic(config: MqttConfig, device_id: str, leaf: str) -> str:
    """``{prefix}/{leaf}`` of one device (its ``topic_prefix`` with ``{device_id}`` filled)."""
    return f"{config.topic_pattern.replace('+', device_id)}/{leaf}"


def parse_at(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class Heartbeat:
    """One device's retained status document, as read now."""

    device_id: str
    doc: dict[str, Any]
    age_seconds: float | None

    @property
    def site(self) -> str | None:
        site = self.doc.get("site")
        return site if isinstance(site, str) else None

    @property
    def online(self) -> bool:
        return self.doc.get("status") == "online"

    def fresh(self, stale_seconds: float) -> bool:
        """Online, and heard from within ``stale_seconds``."""
        return self.online and self.age_seconds is not None and self.age_seconds <= stale_seconds


def heartbeat_of(payload: bytes, now: float) -> Heartbeat | None:
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("device_id"), str):
        return None
    at = parse_at(doc.get("at"))
    return Heartbeat(doc["device_id"], doc, None if at is None else max(0.0, now - at))


def read_heartbeats(client: FleetClient, wait_seconds: float) -> dict[str, Heartbeat]:
    """Every retained heartbeat under the config's topic pattern, by device id."""
    cfg = client.config
    status = f"{cfg.topic_pattern}/status"
    marker = f"{cfg.topic_pattern.replace('+', 'fleet-view-' + secrets.token_hex(6))}/capture"
    client.subscribe([status, marker])
    try:
        client.publish(marker, b"")  # an empty payload: never a command
    except BrokerError:
        marker = ""  # refused by the ACL: wait the bound out
    found: dict[str, Heartbeat] = {}
    deadline = time.monotonic() + wait_seconds
    while (msg := client.next_message(deadline - time.monotonic())) is not None:
        if msg.topic == marker:
            break
        beat = heartbeat_of(msg.payload, time.time())
        if beat is not None:
            found[beat.device_id] = beat
    return found


@dataclass
class DeviceProgress:
    device_id: str
    targeted: bool = True
    stage: str = "waiting"
    sample_id: int | None = None
    reason: str | None = None
    at: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> bool:
        return self.stage in TERMINAL

    def as_json(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "targeted": self.targeted, "stage": self.stage,
                "sample_id": self.sample_id, "reason": self.reason}  # fmt: skip


class CommandFollow:
    """The stage each device has reached for one command id."""

    def __init__(self, command_id: str, targets: Iterable[str]) -> None:
        self.command_id = command_id
        self.devices = {d: DeviceProgress(d) for d in targets}

    def on_event(self, payload: bytes) -> DeviceProgress | None:
        """Apply one event; the device's progress if it moved forward, else None."""
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        if not isinstance(doc, dict) or doc.get("id") != self.command_id:
            return None
        device, stage = doc.get("device_id"), doc.get("event")
        if not isinstance(device, str) or not isinstance(stage, str):
            return None
        progress = self.devices.setdefault(device, DeviceProgress(device, targeted=False))
        if progress.finished or stage not in (*STAGES, *TERMINAL):
            return None
        if stage in STAGES and STAGES.index(stage) <= STAGES.index(progress.stage):
            return None
        if stage == "rejected" and progress.stage != "waiting":
            return None  # the same command once more (two routes, a re-send): a duplicate
        progress.stage, progress.at = stage, time.monotonic()
        if isinstance(doc.get("sample_id"), int):
            progress.sample_id = doc["sample_id"]
        if isinstance(doc.get("reason"), str):
            progress.reason = doc["reason"]
        return progress

    @property
    def targeted(self) -> list[DeviceProgress]:
        return [p for p in self.devices.values() if p.targeted]

    @property
    def done(self) -> bool:
        return all(p.finished for p in self.targeted)

    @property
    def succeeded(self) -> bool:
        return all(p.stage == "delivered" for p in self.targeted)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys((*STAGES[1:], "failed"), 0)
        for p in self.targeted:
            if p.stage in ("failed", "rejected"):
                out["failed"] += 1
            elif p.stage != "waiting":
                out[p.stage] += 1
        return out
