"""Group commands: one site-wide or fleet-wide command, run by every targeted device process.

Real ``edge-uploader run`` processes on one Mosquitto and the local ingestion server: the
devices of the site capture once each, share the command's ``session`` (so the event is
one group for ``split-by-group``), answer on their own events topics, and a re-sent
command runs nowhere twice.
"""

from __future__ import annotations

import json

import pytest

from edge_uploader.localserver import LocalIngestionServer

from .fleet_harness import Fleet
from .harness import Observer

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

SITE = "edge-uploader/site/lab-3/capture"
FLEET = "edge-uploader/fleet/capture"


def finals(obs: Observer, cid: str) -> dict[str, dict[str, object]]:
    """The last terminal event of command ``cid`` per device, from the per-device topics."""
    out: dict[str, dict[str, object]] = {}
    for device in ("lab3-a", "lab3-b", "lab9-a"):
        for e in obs.events(cid, topic=f"edge-uploader/{device}/events"):
            if e["event"] in ("delivered", "failed", "rejected"):
                out[device] = e
    return out


def of(obs: Observer, event: str, cid: str) -> list[dict[str, object]]:
    return [e for e in obs.json_on_prefix("edge-uploader/", "/events")
            if e["event"] == event and e["id"] == cid]  # fmt: skip


def test_a_site_command_runs_once_on_each_device_of_the_site(
    fleet: tuple[Fleet, Observer], ingestion: LocalIngestionServer
) -> None:
    _, obs = fleet
    obs.publish(SITE, json.dumps({"id": "g:1", "source": "snap", "duration_ms": 5,
                                  "label": "knock"}))  # fmt: skip
    done = obs.wait_for(lambda: len(finals(obs, "g:1")) == 2 and finals(obs, "g:1"),
                        30, "both lab-3 devices done")  # fmt: skip
    assert {d: e["event"] for d, e in done.items()} == {"lab3-a": "delivered",
                                                         "lab3-b": "delivered"}  # fmt: skip
    assert {(e["device_id"], e["session"], e["scope"]) for e in of(obs, "accepted", "g:1")} == {
        ("lab3-a", "g-1", "site"), ("lab3-b", "g-1", "site")}  # fmt: skip
    samples = ingestion.samples()
    assert sorted(s.metadata["device_id"] for s in samples) == ["lab3-a", "lab3-b"]
    assert {(s.label, s.metadata["session"], s.metadata["site"]) for s in samples} == {
        ("knock", "g-1", "lab-3")}  # fmt: skip

    # the same command again: a duplicate on each device, nothing captured twice
    obs.publish(SITE, json.dumps({"id": "g:1", "source": "snap", "duration_ms": 5}))
    rejected = obs.wait_for(lambda: len(of(obs, "rejected", "g:1")) == 2
                            and of(obs, "rejected", "g:1"), 20, "two refusals")  # fmt: skip
    assert {e["device_id"] for e in rejected} == {"lab3-a", "lab3-b"}
    assert all(e["field"] == "id" and "duplicate" in e["reason"] for e in rejected)
    assert len(ingestion.samples()) == 2


def test_a_fleet_command_reaches_every_site_as_one_group(
    fleet: tuple[Fleet, Observer], ingestion: LocalIngestionServer
) -> None:
    _, obs = fleet
    obs.publish(FLEET, json.dumps({"id": "f-1", "source": "snap", "duration_ms": 5,
                                   "label": "door", "session": "storm-7",
                                   "category": "split-by-group"}))  # fmt: skip
    done = obs.wait_for(lambda: len(finals(obs, "f-1")) == 3 and finals(obs, "f-1"),
                        30, "all three devices done")  # fmt: skip
    assert {e["event"] for e in done.values()} == {"delivered"}
    samples = ingestion.samples()
    assert sorted(s.metadata["device_id"] for s in samples) == ["lab3-a", "lab3-b", "lab9-a"]
    assert {s.metadata["session"] for s in samples} == {"storm-7"}
    [side] = {s.category for s in samples}  # the whole event on one side of the split
    assert side in ("training", "testing")
    assert sorted(s.metadata["site"] for s in samples) == ["lab-3", "lab-3", "lab-9"]
    statuses = {d["device_id"]: d for d in obs.json_on_prefix("edge-uploader/", "/status")}
    assert statuses["lab9-a"]["site"] == "lab-9"
