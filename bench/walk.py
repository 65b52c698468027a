"""The walk of one watched file, and of one MQTT capture command, measured (ARCHITECTURE.md).

    .venv/bin/python bench/walk.py

Runs the real daemon in this process against the local ingestion server (and, for the
command, a real Mosquitto broker and a command capture source), records every call that
enters an edge_uploader module from another one (``threading.setprofile``) while the one
file or command travels, and prints:

- the walk: each stage module (``sources``, ``core``, ``store``, ``remote``, ``daemon``,
  ...) the file's handling enters, in the order of its first entry, with the thread, the
  function, and the helpers it used (the leaf modules, ``config`` and delivery's own
  parts: values and rules, not stages). A hop is one line. Left out: the ``loop``
  module (every thread's start/step/stop pattern), the listeners an event fans out to (calls made by
  ``events``: counters, systemd's status, the MQTT status document), and the store's own
  internals (``store.sqlite``, ``store.rows``);
- the raw figures: cross-module calls in all, and how often each stage was re-entered
  (the queue is written when a file is recorded, leased and settled).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from edge_uploader.config import load_config, parse_config
from edge_uploader.daemon.lifecycle import Daemon
from edge_uploader.localserver import LocalIngestionServer

PLUMBING = ("edge_uploader.loop", "edge_uploader.store.sqlite", "edge_uploader.store.rows")
SIDE = ("edge_uploader.events", "edge_uploader.sources.mqtt.status", "edge_uploader.daemon.systemd")
"""Side channels: notified on the way (counters, status documents), not on the path."""
LEAVES = ("clock", "errors", "events", "loop", "metadata", "secrets", "text")
DELIVERY_PARTS = ("core.batching", "core.concurrency", "core.inflight", "core.metering",
                  "core.verdicts", "remote.throttle")  # fmt: skip
"""Delivery's own parts (the pure rules of which rows share a request, how many go at once,
what an answer means; the hand-over to its workers; the link's budget): helpers of the
delivery stage, not stages of their own."""


def helper(module: str) -> bool:
    name = module.removeprefix("edge_uploader.")
    return name in LEAVES or name in DELIVERY_PARTS or name.startswith("config.")


class Trace:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str]] = []
        self.on = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call" or not self.on.is_set():
            return
        callee = frame.f_globals.get("__name__", "")
        if not callee.startswith("edge_uploader.") or ".localserver" in callee:
            return
        back = frame.f_back
        caller = back.f_globals.get("__name__", "") if back is not None else ""
        if caller != callee:
            with self.lock:
                self.calls.append((threading.current_thread().name, caller, callee,
                                   frame.f_code.co_name))  # fmt: skip

    def install(self) -> None:
        """Before the daemon starts: only threads started later are traced."""
        threading.setprofile(self)  # type: ignore[arg-type]
        sys.setprofile(self)  # type: ignore[arg-type]

    def run(self, go: Callable[[], None], done: Callable[[], bool]) -> None:
        self.on.set()
        go()
        deadline = time.monotonic() + 30
        while not done() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.2)  # the last settle and its events
        self.on.clear()
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]

    def report(self, title: str, threads: Callable[[str], bool]) -> None:
        calls = [c for c in self.calls if threads(c[0])]
        walk: list[tuple[str, str, str]] = []
        helpers: dict[str, set[str]] = {}
        entries: dict[str, int] = {}
        for thread, caller, callee, func in calls:
            if callee in PLUMBING or caller in SIDE or callee in SIDE:
                continue
            if helper(callee):
                helpers.setdefault(caller, set()).add(callee.removeprefix("edge_uploader."))
                continue
            entries[callee] = entries.get(callee, 0) + 1
            if callee not in {m for _, m, _ in walk}:
                walk.append((thread, callee, func))
        print(f"\n{title}: {len(walk)} hops ({len(calls)} cross-module calls in all)")
        for i, (thread, module, func) in enumerate(walk, 1):
            name = module.removeprefix("edge_uploader.")
            used = ", ".join(sorted(helpers.get(module, ())))
            again = entries[module] - 1
            print(f"  {i:2d}. {thread[:16]:16s} {name:22s} {func:16s}"
                  + (f" re-entered {again}x" if again else "")
                  + (f"  [uses {used}]" if used else ""))  # fmt: skip


def watched_file() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = LocalIngestionServer(root / "srv", quiet=True).start()
        (root / "in").mkdir()
        os.environ["EI_API_KEY"] = "ei_walk"
        cfg = parse_config({"ingestion": {"url": server.url}, "queue": {"path": str(root / "q.db")},
                            "watch": [{"path": str(root / "in")}]}, "walk", root)  # fmt: skip
        trace = Trace()
        trace.install()
        daemon = Daemon(cfg)
        daemon.start()
        time.sleep(0.5)  # the first scan is over
        trace.run(lambda: (root / "in" / "a.wav").write_bytes(b"RIFF" * 256),
                  lambda: bool(server.index_lines()))  # fmt: skip
        daemon.stop()
        server.stop()
    trace.report(
        "one watched file, from close-after-write to delivered",
        lambda t: t in ("intake", "dispatcher") or t.startswith(("upload-", "Thread")),
    )


def mqtt_command() -> None:
    from mqtt.harness import MOSQUITTO, Broker, Observer, agent_toml, command, free_port

    if MOSQUITTO is None:
        print("\none MQTT command: skipped (no mosquitto)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "broker").mkdir()
        broker = Broker(root / "broker", free_port(), "allow_anonymous true\n").start()
        server = LocalIngestionServer(root / "ing", api_keys=["ei_mqtt_test_key"], quiet=True)
        server.start()
        path = root / "agent.toml"
        path.write_text(agent_toml(root, mqtt_port=broker.port, ingestion_url=server.url,
                                   sensor_path=None))  # fmt: skip
        trace = Trace()
        trace.install()
        daemon = Daemon(load_config(path))
        daemon.start()
        obs = Observer(broker.port)
        obs.subscribe("edge-uploader/#")
        obs.wait_for(lambda: obs.json_on("edge-uploader/pi-0042/status"), what="online")
        topic = "edge-uploader/pi-0042/capture"
        trace.run(lambda: obs.publish(topic, command("walk-1", source="snap", duration_ms=5)),
                  lambda: bool(obs.events("walk-1") and obs.events("walk-1")[-1]["event"]
                               in ("delivered", "failed")))  # fmt: skip
        print(f"\n(events: {[e['event'] for e in obs.events('walk-1')]})")
        obs.close()
        daemon.stop()
        server.stop()
        broker.stop()
    trace.report(
        "one MQTT capture command, from the broker's message to delivered",
        lambda t: not t.startswith(("mqtt-status", "systemd", "disk", "scan", "settle")),
    )


if __name__ == "__main__":
    watched_file()
    mqtt_command()
