"""Bridged brokers: a site Mosquitto bridged to a central one, as docs/fleet.md configures it.

Two real Mosquitto processes and two agent processes on the site broker. A command
published centrally reaches the site's agents and their events and heartbeats come back;
with the central broker gone and the site LAN up, a site command is still captured and
delivered (the ingestion service is reached directly), and the heartbeats flow again once
the central broker is back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_uploader.localserver import LocalIngestionServer

from .fleet_harness import Fleet
from .harness import MOSQUITTO, NO_MOSQUITTO, Broker, Observer, free_port

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

DEVICES = ("lab3-a", "lab3-b")


def bridge_conf(central_port: int) -> str:
    """The site side of the bridge (docs/fleet.md): commands in, events and status out."""
    return (
        "allow_anonymous true\n"
        "connection central\n"
        f"address 127.0.0.1:{central_port}\n"
        "remote_clientid bridge-lab-3\n"
        "cleansession false\n"
        "restart_timeout 1 2\n"
        "topic edge-uploader/+/capture in 1\n"
        "topic edge-uploader/site/lab-3/capture in 1\n"
        "topic edge-uploader/+/events out 1\n"
        "topic edge-uploader/+/status out 1\n"
    )


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[tuple[Broker, Broker]]:
    if MOSQUITTO is None:
        pytest.skip(NO_MOSQUITTO)
    (tmp_path / "central").mkdir()
    (tmp_path / "site").mkdir()
    central = Broker(tmp_path / "central", free_port(), "allow_anonymous true\n").start()
    site = Broker(tmp_path / "site", free_port(), bridge_conf(central.port)).start()
    yield central, site
    site.stop()
    central.stop()


def online_on(obs: Observer, devices: tuple[str, ...], after: int = 0) -> None:
    """Wait for an ``online`` heartbeat of each device among messages from index ``after``."""

    def seen() -> bool:
        with obs.cond:
            docs = [json.loads(m.payload) for m in obs.messages[after:]
                    if m.topic.endswith("/status")]  # fmt: skip
        return {d["device_id"] for d in docs if d.get("status") == "online"} >= set(devices)

    obs.wait_for(seen, 30, f"heartbeats of {devices}")


def test_commands_cross_the_bridge_and_the_site_works_without_the_centre(
    brokers: tuple[Broker, Broker], ingestion: LocalIngestionServer, tmp_path: Path
) -> None:
    central, site = brokers
    lan = Observer(site.port)
    lan.subscribe("edge-uploader/#")
    centre = Observer(central.port)
    centre.subscribe("edge-uploader/#")
    fleet = Fleet(tmp_path / "devices", site.port, ingestion.url)
    for device in DEVICES:
        fleet.add(device, "lab-3", heartbeat_seconds=1)
    ops = tmp_path / "ops.toml"
    ops.write_text(f'[device]\nid = "ops"\n[queue]\npath = "q.db"\n'
                   f'[mqtt]\nhost = "127.0.0.1"\nport = {central.port}\nheartbeat_seconds = 1\n')  # fmt: skip
    try:
        fleet.start(lan)
        online_on(centre, DEVICES)  # heartbeats cross the bridge

        done = subprocess.run(
            [sys.executable, "-m", "edge_uploader", "fleet", "capture", "--config", str(ops),
             "--site", "lab-3", "--source", "snap", "--duration-ms", "5", "--label", "central",
             "--wait-seconds", "30", "--json"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        doc = json.loads(done.stdout)
        assert {d["device_id"]: d["stage"] for d in doc["devices"]} == dict.fromkeys(
            DEVICES, "delivered")  # fmt: skip

        central.stop()  # the uplink is gone; the site LAN and the internet path stay up
        lan.publish("edge-uploader/site/lab-3/capture", json.dumps(
            {"id": "lan-1", "source": "snap", "duration_ms": 5, "label": "offline-centre"}))  # fmt: skip
        for device in DEVICES:
            e = lan.wait_for(lambda d=device: next((e for e in lan.events(
                "lan-1", topic=f"edge-uploader/{d}/events") if e["event"] in
                ("delivered", "failed")), None), 30, f"{device} done")  # fmt: skip
            assert e["event"] == "delivered", e
        labels = sorted((s.metadata["device_id"], s.label) for s in ingestion.samples())
        assert labels == sorted((d, lbl) for d in DEVICES for lbl in ("central", "offline-centre"))

        central.start()
        back = Observer(central.port)
        try:
            back.subscribe("edge-uploader/+/status")
            online_on(back, DEVICES)  # the bridge reconnected by itself
        finally:
            back.close()
    finally:
        fleet.stop()
        lan.close()
        centre.close()
