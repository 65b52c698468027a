"""End to end: a real Mosquitto, a pty sensor at 100 Hz, the local ingestion server, the daemon."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_uploader.localserver import LocalIngestionServer

from .harness import DEVICE, HMAC_KEY, AgentRun, Broker, Observer, Sensor, command, wait_until

pytestmark = pytest.mark.mqtt

PREFIX = f"edge-uploader/{DEVICE}"
ORDER = ["accepted", "captured", "queued", "delivered"]


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def test_published_command_becomes_a_signed_sample(
    broker: Broker,
    observer: Observer,
    sensor: Sensor,
    ingestion: LocalIngestionServer,
    make_agent: Callable[..., AgentRun],
    tmp_path: Path,
) -> None:
    agent = make_agent(mqtt_port=broker.port, ingestion_url=ingestion.url, sensor_path=sensor.path)
    agent.start()
    status = wait_until(
        lambda: [s for s in observer.json_on(f"{PREFIX}/status") if s["status"] == "online"],
        what="online status",
    )
    assert status[-1]["device_id"] == DEVICE and "queue_depth" in status[-1]

    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "replies/lab-lead"
    props.CorrelationData = b"corr-17"
    observer.subscribe("replies/#")
    observer.publish(
        f"{PREFIX}/capture",
        command(
            "cmd-1", duration_ms=2000, label="idle", session="run-7", metadata={"operator": "ana"}
        ),
        properties=props,
    )
    done = observer.wait_event("cmd-1", ("delivered", "failed", "rejected"), timeout=20)
    events = observer.events("cmd-1")
    assert names(events) == ORDER, events
    captured = events[1]
    assert 195 <= captured["sample_count"] <= 205
    assert abs(captured["frequency_hz"] - 100.0) / 100.0 < 0.05
    assert done["sample_id"] is not None

    # the reply topic got the same events, with the correlation data
    observer.wait_for(lambda: len(observer.json_on("replies/lab-lead")) == 4, what="4 replies")
    replies = [m for m in observer.messages if m.topic == "replies/lab-lead"]
    assert [json.loads(m.payload)["event"] for m in replies] == ORDER
    assert all(m.properties.CorrelationData == b"corr-17" for m in replies)

    [sample] = ingestion.samples()
    assert sample.id == done["sample_id"]
    assert sample.label == "idle"
    assert sample.details["signatureValidate"] is True
    assert abs(sample.details["intervalMs"] - 10.0) / 10.0 < 0.05
    assert sample.details["deviceName"] == DEVICE
    meta = sample.metadata
    assert meta["session"] == "run-7" and meta["site"] == "lab-3" and meta["location"] == "bench-2"
    assert meta["device_id"] == DEVICE and meta["command_id"] == "cmd-1"
    assert meta["operator"] == "ana" and meta["capture_source"] == "accel"
    # the signature verifies independently too
    raw = sample.path.read_bytes()
    sig = json.loads(raw)["signature"]
    expected = hmac.new(HMAC_KEY.encode(), raw.replace(sig.encode(), b"0" * 64), hashlib.sha256)
    assert expected.hexdigest() == sig

    # the heartbeat reflects the delivery soon after it (on change, not only on the timer)
    beat = observer.wait_for(
        lambda: next((s for s in observer.json_on(f"{PREFIX}/status")
                      if s.get("last_delivery_at") and s["queue_depth"] == 0), None),
        what="a heartbeat after the delivery",
    )  # fmt: skip
    assert beat["dead_letters"] == 0 and beat["free_disk_bytes"] > 0
    assert beat["agent_version"] and beat["oldest_pending_age_seconds"] is None
    assert sensor.received.count(b"START\n") == 1 and sensor.received.count(b"STOP\n") == 1

    # a repeated command id is not executed twice
    observer.publish(f"{PREFIX}/capture", command("cmd-1", duration_ms=500, label="idle"))
    rejected = observer.wait_event("cmd-1", ("rejected",))
    assert rejected["field"] == "id" and "duplicate" in rejected["reason"]
    assert len(ingestion.samples()) == 1
    captures = sorted(p.name for p in (tmp_path / "captures").iterdir())
    assert len(captures) == 2 and captures[1] == captures[0] + ".meta.json"


def test_offline_ingestion_queues_then_delivers(
    broker: Broker,
    observer: Observer,
    sensor: Sensor,
    tmp_path: Path,
    make_agent: Callable[..., AgentRun],
) -> None:
    from .harness import API_KEY, free_port

    port = free_port()
    agent = make_agent(
        mqtt_port=broker.port, ingestion_url=f"http://127.0.0.1:{port}", sensor_path=sensor.path
    )
    agent.start()
    wait_until(lambda: observer.json_on(f"{PREFIX}/status"), what="online status")
    observer.publish(f"{PREFIX}/capture", command("off-1", duration_ms=500, label="idle"))
    observer.wait_event("off-1", ("queued",))
    time.sleep(0.5)  # a few failed attempts against the closed port
    assert names(observer.events("off-1")) == ["accepted", "captured", "queued"]
    wait_until(
        lambda: observer.json_on(f"{PREFIX}/status")[-1]["queue_depth"] == 1,
        what="heartbeat shows the backlog",
    )

    server = LocalIngestionServer(
        tmp_path / "late", port=port, api_keys=[API_KEY], hmac_key=HMAC_KEY, quiet=True
    )
    with server:
        assert agent.service is not None and agent.service.delivery is not None
        agent.service.delivery.retry_now()
        done = observer.wait_event("off-1", ("delivered", "failed"), timeout=20)
        assert done["event"] == "delivered"
        assert [s.label for s in server.samples()] == ["idle"]


def test_broker_restart_reconnects_and_serves_the_next_command(
    broker: Broker,
    sensor: Sensor,
    ingestion: LocalIngestionServer,
    make_agent: Callable[..., AgentRun],
) -> None:
    agent = make_agent(mqtt_port=broker.port, ingestion_url=ingestion.url, sensor_path=sensor.path)
    agent.start()
    first = Observer(broker.port)
    first.subscribe(f"{PREFIX}/#")
    wait_until(lambda: first.json_on(f"{PREFIX}/status"), what="online status")
    first.close()
    broker.restart()  # persistence off: the broker forgets every session and subscription

    obs = Observer(broker.port)
    obs.subscribe(f"{PREFIX}/#")
    try:
        wait_until(
            lambda: [s for s in obs.json_on(f"{PREFIX}/status") if s["status"] == "online"],
            timeout=15,
            what="the agent to reconnect",
        )
        obs.publish(f"{PREFIX}/capture", command("after-restart", source="snap", duration_ms=10))
        done = obs.wait_event("after-restart", ("delivered", "failed", "rejected"))
        assert done["event"] == "delivered", obs.events("after-restart")
    finally:
        obs.close()


def test_last_will_and_clean_stop_mark_the_device_offline(
    broker: Broker,
    observer: Observer,
    ingestion: LocalIngestionServer,
    make_agent: Callable[..., AgentRun],
) -> None:
    agent = make_agent(mqtt_port=broker.port, ingestion_url=ingestion.url, sensor_path=None)
    agent.start()
    wait_until(lambda: observer.json_on(f"{PREFIX}/status"), what="online status")
    agent.stop()
    last = wait_until(
        lambda: [s for s in observer.json_on(f"{PREFIX}/status") if s["status"] == "offline"],
        what="offline status",
    )
    assert last[-1]["reason"] == "stopped"
    # retained: a dashboard connecting later still sees it
    late = Observer(broker.port)
    late.subscribe(f"{PREFIX}/status")
    try:
        msg = wait_until(lambda: late.messages, what="retained status")[0]
        assert msg.retain and json.loads(msg.payload)["status"] == "offline"
    finally:
        late.close()


def test_mqtt_311_works_too(
    broker: Broker,
    ingestion: LocalIngestionServer,
    make_agent: Callable[..., AgentRun],
) -> None:
    agent = make_agent(
        mqtt_port=broker.port,
        ingestion_url=ingestion.url,
        sensor_path=None,
        mqtt_extra='protocol = "3.1.1"\n',
    )
    agent.start()
    obs = Observer(broker.port, protocol=mqtt.MQTTv311)
    obs.subscribe(f"{PREFIX}/#")
    try:
        wait_until(lambda: obs.json_on(f"{PREFIX}/status"), what="online status")
        obs.publish(f"{PREFIX}/capture", command("v311", source="snap", duration_ms=5, label="cat"))
        assert obs.wait_event("v311", ("delivered", "failed"))["event"] == "delivered"
        assert names(obs.events("v311")) == ORDER
    finally:
        obs.close()
