"""``edge-uploader fleet status`` and ``fleet capture`` as processes against real agents.

Three agent processes on one Mosquitto and the local ingestion server; the CLI runs as its
own process with an operator's config naming only the broker.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_uploader.config import load_config
from edge_uploader.core.tagger import iso_utc
from edge_uploader.localserver import LocalIngestionServer
from edge_uploader.sources.mqtt.fleet import FleetClient, read_heartbeats

from .fleet_harness import Fleet
from .harness import Broker, Observer

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


def ops_config(tmp_path: Path, broker: Broker) -> Path:
    path = tmp_path / "ops.toml"
    path.write_text(f'[device]\nid = "ops"\n[queue]\npath = "ops-queue.db"\n'
                    f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n')  # fmt: skip
    return path


def fleet_cli(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_uploader", "fleet", *args, "--config", str(config)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def ghost(obs: Observer) -> None:
    """A device that went silent an hour ago without a last will (power cut, no broker)."""
    doc = {"status": "online", "device_id": "ghost-1", "site": "lab-3", "agent_version": "0.0.9",
           "at": iso_utc(time.time() - 3600), "queue_depth": 7}  # fmt: skip
    obs.publish("edge-uploader/ghost-1/status", json.dumps(doc), retain=True)


def test_status_lists_every_device_and_marks_the_silent_one_stale(
    fleet: tuple[Fleet, Observer], broker: Broker, tmp_path: Path
) -> None:
    _, obs = fleet
    ghost(obs)
    config = ops_config(tmp_path, broker)
    done = fleet_cli(config, "status", "--json")
    assert done.returncode == 0, done.stderr
    rows = {r["device_id"]: r for r in json.loads(done.stdout)["devices"]}
    assert set(rows) == {"lab3-a", "lab3-b", "lab9-a", "ghost-1"}
    assert rows["lab9-a"]["site"] == "lab-9" and rows["lab9-a"]["online"]
    assert not rows["lab3-a"]["stale"] and rows["lab3-a"]["backlog"] == 0
    assert rows["lab3-a"]["heartbeat_age_seconds"] < 60
    assert rows["ghost-1"]["stale"] and rows["ghost-1"]["backlog"] == 7

    table = fleet_cli(config, "status", "--site", "lab-3")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["device", "site", "online"]
    assert [ln.split()[0] for ln in lines[1:4]] == ["ghost-1", "lab3-a", "lab3-b"]
    assert "STALE" in lines[1] and "lab9-a" not in table.stdout
    assert lines[-1] == "3 device(s): 2 online, 1 stale, 0 offline"


def test_site_capture_follows_each_device_to_delivery(
    fleet: tuple[Fleet, Observer], broker: Broker, ingestion: LocalIngestionServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    _, obs = fleet
    ghost(obs)  # stale: not a target, so it cannot hold the command up
    done = fleet_cli(ops_config(tmp_path, broker), "capture", "--site", "lab-3", "--source",
                     "snap", "--duration-ms", "5", "--label", "knock", "--wait-seconds", "30")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("command fleet-") and lines[0].endswith("sent to 2 device(s)")
    assert any("lab3-a: accepted" in ln for ln in lines)
    assert any("lab3-b: delivered sample" in ln for ln in lines)
    assert lines[-1].startswith("done: 2/2 delivered")
    samples = ingestion.samples()
    assert sorted(s.metadata["device_id"] for s in samples) == ["lab3-a", "lab3-b"]
    sessions = {s.metadata["session"] for s in samples}
    assert len(sessions) == 1 and next(iter(sessions)).startswith("fleet-")


def test_capture_exits_1_when_a_device_does_not_deliver(
    fleet: tuple[Fleet, Observer], broker: Broker, ingestion: LocalIngestionServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    done = fleet_cli(ops_config(tmp_path, broker), "capture", "--device", "lab9-a", "absent-1",
                     "--source", "snap", "--duration-ms", "5", "--label", "door", "--session",
                     "door-3", "--wait-seconds", "5", "--json")  # fmt: skip
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    stages = {d["device_id"]: d["stage"] for d in doc["devices"]}
    assert stages == {"lab9-a": "delivered", "absent-1": "waiting"} and not doc["delivered"]
    assert doc["session"] == "door-3"
    assert [s.metadata["session"] for s in ingestion.samples()] == ["door-3"]
    # a wrong source is rejected by the device, and that is a failure too
    bad = fleet_cli(ops_config(tmp_path, broker), "capture", "--all", "--source", "nope",
                    "--duration-ms", "5", "--label", "x", "--json")  # fmt: skip
    assert bad.returncode == 1
    assert {d["stage"] for d in json.loads(bad.stdout)["devices"]} == {"rejected"}


def test_on_a_terminal_the_progress_is_a_table_redrawn_in_place(
    fleet: tuple[Fleet, Observer], broker: Broker, tmp_path: Path
) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_uploader", "fleet", "capture", "--config",
         str(ops_config(tmp_path, broker)), "--site", "lab-3", "--source", "snap",
         "--duration-ms", "5", "--label", "tty", "--wait-seconds", "30"],
        stdout=slave, stderr=subprocess.STDOUT,
    )  # fmt: skip
    os.close(slave)
    out = bytearray()
    with contextlib.suppress(OSError):  # EIO once the child has closed the terminal
        while chunk := os.read(master, 4096):
            out.extend(chunk)
    os.close(master)
    assert proc.wait(30) == 0, out.decode(errors="replace")
    text = out.decode()
    assert "\x1b[" in text and "\x1b[J" in text  # cursor up and clear: redrawn, not appended
    last = text.rsplit("\x1b[J", 1)[1].splitlines()
    assert last[0].split() == ["device", "stage", "sample", "reason"]
    assert [ln.split()[:2] for ln in last[1:3]] == [["lab3-a", "delivered"],
                                                    ["lab3-b", "delivered"]]  # fmt: skip


def test_reading_the_heartbeats_ends_at_the_marker_not_at_the_bound(
    broker: Broker, observer: Observer, tmp_path: Path
) -> None:
    """Retained messages have no end: the marker ends the read long before a 30 s bound."""
    for i in range(50):
        doc = {"status": "online", "device_id": f"d-{i}", "at": iso_utc(time.time())}
        observer.publish(f"edge-uploader/d-{i}/status", json.dumps(doc), retain=True)
    mqtt = load_config(ops_config(tmp_path, broker), check_dirs=False).mqtt
    assert mqtt is not None
    client = FleetClient(mqtt, None).connect()
    try:
        started = time.monotonic()
        beats = read_heartbeats(client, 30.0)
        assert time.monotonic() - started < 10
    finally:
        client.close()
    assert sorted(beats) == sorted(f"d-{i}" for i in range(50))
    assert all(b.fresh(60) for b in beats.values())
