"""Failures through the whole daemon: unplugged sensor, busy source, restarts, kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_uploader.localserver import LocalIngestionServer

from .harness import (
    API_KEY,
    DEVICE,
    HMAC_KEY,
    AgentRun,
    Broker,
    Observer,
    Sensor,
    command,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.mqtt

PREFIX = f"edge-uploader/{DEVICE}"


def names(obs: Observer, cid: str) -> list[str]:
    return [e["event"] for e in obs.events(cid)]


def online(obs: Observer) -> None:
    wait_until(
        lambda: [s for s in obs.json_on(f"{PREFIX}/status") if s["status"] == "online"],
        what="online status",
    )


def test_unplugged_sensor_fails_and_writes_nothing(
    broker: Broker, observer: Observer, sensor: Sensor, ingestion: LocalIngestionServer,
    make_agent: Callable[..., AgentRun], tmp_path: Path,
) -> None:  # fmt: skip
    make_agent(mqtt_port=broker.port, ingestion_url=ingestion.url, sensor_path=sensor.path).start()
    online(observer)
    observer.publish(f"{PREFIX}/capture", command("unplug", duration_ms=3000, label="idle"))
    wait_until(lambda: b"START\n" in sensor.received, what="the capture to start")
    sensor.unplug()
    failed = observer.wait_event("unplug", ("failed",))
    assert "failed during the capture" in failed["reason"] or "no data" in failed["reason"]
    assert names(observer, "unplug") == ["accepted", "failed"]
    assert list((tmp_path / "captures").iterdir()) == []
    assert ingestion.samples() == []
    status = observer.json_on(f"{PREFIX}/status")[-1]
    assert status["status"] == "online"


def test_garbage_from_the_sensor_fails_with_the_line(
    broker: Broker, observer: Observer, sensor: Sensor, ingestion: LocalIngestionServer,
    make_agent: Callable[..., AgentRun], tmp_path: Path,
) -> None:  # fmt: skip
    make_agent(mqtt_port=broker.port, ingestion_url=ingestion.url, sensor_path=sensor.path).start()
    online(observer)
    sensor.line = lambda i: b"1,2\n" if i % 10 == 0 else Sensor.good_line(i)
    observer.publish(f"{PREFIX}/capture", command("garbage", duration_ms=1000))
    failed = observer.wait_event("garbage", ("failed",))
    assert "expected 3" in failed["reason"]
    assert list((tmp_path / "captures").iterdir()) == []


def test_a_busy_source_rejects_the_second_command(
    broker: Broker, observer: Observer, sensor: Sensor, ingestion: LocalIngestionServer,
    make_agent: Callable[..., AgentRun],
) -> None:  # fmt: skip
    make_agent(mqtt_port=broker.port, ingestion_url=ingestion.url, sensor_path=sensor.path).start()
    online(observer)
    observer.publish(f"{PREFIX}/capture", command("long", duration_ms=1500))
    observer.wait_event("long", ("accepted",))
    observer.publish(f"{PREFIX}/capture", command("second", duration_ms=100))
    rejected = observer.wait_event("second", ("rejected",))
    assert rejected["field"] == "source" and rejected["reason"].startswith("busy")
    assert observer.wait_event("long", ("delivered", "failed"))["event"] == "delivered"
    # the id of a busy-rejected command is not burnt: it can be sent again
    observer.publish(f"{PREFIX}/capture", command("second", duration_ms=100))
    assert observer.wait_event("second", ("delivered", "failed"))["event"] == "delivered"


def test_restart_finishes_reporting_on_a_queued_capture(
    broker: Broker, observer: Observer, tmp_path: Path, make_agent: Callable[..., AgentRun],
) -> None:  # fmt: skip
    port = free_port()
    agent = make_agent(
        mqtt_port=broker.port, ingestion_url=f"http://127.0.0.1:{port}", sensor_path=None
    )
    agent.start()
    online(observer)
    observer.publish(
        f"{PREFIX}/capture",
        command("across", source="snap", duration_ms=5, label="dog", session="s-9"),
    )
    observer.wait_event("across", ("queued",))
    agent.stop()
    with LocalIngestionServer(tmp_path / "ing", port=port, api_keys=[API_KEY], quiet=True) as srv:
        agent.start()
        done = observer.wait_event("across", ("delivered", "failed"))
        assert done["event"] == "delivered"
        assert names(observer, "across") == ["accepted", "captured", "queued", "delivered"]
        [sample] = srv.samples()
        assert sample.label == "dog" and sample.metadata["session"] == "s-9"


def test_kill_9_during_delivery_loses_nothing(
    broker: Broker, observer: Observer, tmp_path: Path, make_agent: Callable[..., AgentRun],
) -> None:  # fmt: skip
    """A daemon killed with SIGKILL after queueing: the next run delivers and reports it."""
    port = free_port()
    agent = make_agent(
        mqtt_port=broker.port, ingestion_url=f"http://127.0.0.1:{port}", sensor_path=None
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_uploader", "run", "--config", str(agent.config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        online(observer)
        observer.publish(
            f"{PREFIX}/capture", command("k9", source="snap", duration_ms=5, label="crash")
        )
        observer.wait_event("k9", ("queued",))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # the broker published the last will
        wait_until(
            lambda: observer.json_on(f"{PREFIX}/status")[-1]["status"] == "offline",
            what="the last will",
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    with LocalIngestionServer(tmp_path / "ing", port=port, api_keys=[API_KEY], hmac_key=HMAC_KEY,
                              quiet=True) as srv:  # fmt: skip
        agent.start()
        assert observer.wait_event("k9", ("delivered", "failed"))["event"] == "delivered"
        assert [s.label for s in srv.samples()] == ["crash"]
