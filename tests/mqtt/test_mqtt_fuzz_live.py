"""A batch of hostile payloads through a live broker into the running daemon.

The property test in ``test_mqtt_command_validation`` covers the validator with 1,200
generated payloads; this one checks the whole path with a smaller seeded batch: every
payload gets exactly one outcome on its own MQTT 5 response topic (``rejected``, or the
stages of a capture ending in ``delivered``/``failed``), the agent stays up and serves a
valid command afterwards, and no file appears outside the capture folder.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_uploader.localserver import LocalIngestionServer
from edge_uploader.sources.command import MAX_COMMAND_BYTES

from .fuzzing import AgentProcess, Case, Fuzzer, generate, tree
from .harness import DEVICE, AgentRun, Broker, Observer, Sensor, command, wait_until

pytestmark = pytest.mark.mqtt

PREFIX = f"edge-uploader/{DEVICE}"
PATHLIKE = [
    "../x", "/etc/passwd", "a/b", "..", ".", "~root", "..\\..", "\x00", "a\nb",
    "$(touch /tmp/pwned)", "{output}", "%2e%2e%2f", ".hidden", "-rf", "x" * 300,
]  # fmt: skip
HOSTILE: list[Any] = [*PATHLIKE, None, True, -1, 0, 10**30, 1.5, [], {}, ["accel"], {"a": 1}]
BATCH = 120
SEED = 20261202


def payloads(rng: random.Random) -> list[bytes]:
    out: list[bytes] = []
    for i in range(BATCH):
        kind = rng.random()
        doc: dict[str, Any] = {
            "id": f"fz-{i}", "source": rng.choice(["snap", "snap", "accel"]),
            "duration_ms": rng.choice([5, 20, 150]), "label": rng.choice(["idle", "run 2", "x.y"]),
            "session": f"s-{i % 4}",
        }  # fmt: skip
        if kind < 0.55:
            for _ in range(rng.randint(0, 2)):
                key = rng.choice(["id", "source", "duration_ms", "label", "session", "category",
                                  "metadata", "argv", "path", "../x"])  # fmt: skip
                doc[key] = rng.choice([*HOSTILE, {"k": rng.choice(HOSTILE)}])
            out.append(json.dumps(doc).encode())
        elif kind < 0.65:
            out.append(rng.randbytes(rng.randint(0, 64)))
        elif kind < 0.75:
            out.append(json.dumps(doc).encode()[: rng.randint(1, 30)])
        elif kind < 0.85:
            out.append(json.dumps(rng.choice(HOSTILE)).encode())
        elif kind < 0.92:
            doc["metadata"] = {"pad": "y" * rng.randint(MAX_COMMAND_BYTES, 3 * MAX_COMMAND_BYTES)}
            out.append(json.dumps(doc).encode())
        else:
            doc["label"] = rng.choice(PATHLIKE)
            out.append(json.dumps(doc).encode())
    return out


def test_hostile_batch_through_the_broker(
    broker: Broker, observer: Observer, sensor: Sensor, ingestion: LocalIngestionServer,
    make_agent: Callable[..., AgentRun], tmp_path: Path,
) -> None:  # fmt: skip
    agent = make_agent(mqtt_port=broker.port, ingestion_url=ingestion.url, sensor_path=sensor.path)
    service = agent.start()
    wait_until(lambda: observer.json_on(f"{PREFIX}/status"), what="online status")
    observer.subscribe("replies/#")
    before = tree(tmp_path)

    def outcome(n: int) -> list[str]:
        return [e["event"] for e in observer.json_on(f"replies/fuzz/{n}")]

    # one at a time until the capture is done (a burst would mostly test "busy", below)
    batch = payloads(random.Random(20260501))
    for n, raw in enumerate(batch):
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = f"replies/fuzz/{n}"
        props.CorrelationData = str(n).encode()
        observer.client.publish(f"{PREFIX}/capture", raw, qos=1, properties=props)
        observer.wait_for(
            lambda n=n: {"rejected", "captured", "failed"} & set(outcome(n)),
            what=f"payload {n} handled",
        )

    terminal = ("rejected", "delivered", "failed")
    observer.wait_for(lambda: all(any(x in terminal for x in outcome(n)) for n in range(BATCH)),
                      what="an outcome for every payload")  # fmt: skip
    counts: dict[str, int] = {}
    for n in range(BATCH):
        events = outcome(n)
        assert events in (
            ["rejected"], ["accepted", "failed"],
            ["accepted", "captured", "queued", "delivered"],
        ), (n, batch[n][:200], events)  # fmt: skip
        counts[events[-1]] = counts.get(events[-1], 0) + 1
    assert counts.get("delivered", 0) >= 15 and counts.get("rejected", 0) >= 40, counts

    # and a burst: one capture per source at a time, the rest "busy", none lost
    for n in range(BATCH, BATCH + 10):
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = f"replies/fuzz/{n}"
        observer.client.publish(f"{PREFIX}/capture", command(f"burst-{n}", source="snap",
                                duration_ms=5), qos=1, properties=props)  # fmt: skip
    observer.wait_for(lambda: all(any(x in terminal for x in outcome(n))
                                  for n in range(BATCH, BATCH + 10)), what="the burst")  # fmt: skip
    burst = [outcome(n)[-1] for n in range(BATCH, BATCH + 10)]
    assert "delivered" in burst and set(burst) <= {"delivered", "rejected"}
    counts["delivered"] += burst.count("delivered")

    # the agent is alive and serves a valid command
    assert not service.stopped.is_set()
    observer.publish(f"{PREFIX}/capture", command("after-fuzz", source="snap", duration_ms=5))
    assert observer.wait_event("after-fuzz", ("delivered", "failed"))["event"] == "delivered"

    # nothing was written outside the capture folder (the agent's state and the local
    # ingestion server's store excepted), and the capture folder holds only captures
    new = tree(tmp_path) - before
    outside = {p for p in new if not p.startswith(("captures/", "state/", "ingestion/", "broker/"))}
    assert outside == set()
    for name in os.listdir(tmp_path / "captures"):
        assert not name.startswith(".") and name.startswith(("snap.", "accel.")), name
    assert not Path("/tmp/pwned").exists()
    delivered = counts["delivered"] + 1
    assert len(ingestion.samples()) == delivered


SCALE = 3000


def test_generated_payloads_against_the_daemon_process(
    broker: Broker, ingestion: LocalIngestionServer, make_agent: Callable[..., AgentRun],
    tmp_path: Path,
) -> None:  # fmt: skip
    """3,000 generated payloads (``fuzzing.generate``; ``bench/fuzz.py`` sends 100,000) into
    ``edge-uploader run``: every payload answered, every rejection names the field its
    defect is in, only valid commands capture, the process stays up and files appear only
    in its capture folder."""
    agent = make_agent(mqtt_port=broker.port, ingestion_url=ingestion.url, sensor_path=None)
    before = tree(tmp_path)
    proc = AgentProcess(agent.config_path, tmp_path / "agent.log")
    fuzzer = Fuzzer(broker.port)
    try:
        fuzzer.wait_online()
        cases = list(generate(SEED, SCALE))
        fuzzer.publish(cases)
        fuzzer.settle(cases)
        result = fuzzer.judge(cases)
        assert result.wrong == [], result.wrong
        assert proc.alive()
        after = [Case(command("after-fuzz", source="snap", duration_ms=5), None, valid=True)]
        fuzzer.publish(after, first=SCALE)
        fuzzer.settle(after, first=SCALE)
        assert fuzzer.judge(after, first=SCALE).outcomes["delivered"] == 1
    finally:
        fuzzer.close()
        assert proc.stop() == 0
    ran = result.outcomes["delivered"] + result.outcomes["failed"]
    assert result.outcomes["delivered"] >= 3 and result.outcomes["rejected"] > 2500
    for name in ("(payload)", "id", "source", "duration_ms", "label", "session", "category",
                 "metadata", "argv", "../x"):  # fmt: skip
        assert result.rejections[name] > 0, name
    new = tree(tmp_path) - before
    outside = {p for p in new if not p.startswith(("captures/", "state/", "ingestion/", "broker/"))}
    assert outside == {"agent.log"}
    data = {p for p in new if p.startswith("captures/") and not p.endswith(".meta.json")}
    sidecars = {p for p in new if p.startswith("captures/")} - data
    assert len(data) == ran + 1 and all(Path(p).name.startswith("snap.") for p in data)
    assert sidecars <= {p + ".meta.json" for p in data}
    assert len(ingestion.samples()) == result.outcomes["delivered"] + 1
    assert not Path("/tmp/pwned").exists()
