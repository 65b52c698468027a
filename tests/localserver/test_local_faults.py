"""Fault injection: seeded failures and drops, Retry-After, latency, scripted faults."""

from __future__ import annotations

import random
import time

import httpx
import pytest

from edge_uploader.localserver import FaultAction, FaultConfig, LocalIngestionServer
from edge_uploader.localserver.faults import FaultInjector

from .conftest import upload


def _outcomes(client: httpx.Client, n: int) -> list[str]:
    out = []
    for i in range(n):
        try:
            r = upload(client, f"f.{i}.wav", f"{i}".encode())
            out.append(str(r.status_code))
        except httpx.TransportError:
            out.append("drop")
    return out


def test_seeded_faults_replay_exactly(client: httpx.Client, server: LocalIngestionServer) -> None:
    config = FaultConfig(fail_rate=0.3, drop_rate=0.2, seed=42)
    server.set_faults(config)
    first = _outcomes(client, 20)
    server.set_faults(config)
    second = _outcomes(client, 20)
    assert first == second
    rng = random.Random(42)
    draws = [rng.random() for _ in range(20)]
    expected = ["drop" if d < 0.2 else "500" if d < 0.5 else "200" for d in draws]
    assert first == expected
    assert {"drop", "500", "200"} <= set(first)
    assert len(server.samples()) == 2 * first.count("200")


def test_fail_status_retry_after_and_recovery(
    client: httpx.Client, server: LocalIngestionServer
) -> None:
    server.set_faults(FaultConfig(fail_rate=1.0, fail_status=503))
    r = upload(client)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    server.set_faults(FaultConfig(fail_rate=1.0, fail_status=500))
    r = upload(client)
    assert r.status_code == 500 and "retry-after" not in r.headers
    server.set_faults(FaultConfig())
    assert upload(client).status_code == 200  # same keep-alive connection still sane
    assert client.get("/v1/api/projects").status_code == 200


def test_faults_do_not_touch_studio(client: httpx.Client, server: LocalIngestionServer) -> None:
    server.set_faults(FaultConfig(fail_rate=1.0))
    assert client.get("/v1/api/projects").json()["success"] is True


def test_scripted_faults_and_latency(client: httpx.Client, server: LocalIngestionServer) -> None:
    server.script_faults(["fail", FaultAction.DROP, "ok"])
    assert upload(client, "a.wav", b"a").status_code == 500
    with pytest.raises(httpx.RemoteProtocolError):
        upload(client, "b.wav", b"b")
    assert upload(client, "c.wav", b"c").status_code == 200
    server.set_faults(FaultConfig(latency_ms=60))
    started = time.monotonic()
    assert upload(client, "d.wav", b"d").status_code == 200
    assert time.monotonic() - started >= 0.06


def test_fault_config_validation() -> None:
    with pytest.raises(ValueError, match="fail_rate"):
        FaultConfig(fail_rate=1.5)
    with pytest.raises(ValueError, match="exceed"):
        FaultConfig(fail_rate=0.6, drop_rate=0.6)
    with pytest.raises(ValueError, match="fail_status"):
        FaultConfig(fail_status=200)
    assert FaultInjector().decide().action is FaultAction.OK


def test_lost_reply_stores_the_sample_and_answers_nothing(
    client: httpx.Client, server: LocalIngestionServer
) -> None:
    """The fault the agent's duplicate refusal exists for: stored, but the client cannot
    know it; its retry (with ``x-disallow-duplicates``) is refused, never stored twice."""
    server.script_faults(["lose"])
    refuse = {"x-disallow-duplicates": "1"}
    with pytest.raises(httpx.TransportError):
        upload(client, "lost.01.wav", b"lost reply body", headers=refuse)
    assert [s.original_filename for s in server.samples()] == ["lost.01.wav"]
    again = upload(client, "lost.01.wav", b"lost reply body", headers=refuse)
    assert again.status_code == 200
    assert again.json()["files"][0]["success"] is False
    assert len(server.samples()) == 1


def test_lose_rate_is_drawn_after_drop_and_fail() -> None:
    """Adding ``lose_rate`` leaves the replay of existing seeds as it was."""
    faults = FaultInjector(FaultConfig(fail_rate=0.3, drop_rate=0.2, lose_rate=0.25, seed=42))
    rng = random.Random(42)
    for _ in range(50):
        d = rng.random()
        want = "drop" if d < 0.2 else "fail" if d < 0.5 else "lose" if d < 0.75 else "ok"
        assert faults.decide().action.value == want
    with pytest.raises(ValueError, match="lose_rate"):
        FaultConfig(fail_rate=0.5, drop_rate=0.3, lose_rate=0.3)
