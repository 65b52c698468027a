"""Following one command over many devices: forward only, targets apart from bystanders."""

from __future__ import annotations

import json

from edge_uploader.sources.mqtt.fleet import CommandFollow, heartbeat_of


def ev(device: str, event: str, cid: str = "c-1", **kw: object) -> bytes:
    return json.dumps({"event": event, "id": cid, "device_id": device, **kw}).encode()


def test_stages_only_move_forward_and_a_repeat_is_ignored() -> None:
    follow = CommandFollow("c-1", ["a", "b"])
    assert follow.on_event(ev("a", "accepted")) is not None
    assert follow.on_event(ev("a", "queued")) is not None
    assert follow.on_event(ev("a", "captured")) is None  # late, out of order: not backwards
    assert follow.on_event(ev("a", "queued")) is None  # a QoS 1 repeat
    assert follow.on_event(ev("a", "rejected", reason="duplicate")) is None  # a second route
    delivered = follow.on_event(ev("a", "delivered", sample_id=7))
    assert delivered is not None and delivered.sample_id == 7
    assert follow.on_event(ev("a", "rejected", reason="duplicate")) is None  # finished
    assert not follow.done and follow.counts()["delivered"] == 1
    follow.on_event(ev("b", "failed", reason="sensor unplugged"))
    assert follow.done and not follow.succeeded
    assert follow.counts() == {"accepted": 0, "captured": 0, "queued": 0, "delivered": 1,
                               "failed": 1}  # fmt: skip


def test_other_commands_garbage_and_bystanders() -> None:
    follow = CommandFollow("c-1", ["a"])
    assert follow.on_event(ev("a", "accepted", cid="other")) is None
    assert follow.on_event(b"\xff not json") is None
    assert follow.on_event(b'["a list"]') is None
    bystander = follow.on_event(ev("z", "delivered"))
    assert bystander is not None and not bystander.targeted
    assert not follow.done  # a device nobody targeted does not count
    follow.on_event(ev("a", "delivered"))
    assert follow.done and follow.succeeded


def test_a_heartbeat_without_a_device_id_or_a_time() -> None:
    assert heartbeat_of(b'{"status": "online"}', 0.0) is None
    beat = heartbeat_of(b'{"status": "online", "device_id": "d", "at": "garbage"}', 0.0)
    assert beat is not None and beat.age_seconds is None and not beat.fresh(1e9)


def test_hostile_payloads_on_the_fleet_topics_are_ignored() -> None:
    deep = b"[" * 200_000  # deeper than the JSON parser's recursion: RecursionError
    huge = b'{"device_id": "d", "n": ' + b"9" * 5000 + b"}"
    assert heartbeat_of(deep, 0.0) is None and heartbeat_of(huge, 0.0) is None
    follow = CommandFollow("c1", ["d"])
    assert follow.on_event(deep) is None and follow.on_event(huge) is None
