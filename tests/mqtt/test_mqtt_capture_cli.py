"""``edge-uploader capture``: one capture by hand, picked up by the daemon now or later."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from edge_uploader.localserver import LocalIngestionServer

from .harness import DEVICE, AgentRun, Sensor, wait_until


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_uploader", "capture", "--config", str(config), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_manual_capture_without_then_with_a_daemon(
    sensor: Sensor, ingestion: LocalIngestionServer, make_agent: Callable[..., AgentRun],
    tmp_path: Path,
) -> None:  # fmt: skip
    agent = make_agent(mqtt_port=None, ingestion_url=ingestion.url, sensor_path=sensor.path)
    done = cli(agent.config_path, "--source", "accel", "--duration-ms", "500", "--label", "idle",
               "--session", "bench-1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "wrote " in done.stdout and "signed HS256" in done.stdout
    assert "not queued yet: no daemon seems to be running" in done.stdout
    [data] = [p for p in (tmp_path / "captures").iterdir() if p.suffix == ".json"
              and not p.name.endswith(".meta.json")]  # fmt: skip
    assert str(data) in done.stdout
    assert json.loads(data.read_text())["payload"]["device_name"] == DEVICE

    # the daemon's start-up scan finds it, tagged by its sidecar
    agent.start()
    [sample] = wait_until(ingestion.samples, what="the manual capture delivered")
    assert sample.label == "idle" and sample.metadata["session"] == "bench-1"
    assert sample.metadata["site"] == "lab-3" and sample.details["signatureValidate"] is True

    # with the daemon running, the watcher queues it at once
    again = cli(agent.config_path, "--source", "snap", "--duration-ms", "10")
    assert again.returncode == 0, again.stderr
    assert "queued by the running daemon (queue row 2)" in again.stdout
    wait_until(lambda: len(ingestion.samples()) == 2, what="the second capture delivered")


def test_manual_capture_errors(tmp_path: Path, make_agent: Callable[..., AgentRun]) -> None:
    agent = make_agent(mqtt_port=None, ingestion_url="http://127.0.0.1:9", sensor_path="/dev/nope")
    bad = cli(agent.config_path, "--source", "nope", "--duration-ms", "100")
    assert bad.returncode == 78 and "--source" in bad.stderr and "accel, snap" in bad.stderr
    bad = cli(agent.config_path, "--source", "accel", "--duration-ms", "100", "--label", "../x")
    assert bad.returncode == 78 and "--label" in bad.stderr
    failed = cli(agent.config_path, "--source", "accel", "--duration-ms", "100")
    assert failed.returncode == 1 and "capture failed: cannot open /dev/nope" in failed.stdout
    assert list((tmp_path / "captures").iterdir()) == []
