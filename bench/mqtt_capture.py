"""Figures for MQTT-triggered capture (not part of the test run).

    .venv/bin/python bench/mqtt_capture.py

1. serial timing: a pty "sensor" writing lines on exact deadlines at several rates; the
   interval_ms the agent measures over 2 s captures, against the truth;
2. command validation: payloads validated per second (valid and hostile);
3. end to end: a real Mosquitto, the local ingestion server and the daemon in this
   process; 20 commands one after another (command source, so timing is the agent's own
   overhead): publish -> accepted, -> captured, -> delivered.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from mqtt.harness import (
    MOSQUITTO,
    AgentRun,
    Broker,
    Observer,
    Sensor,
    agent_toml,
    command,
    free_port,
)

from edge_uploader.config import Sensor as Axis
from edge_uploader.config import SerialSource
from edge_uploader.localserver import LocalIngestionServer
from edge_uploader.sources.command import validate
from edge_uploader.sources.serial import read_serial


def serial_timing() -> None:
    print("serial timing (2 s captures, 3 axes, pty):")
    for hz in (50, 100, 500, 1000):
        sensor = Sensor(hz)
        src = SerialSource(
            "s", sensor.path, 115200, (Axis("x", "u"), Axis("y", "u"), Axis("z", "u")), None
        )
        errors = []
        rows = []
        for _ in range(3):
            r = read_serial(src, 2000, threading.Event())
            errors.append(abs(r.interval_ms - 1000 / hz) / (1000 / hz) * 100)
            rows.append(len(r.values))
        sensor.close()
        print(f"  {hz:5d} Hz: interval error max {max(errors):.3f} %, rows {rows}")


def validation_rate() -> None:
    good = command("c-1", duration_ms=2000, label="idle", session="run-7")
    bad = [
        b"\xff" * 40,
        b"[" * 4000,
        json.dumps({"id": "../x", "source": "a"}).encode(),
        b" " * 9000,
        json.dumps(
            {
                "id": "c",
                "source": "accel",
                "duration_ms": 1,
                "metadata": {f"k{i}": "v" * 50 for i in range(60)},
            }
        ).encode(),
    ]
    for name, payloads in (("valid", [good]), ("hostile", bad)):
        n = 0
        started = time.perf_counter()
        while time.perf_counter() - started < 1.0:
            for raw in payloads:
                try:
                    validate(raw, ("accel", "snap"), 60_000)
                except Exception:
                    pass
                n += 1
        print(f"validation, {name}: {n / (time.perf_counter() - started):,.0f} payloads/s")


def end_to_end() -> None:
    if MOSQUITTO is None:
        print("end to end: skipped (no mosquitto)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "broker").mkdir()
        broker = Broker(root / "broker", free_port(), "allow_anonymous true\n").start()
        server = LocalIngestionServer(root / "ing", api_keys=["ei_mqtt_test_key"], quiet=True)
        server.start()
        path = root / "agent.toml"
        path.write_text(
            agent_toml(root, mqtt_port=broker.port, ingestion_url=server.url, sensor_path=None)
        )
        agent = AgentRun(path)
        agent.start()
        obs = Observer(broker.port)
        obs.subscribe("edge-uploader/#")
        obs.wait_for(lambda: obs.json_on("edge-uploader/pi-0042/status"), what="online")
        stages: dict[str, list[float]] = {"accepted": [], "captured": [], "delivered": []}
        for i in range(20):
            cid = f"bench-{i}"
            t0 = time.perf_counter()
            obs.publish("edge-uploader/pi-0042/capture", command(cid, source="snap", duration_ms=5))
            for stage in stages:
                obs.wait_event(cid, (stage,))
                stages[stage].append((time.perf_counter() - t0) * 1000)
        for stage, ms in stages.items():
            print(
                f"end to end, publish -> {stage}: median {statistics.median(ms):.1f} ms,"
                f" max {max(ms):.1f} ms (20 commands)"
            )
        obs.close()
        agent.stop()
        server.stop()
        broker.stop()


if __name__ == "__main__":
    serial_timing()
    validation_rate()
    end_to_end()
