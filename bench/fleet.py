"""Fleet simulation: N real agent processes, one site-wide command (not part of the tests).

    .venv/bin/python bench/fleet.py                  # 200 devices
    .venv/bin/python bench/fleet.py --devices 10     # a quick check

Every device is an ``edge-uploader run`` process with a command source (``dd`` writing 64
random bytes), all on one Mosquitto and one local ingestion server (in this process). One
command is published on the site topic; the script follows every device's events and
prints command-to-delivered per device (p50 and p100: the last device is when the whole
site is done), the broker's received-message count ($SYS/broker/messages/received, before
and after), the messages seen on ``edge-uploader/#``, the total RSS of the agents, and
whether every sample arrived with the shared session. The target is 200 devices, all
delivered within 30 s.

Each agent takes one inotify instance for its capture folder while the per-user limit
(``fs.inotify.max_user_instances``, often 128) lasts; the agents after that fall back to
polling, which does not change the figures (a capture is handed to the queue directly).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from mqtt.fleet_harness import Fleet
from mqtt.harness import API_KEY, HMAC_KEY, MOSQUITTO, Broker, Observer, free_port

from edge_uploader.config import load_config
from edge_uploader.localserver import LocalIngestionServer
from edge_uploader.sources.mqtt.fleet import CommandFollow, FleetClient

SITE = "bench-site"


class BrokerCount:
    """The broker's own count of received messages, from ``$SYS`` (published every 1 s)."""

    def __init__(self, port: int) -> None:
        self.value: int | None = None
        self.updated = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sys")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("$SYS/broker/messages/received", qos=0)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.value = int(msg.payload)
        self.updated.set()

    def fresh(self, timeout: float = 5.0) -> int | None:
        self.updated.clear()
        self.updated.wait(timeout)
        return self.value

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def run(devices: int, wait_seconds: float) -> int:
    if MOSQUITTO is None:
        print("mosquitto is not installed", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    (root / "broker").mkdir()
    extra = f"allow_anonymous true\nsys_interval 1\nmax_connections {devices + 50}\n"
    broker = Broker(root / "broker", free_port(), extra).start()
    server = LocalIngestionServer(root / "ingestion", api_keys=[API_KEY], hmac_key=HMAC_KEY,
                                  quiet=True).start()  # fmt: skip
    obs = Observer(broker.port)
    obs.subscribe("edge-uploader/#")
    fleet = Fleet(root / "devices", broker.port, server.url)
    for i in range(devices):
        fleet.add(f"dev-{i:04d}", SITE, heartbeat_seconds=60)
    count = BrokerCount(broker.port)
    try:
        started = time.monotonic()
        fleet.start(obs, timeout=60 + devices * 1.0)
        print(f"{devices} agents online in {time.monotonic() - started:.1f} s")
        return _command(fleet, obs, count, broker.port, root, server, wait_seconds)
    finally:
        count.close()
        fleet.stop()
        obs.close()
        server.stop()
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)


def _command(fleet: Fleet, obs: Observer, count: BrokerCount, port: int, root: Path,
             server: LocalIngestionServer, wait_seconds: float) -> int:  # fmt: skip
    ops = root / "ops.toml"
    ops.write_text(f'[device]\nid = "bench-ops"\n[queue]\npath = "q.db"\n'
                   f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n')  # fmt: skip
    mqtt_cfg = load_config(ops, check_dirs=False).mqtt
    assert mqtt_cfg is not None
    client = FleetClient(mqtt_cfg, None).connect()
    cid = f"bench-{int(time.time())}"
    follow = CommandFollow(cid, [a.device_id for a in fleet.agents])
    client.subscribe([f"{mqtt_cfg.topic_pattern}/events"])
    before, seen_before = count.fresh(), len(obs.messages)
    rss = rss_bytes([a.proc.pid for a in fleet.agents if a.proc is not None])
    payload = json.dumps({"id": cid, "source": "snap", "duration_ms": 5, "label": "bench"})
    t0 = time.monotonic()
    client.publish(f"{mqtt_cfg.site_topic_prefix}/{SITE}/capture", payload.encode())
    deadline = t0 + wait_seconds
    while not follow.done and (msg := client.next_message(deadline - time.monotonic())):
        follow.on_event(msg.payload)
    client.close()
    after = count.fresh()
    delivered = sorted(p.at - t0 for p in follow.targeted if p.stage == "delivered")
    failed = [p for p in follow.targeted if p.stage != "delivered"]
    samples = [s for s in server.samples() if s.metadata.get("session") == cid]
    n = len(follow.targeted)
    print(f"command -> delivered: {len(delivered)}/{n} devices")
    if delivered:
        print(f"  p50 {statistics.median(delivered):.2f} s, p100 {delivered[-1]:.2f} s")
    for p in failed[:5]:
        print(f"  {p.device_id}: {p.stage} {p.reason or ''}")
    print(f"samples with the shared session {cid}: {len(samples)}"
          f" (devices: {len({s.metadata['device_id'] for s in samples})})")  # fmt: skip
    if before is not None and after is not None:
        print(
            f"broker messages received during the command: {after - before}"
            " ($SYS/broker/messages/received: every packet type, PUBACKs and pings too)"
        )
    print(f"messages on edge-uploader/# during the command: {len(obs.messages) - seen_before}")
    print(f"agents' total RSS: {rss / 1e6:.0f} MB ({rss / max(1, n) / 1e6:.1f} MB each)")
    ok = not failed and len(samples) == n and bool(delivered) and delivered[-1] <= 30
    print("target (all delivered with the session, within 30 s):", "met" if ok else "NOT met")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--wait-seconds", type=float, default=120.0)
    args = parser.parse_args()
    return run(args.devices, args.wait_seconds)


if __name__ == "__main__":
    raise SystemExit(main())
