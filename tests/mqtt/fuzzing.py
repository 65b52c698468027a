"""Seeded MQTT command fuzzing through a real broker into a real daemon process.

Shared by ``test_mqtt_fuzz_live.py`` (3,000 payloads in CI) and ``bench/fuzz.py``
(100,000). Each generated payload carries what must happen to it: a valid command may run
(or be refused as ``busy``), anything else must be ``rejected`` naming the field the
defect is in (``None``: the payload as a whole). Payloads go out with MQTT 5 response
topics, a window of them in flight, so every answer is matched to its payload.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_uploader.sources.command import MAX_COMMAND_BYTES

from .harness import DEVICE

PREFIX = f"edge-uploader/{DEVICE}"
PATHLIKE = ["../../etc", "/etc/passwd", "..", "a/b", "~root", "..\\..", "a\x00b", "\x00",
            "a\nb", "$(touch /tmp/pwned)", "%2e%2e%2f", "~", "a;b", "`id`"]  # fmt: skip
"""Refused wherever they appear (``.hidden`` and ``-rf`` are in the safe set of a label)."""
WRONG_TYPES: list[Any] = [None, True, 0, -1, 1.5, 10**30, [], {}, ["snap"], {"a": 1}]
BAD: dict[str, list[Any]] = {
    "id": [*WRONG_TYPES, "", "a b", "x" * 129, *PATHLIKE],
    "source": [*WRONG_TYPES, "SNAP", "snap\x00", "../snap", "accel", *PATHLIKE],
    "duration_ms": [*WRONG_TYPES, 0, 10_001, 1e308, -(10**30), "100", 1.0],
    "label": [True, 7, [], {}, "", " idle", "x" * 129, "naïve", *PATHLIKE],
    "session": [False, 1.5, ["a"], "", "run\n7", "x" * 500, *PATHLIKE],
    "category": [1, [], {}, "trash", "TRAINING", "", *PATHLIKE],
    "metadata": [[], "x", 1, {"k": 1}, {"k": None}, {"k": "a\x00b"}, {"k": "a\nb"},
                 {"": "v"}, {"k\x00": "v"}, {"session": "x"}, {"device_id": "spoof"},
                 {f"k{i}": "v" for i in range(65)}, {"k": "x" * 1025}, {"k": {"k": {}}}],
}  # fmt: skip
EXTRA_KEYS = ["argv", "path", "output", "Label", "__proto__", "../x", "/etc/passwd", "cmd"]


@dataclass(frozen=True)
class Case:
    payload: bytes
    field: str | None
    """The field a rejection must name (None: the payload as a whole)."""
    valid: bool = False


def _valid(rng: random.Random, n: int) -> dict[str, Any]:
    """A valid command; ``n`` makes its id unique."""
    doc: dict[str, Any] = {"id": f"fz-{n}", "source": "snap", "duration_ms": rng.choice([1, 5])}
    for key, values in (("label", ["idle", "run 2", "x.y"]), ("session", ["s-1", "field day"]),
                        ("category", ["training", "testing", "split"])):  # fmt: skip
        if rng.random() < 0.5:
            doc[key] = rng.choice(values)
    if rng.random() < 0.5:  # strings only, but any string: a path is just text here
        doc["metadata"] = {"note": rng.choice(["../../etc", "/etc/passwd", "é", "ok"])}
    return doc


def _payload_level(rng: random.Random, doc: dict[str, Any]) -> bytes:
    """A defect of the payload as a whole: never a field to name."""
    text = json.dumps(doc)
    kind = rng.randrange(9)
    if kind == 0:  # not UTF-8
        at = rng.randrange(len(text))
        return (
            text[:at].encode()
            + rng.choice([b"\xff", b"\xc3(", b"\xed\xa0\x80"])
            + text[at:].encode()
        )
    if kind == 1:  # not JSON (a random "{...}" could be an object: kept out)
        raw = rng.randbytes(rng.randrange(80))
        return b"\x01" + raw if raw.lstrip().startswith(b"{") else raw
    if kind == 2:  # truncated
        return text.encode()[: rng.randrange(len(text))]
    if kind == 3:  # JSON, not an object
        return json.dumps(rng.choice([*WRONG_TYPES[:7], "x", [doc]])).encode()
    if kind == 4:  # nested beyond the parser's depth, within the size limit
        depth = rng.randint(1500, 3500)
        return text[:-1].encode() + b', "metadata": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == 5:
        return text.replace(f'"duration_ms": {doc["duration_ms"]}', '"duration_ms": '
                            + rng.choice(["NaN", "Infinity", "-Infinity"])).encode()  # fmt: skip
    if kind == 6:  # an integer Python will not convert (more than 4,300 digits)
        digits = "9" * rng.randint(4301, 7000)
        return text.replace(
            f'"duration_ms": {doc["duration_ms"]}', f'"duration_ms": {digits}'
        ).encode()
    if kind == 7:  # above the size limit (the broker still carries it: under 256 KiB)
        size = rng.choice([MAX_COMMAND_BYTES + 1, MAX_COMMAND_BYTES + 2, 3 * MAX_COMMAND_BYTES])
        return text.encode() + b" " * (size - len(text))
    return b""


def _field_level(rng: random.Random, n: int, doc: dict[str, Any]) -> Case:
    kind = rng.randrange(5)
    if kind == 0:  # a missing required field
        key = rng.choice(["id", "source", "duration_ms"])
        del doc[key]
        return Case(json.dumps(doc).encode(), key)
    if kind == 1:  # an unknown field
        key = rng.choice(EXTRA_KEYS)
        doc[key] = rng.choice([*WRONG_TYPES, *PATHLIKE])
        return Case(json.dumps(doc).encode(), key)
    if kind == 2:  # the same key twice: the later copy must not win unseen
        key = rng.choice([k for k in ("id", "source", "duration_ms", "label") if k in doc])
        text = json.dumps(doc)[:-1] + f', "{key}": "snap"' + "}"
        return Case(text.encode(), key)
    if kind == 3:  # nested a little: a wrong type, named
        key = rng.choice(["label", "session", "metadata", "source"])
        doc[key] = json.loads("[" * 40 + "1" + "]" * 40)
        return Case(json.dumps(doc).encode(), key)
    key = rng.choice(list(BAD))
    doc[key] = rng.choice(BAD[key])
    raw = json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode()
    return Case(raw, key if len(raw) <= MAX_COMMAND_BYTES else None)


def generate(seed: int, count: int, valid_share: float = 0.04, first: int = 0) -> Iterator[Case]:
    """``count`` cases numbered from ``first``: ``valid_share`` valid commands, a fifth
    with a defect of the payload as a whole, the others with one bad field."""
    rng = random.Random(seed)
    for n in range(first, first + count):
        doc = _valid(rng, n)
        roll = rng.random()
        if roll < valid_share / 2:
            yield Case(json.dumps(doc).encode(), None, valid=True)
        elif roll < valid_share:  # valid, padded to exactly the size limit
            raw = json.dumps(doc).encode()
            yield Case(raw[:-1] + b" " * (MAX_COMMAND_BYTES - len(raw)) + b"}", None, valid=True)
        elif roll < valid_share + 0.2:
            yield Case(_payload_level(rng, doc), None)
        else:
            yield _field_level(rng, n, doc)


# -- the agent as a process ------------------------------------------------------------------
class AgentProcess:
    """``edge-uploader run`` as a child process; its log goes to a file (never a pipe that
    could fill and stall it)."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = open(log, "wb")
        argv = [sys.executable, "-m", "edge_uploader", "run", "--config", str(config)]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


# -- the publisher -------------------------------------------------------------------------
@dataclass
class Result:
    payloads: int = 0
    seconds: float = 0.0
    rejections: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    """Cases whose outcome broke a rule (an invalid command run, a field not named...)."""

    def flag(self, n: int, case: Case, what: str) -> None:
        self.outcomes["wrong"] += 1
        if len(self.wrong) < 20:
            self.wrong.append(f"payload {n} {case.payload[:120]!r}: {what}")


class Fuzzer:
    """Publishes cases with response topics and records each payload's events by number."""

    def __init__(self, port: int) -> None:
        self.events: dict[int, list[dict[str, Any]]] = {}
        self.cond = threading.Condition()
        self.answered = 0
        self.online = False
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fuzz-{os.getpid()}",
                                  protocol=mqtt.MQTTv5)  # fmt: skip
        self.client.max_inflight_messages_set(64)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe([("replies/fuzz/#", 1), (f"{PREFIX}/status", 1)])
        assert subscribed.wait(10), "subscription not acknowledged"

    def wait_online(self, timeout: float = 30) -> None:
        """Until the agent's retained status says online (it has subscribed by then)."""
        self._wait(lambda: self.online, timeout, "the agent online")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == f"{PREFIX}/status":
            with self.cond:
                self.online = json.loads(msg.payload).get("status") == "online"
                self.cond.notify_all()
            return
        n = int(msg.topic.rsplit("/", 1)[1])
        with self.cond:
            seen = self.events.setdefault(n, [])
            if not seen:
                self.answered += 1
            seen.append(json.loads(msg.payload))
            self.cond.notify_all()

    def _wait(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
                self.cond.wait(left)

    def publish(self, cases: list[Case], window: int = 32, first: int = 0) -> float:
        """Send ``cases`` (numbered from ``first``) with at most ``window`` unanswered;
        returns the seconds until every one was answered."""
        start, base = time.monotonic(), self.answered
        for i, case in enumerate(cases):
            self._wait(lambda i=i: i - (self.answered - base) < window, 30, f"answers to {i}")
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = f"replies/fuzz/{first + i}"
            self.client.publish(f"{PREFIX}/capture", case.payload, qos=1, properties=props)
        self._wait(lambda: self.answered - base >= len(cases), 60, "an answer to every payload")
        return time.monotonic() - start

    def settle(self, cases: list[Case], first: int = 0, timeout: float = 120) -> None:
        """Wait until every accepted command has ended (delivered or failed)."""

        def done() -> bool:
            return all(self.events[first + i][-1]["event"] in ("rejected", "delivered", "failed")
                       for i in range(len(cases)))  # fmt: skip

        self._wait(done, timeout, "every accepted command to end")

    def judge(self, cases: list[Case], first: int = 0) -> Result:
        result = Result(payloads=len(cases))
        ran = (["accepted", "failed"], ["accepted", "captured", "queued", "delivered"])
        for i, case in enumerate(cases):
            n = first + i
            with self.cond:
                events = list(self.events[n])
            names = [e["event"] for e in events]
            if names == ["rejected"]:
                got = events[0].get("field")
                result.rejections[head(got) if got else "(payload)"] += 1
                busy = got == "source" and events[0]["reason"].startswith("busy")
                if case.valid and not busy:
                    result.flag(n, case, f"a valid command rejected: {events[0]}")
                elif not case.valid and (head(got) if got else None) != case.field:
                    result.flag(n, case, f"expected field {case.field!r}, got {events[0]}")
                result.outcomes["busy" if busy else "rejected"] += 1
            elif names in ran and case.valid:
                result.outcomes[names[-1]] += 1
            else:
                result.flag(n, case, f"events {names}")
        return result

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def head(name: str) -> str:
    """``metadata`` for ``metadata.k``: the command field a refusal names."""
    return "metadata" if name.startswith("metadata.") else name


def tree(root: Path) -> set[str]:
    """Every file below ``root``, relative."""
    return {str(Path(d, f).relative_to(root)) for d, _, files in os.walk(root) for f in files}
