"""The daemon under a stand-in for systemd: a real ``python -m edge_uploader run`` subprocess, a
datagram socket as ``NOTIFY_SOCKET``, the local ingestion server.

READY/STATUS/WATCHDOG arrive; a hung upload stops the watchdog pings; SIGHUP applies a
valid config and rejects an invalid one; SIGTERM stops within 10 s and loses nothing.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

from edge_uploader.localserver import FaultConfig, LocalIngestionServer

from .conftest import Agent, NotifySocket, wait_for, write_config


def _drop(folder: Path, names: list[str]) -> None:
    for name in names:
        tmp = folder / f".{name}.tmp"
        tmp.write_text(f"t,v\n0,{name}\n")
        tmp.rename(folder / name)


def _delivered(server: LocalIngestionServer) -> dict[str, dict[str, str]]:
    return {line["fileName"]: line["metadata"] for line in server.index_lines()}


def _queue_states(db: Path) -> dict[int, int]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT state, count(*) FROM files GROUP BY state").fetchall())


def test_ready_status_watchdog_and_stopping(
    tmp_path: Path, server: LocalIngestionServer, notify_socket: NotifySocket, agents: list[Agent]
) -> None:
    config = write_config(tmp_path, server.url)
    env = {"NOTIFY_SOCKET": notify_socket.name, "WATCHDOG_USEC": "1000000"}
    agent = Agent(config, env=env)
    agents.append(agent)

    ready = notify_socket.wait("READY", "1")
    status = notify_socket.wait("STATUS")
    assert "0 to upload" in status["STATUS"] and "last delivery none yet" in status["STATUS"]
    notify_socket.wait("WATCHDOG", "1")
    assert ready  # READY=1 came once the queue was open and the watcher ran

    _drop(tmp_path / "captures", ["a.csv", "b.csv", "c.csv"])
    wait_for(lambda: len(_delivered(server)) == 3)
    status = notify_socket.wait("STATUS", contains="last delivery 20")
    assert status["STATUS"].startswith("0 to upload"), status

    pings = [f for _, f in notify_socket.drain(1.6) if f.get("WATCHDOG") == "1"]
    assert len(pings) >= 2, "an idle, healthy agent keeps pinging (every WATCHDOG_USEC/2)"

    started = time.monotonic()
    assert agent.stop(timeout=10) == 0
    assert time.monotonic() - started < 10
    notify_socket.wait("STOPPING", "1", timeout=1)


def test_hung_upload_stops_watchdog_pings_and_sigterm_keeps_the_file(
    tmp_path: Path, server: LocalIngestionServer, notify_socket: NotifySocket, agents: list[Agent]
) -> None:
    # The server holds every upload for a minute and the agent's read timeout is an hour:
    # a real hang, not a simulated one.
    server.set_faults(FaultConfig(latency_ms=60_000))
    config = write_config(tmp_path, server.url, "[health]\nstall_seconds = 1.5\n")
    text = config.read_text().replace("retry_base", "timeout_seconds = 3600\nretry_base")
    config.write_text(text)
    env = {"NOTIFY_SOCKET": notify_socket.name, "WATCHDOG_USEC": "600000"}
    agent = Agent(config, env=env)
    agents.append(agent)
    notify_socket.wait("READY", "1")
    idle = [f for _, f in notify_socket.drain(1.0) if f.get("WATCHDOG") == "1"]
    assert len(idle) >= 2, "idle by design: pings go on"

    _drop(tmp_path / "captures", ["hang.csv"])
    wait_for(lambda: "withholding the systemd watchdog ping" in agent.log, timeout=10)
    silent = [f for _, f in notify_socket.drain(1.5) if f.get("WATCHDOG") == "1"]
    assert silent == [], "a hung upload must stop the watchdog pings"
    assert "uploads stalled: 1 in flight" in agent.log
    notify_socket.wait("STATUS", contains="uploads stalled: 1 in flight", timeout=5)

    started = time.monotonic()
    assert agent.stop(timeout=10) == 0
    assert time.monotonic() - started < 10, "SIGTERM stops within 10 s even with a hung upload"
    assert _queue_states(tmp_path / "state" / "queue.db") == {0: 1}, "the file is pending again"

    server.set_faults(FaultConfig())
    again = Agent(config)
    agents.append(again)
    wait_for(lambda: "hang.csv" in _delivered(server), timeout=15)
    assert again.stop() == 0


def test_sigterm_mid_burst_loses_nothing(
    tmp_path: Path, server: LocalIngestionServer, agents: list[Agent]
) -> None:
    server.set_faults(FaultConfig(latency_ms=150))
    config = write_config(tmp_path, server.url)
    agent = Agent(config)
    agents.append(agent)
    wait_for(lambda: "edge-uploader running" in agent.log)
    names = [f"f{i:02d}.csv" for i in range(40)]
    _drop(tmp_path / "captures", names)
    wait_for(lambda: len(server.index_lines()) >= 5, timeout=15)

    started = time.monotonic()
    assert agent.stop(timeout=10) == 0
    assert time.monotonic() - started < 10
    states = _queue_states(tmp_path / "state" / "queue.db")
    assert set(states) <= {0, 2}, f"only pending or delivered after a clean stop: {states}"
    # (a file whose event was still on its way at the stop is not recorded yet: the file
    # system is the truth until then, and the start-up scan finds it)

    server.set_faults(FaultConfig())
    again = Agent(config)
    agents.append(again)
    # (the uploads in flight may all have finished before the first agent stopped: the
    # second must be running before it is asked to stop)
    wait_for(lambda: "edge-uploader running" in again.log)
    wait_for(lambda: set(_delivered(server)) == set(names), timeout=20)
    assert again.stop() == 0
    assert _queue_states(tmp_path / "state" / "queue.db") == {2: len(names)}


def test_sighup_applies_a_valid_config_and_rejects_an_invalid_one(
    tmp_path: Path, server: LocalIngestionServer, notify_socket: NotifySocket, agents: list[Agent]
) -> None:
    config = write_config(tmp_path, server.url)
    agent = Agent(config, env={"NOTIFY_SOCKET": notify_socket.name})
    agents.append(agent)
    notify_socket.wait("READY", "1")
    _drop(tmp_path / "captures", ["before.csv"])
    wait_for(lambda: "before.csv" in _delivered(server))
    assert _delivered(server)["before.csv"]["site"] == "lab"

    # Queued work survives a reload: the service refuses uploads while we reload.
    server.set_faults(FaultConfig(fail_rate=1.0, fail_status=503))
    _drop(tmp_path / "captures", ["queued1.csv", "queued2.csv"])
    wait_for(lambda: "will retry" in agent.log)

    # 1. a valid config: new metadata and a second watch folder
    second = tmp_path / "second"
    second.mkdir()
    valid = config.read_text().replace('site = "lab"', 'site = "field"')
    valid += '\n[[watch]]\npath = "second"\nsettle_seconds = 0.2\n'
    config.write_text(valid)
    mark = time.monotonic()
    agent.signal(signal.SIGHUP)
    reloading = notify_socket.wait("RELOADING", "1", since=mark)
    assert reloading["MONOTONIC_USEC"].isdigit()
    notify_socket.wait("READY", "1", since=mark)
    wait_for(lambda: "config reloaded: 2 watch folder(s)" in agent.log)

    server.set_faults(FaultConfig())
    _drop(second, ["after.csv"])
    wait_for(lambda: {"queued1.csv", "queued2.csv", "after.csv"} <= set(_delivered(server)),
             timeout=15)  # fmt: skip
    assert _delivered(server)["after.csv"]["site"] == "field"

    # 2. an invalid config: logged, refused, the running config stays
    config.write_text(valid.replace('site = "field"', "site = [oops"))
    mark = time.monotonic()
    agent.signal(signal.SIGHUP)
    notify_socket.wait("RELOADING", "1", since=mark)
    notify_socket.wait("READY", "1", since=mark)
    wait_for(lambda: "reload refused, the running config stays" in agent.log)
    assert "not valid TOML" in agent.log
    notify_socket.wait("STATUS", contains="last reload refused", since=mark, timeout=5)
    assert agent.proc.poll() is None
    _drop(second, ["still.csv"])
    wait_for(lambda: "still.csv" in _delivered(server))
    assert _delivered(server)["still.csv"]["site"] == "field"

    # 3. a config error of another kind (a key typo) is refused the same way
    config.write_text(valid.replace("settle_seconds = 0.2\n", "settle_secnds = 0.2\n", 1))
    agent.signal(signal.SIGHUP)
    wait_for(lambda: "settle_secnds: unknown key" in agent.log)
    assert agent.proc.poll() is None
    assert agent.stop() == 0
