"""Limits: below the ``[disk]`` floor captures are refused with the reason; huge payloads never arrive."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .harness import DEVICE, AgentRun, Broker, Observer, Sensor, command, wait_until

PREFIX = f"edge-uploader/{DEVICE}"
FLOOR = "\n[disk]\nmin_free_bytes = 4611686018427387904\n"  # more than any disk has


def test_mqtt_command_is_rejected_below_the_floor(
    broker: Broker, observer: Observer, sensor: Sensor, tmp_path: Path,
    make_agent: Callable[..., AgentRun],
) -> None:  # fmt: skip
    agent = make_agent(
        mqtt_port=broker.port, ingestion_url="http://127.0.0.1:9", sensor_path=sensor.path
    )
    agent.config_path.write_text(agent.config_path.read_text() + FLOOR)
    agent.start()
    wait_until(lambda: observer.json_on(f"{PREFIX}/status"), what="online status")
    observer.publish(f"{PREFIX}/capture", command("full-1", duration_ms=200, label="idle"))
    done = observer.wait_event("full-1", ("rejected", "accepted"))
    assert done["event"] == "rejected"
    assert "low disk space" in done["reason"] and "min_free_bytes" in done["reason"]
    captures = tmp_path / "captures"
    assert not captures.exists() or list(captures.iterdir()) == []


def test_manual_capture_is_refused_below_the_floor(
    tmp_path: Path, make_agent: Callable[..., AgentRun]
) -> None:
    agent = make_agent(mqtt_port=None, ingestion_url="http://127.0.0.1:9", sensor_path=None)
    agent.config_path.write_text(agent.config_path.read_text() + FLOOR)
    done = subprocess.run(
        [sys.executable, "-m", "edge_uploader", "capture", "--config", str(agent.config_path),
         "--source", "snap", "--duration-ms", "10"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "capture refused: low disk space" in done.stdout
    assert list((tmp_path / "captures").iterdir()) == []


def test_a_huge_payload_never_reaches_the_agent(
    broker: Broker, observer: Observer, tmp_path: Path, make_agent: Callable[..., AgentRun],
) -> None:  # fmt: skip
    """MQTT 5: the agent asks the broker for at most 256 KiB per packet, so a 2 MiB payload
    is dropped by the broker instead of being read into the agent's memory."""
    agent = make_agent(mqtt_port=broker.port, ingestion_url="http://127.0.0.1:9", sensor_path=None)
    agent.start()
    wait_until(lambda: observer.json_on(f"{PREFIX}/status"), what="online status")
    observer.publish(f"{PREFIX}/capture", b"{" + b" " * (2 * 1024 * 1024) + b"}")
    observer.publish(f"{PREFIX}/capture", command("after-big", source="snap", duration_ms=10))
    first = observer.wait_event("after-big", ("accepted", "rejected"))
    assert first["event"] == "accepted"
    # the huge one produced no event at all: it never arrived
    assert all(e.get("id") == "after-big" for e in observer.json_on(f"{PREFIX}/events"))
