"""End to end: real agent process, real local ingestion server, real inotify, real SQLite.

These prove the README's guarantee clause by clause: every file arrives with its
metadata, none twice, across SIGKILLs, server failures, an outage and a wrong key.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import API_KEY, Agent, LocalServer, child_env, wait_for, write_config


def agent_config(tmp_path: Path, server_url: str, key_file: Path, **over: str) -> Path:
    watch = tmp_path / "captures"
    watch.mkdir(exist_ok=True)
    extra_ing = over.get("ingestion", "")
    return write_config(
        tmp_path / "agent.toml",
        f"""
[device]
id = "pi-0042"

[metadata]
site = "north-field"
location = "shed 3"

[ingestion]
url = "{server_url}"
api_key_file = "{key_file}"
retry_base_seconds = 0.05
retry_max_seconds = 0.5
auth_pause_seconds = 0.5
{extra_ing}

[queue]
path = "{tmp_path / "queue.db"}"
scan_interval_seconds = 2

[[watch]]
path = "{watch}"
settle_seconds = 0.2
metadata = {{ session = "{{dir}}" }}
{over.get("watch", "")}
""",
    )


def make_file(folder: Path, name: str, size: int = 2048) -> Path:
    """A file with unique content (identical bytes would be refused as duplicates)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = folder / f".{name}.tmp"
    body = (name.encode() + b"\n") * (size // (len(name) + 1) + 1)
    tmp.write_bytes(body[:size])
    tmp.rename(path)
    return path


def by_name(index: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for rec in index:
        out.setdefault(rec["fileName"], []).append(rec)
    return out


def queue_rows(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT path, state, sample_id FROM files").fetchall()
    finally:
        con.close()


def test_file_arrives_with_metadata_and_its_own_name(tmp_path, server, key_file, agents):
    cfg = agent_config(tmp_path, server.url, key_file)
    agent = Agent(cfg, tmp_path / "agent.log").start()
    agents.append(agent)
    session = tmp_path / "captures" / "run-7"
    make_file(session, "idle.01.wav")
    side = tmp_path / "captures" / "labelled.wav.meta.json"
    side.write_text(json.dumps({"label": "wave é/ü", "metadata": {"operator": "ana"}}))
    make_file(tmp_path / "captures", "labelled.wav")
    (tmp_path / "captures" / "unlab.wav.meta.json").write_text(json.dumps({"label": None}))
    make_file(tmp_path / "captures", "unlab.wav")

    index = wait_for(lambda: len(server.index()) >= 3 and server.index(), timeout=20)
    recs = by_name(index)
    idle = recs["idle.01.wav"][0]
    assert idle["label"] == "idle"  # the service's file-name convention
    assert idle["metadata"]["device_id"] == "pi-0042"
    assert idle["metadata"]["site"] == "north-field"
    assert idle["metadata"]["location"] == "shed 3"
    assert idle["metadata"]["session"] == "run-7"
    assert idle["metadata"]["captured_at"].endswith("Z")
    assert idle["headers"]["x-disallow-duplicates"] == "1"
    lab = recs["labelled.wav"][0]
    assert lab["label"] == "wave é/ü"
    assert lab["headers"]["x-label"] == "wave%20%C3%A9%2F%C3%BC"
    assert lab["metadata"]["operator"] == "ana"
    assert "session" not in lab["metadata"]  # directly in the watch: no session folder
    assert recs["unlab.wav"][0]["label"] is None
    assert "labelled.wav.meta.json" not in recs  # a sidecar is never uploaded itself
    assert agent.terminate() == 0


def test_malformed_sidecar_holds_the_file_until_fixed(tmp_path, server, key_file, agents):
    cfg = agent_config(tmp_path, server.url, key_file)
    agents.append(agent := Agent(cfg, tmp_path / "agent.log").start())
    cap = tmp_path / "captures"
    (cap / "x.wav.meta.json").write_text('{"label": 3}')
    make_file(cap, "x.wav")
    make_file(cap, "ok.wav")
    wait_for(lambda: "ok.wav" in by_name(server.index()), timeout=20)
    status = subprocess.run(
        [sys.executable, "-m", "edge_uploader", "status", "--config", str(cfg), "--json"],
        capture_output=True, text=True, env=child_env(), check=True,
    )  # fmt: skip
    info = json.loads(status.stdout)
    wait_for(lambda: "x.wav" in agent.output())
    assert info["counts"]["held"] == 1
    assert "x.wav.meta.json" in info["held"][0]["reason"]
    assert "label" in info["held"][0]["reason"]
    assert "x.wav" not in by_name(server.index())
    (cap / "x.wav.meta.json").write_text('{"label": "fixed"}')
    rec = wait_for(lambda: by_name(server.index()).get("x.wav"), timeout=20)
    assert rec[0]["label"] == "fixed"


@pytest.mark.slow
def test_sigkill_five_times_with_failing_server_loses_nothing(tmp_path, key_file, agents):
    srv = LocalServer(tmp_path / "ingestion", key_file).start("--fail-rate", "0.1", "--seed", "7")
    try:
        cfg = agent_config(tmp_path, srv.url, key_file)
        cap = tmp_path / "captures"
        rng = random.Random(42)
        names = [f"s{i // 100}/f{i:04d}.json" for i in range(500)]
        written = 0
        for _ in range(5):
            agent = Agent(cfg, tmp_path / "agent.log").start()
            agents.append(agent)
            # write some files while the agent runs, then kill it at a random moment
            for name in names[written : written + 100]:
                make_file(cap / Path(name).parent, Path(name).name, size=rng.randint(100, 4000))
            written += 100
            time.sleep(rng.uniform(0.1, 1.2))
            agent.kill()
        started = agent.output().count("edge-uploader running")
        agent = Agent(cfg, tmp_path / "agent.log").start()
        agents.append(agent)
        wait_for(lambda: len(by_name(srv.index())) >= 500, timeout=120, interval=0.2)
        # the killed agents may have delivered everything: let this one finish starting
        # (a SIGTERM during interpreter start-up kills it before its handler exists)
        wait_for(lambda: agent.output().count("edge-uploader running") > started, timeout=20)
        # a file the server stored just before a kill is sent again (and refused as a
        # duplicate): the server's count is reached before the queue has recorded it all
        wait_for(lambda: {r[1] for r in queue_rows(tmp_path / "queue.db")} == {2}, timeout=60,
                 interval=0.2)  # fmt: skip
        assert agent.terminate() == 0
        recs = by_name(srv.index())
        assert sorted(recs) == sorted(Path(n).name for n in names)
        assert all(len(v) == 1 for v in recs.values()), "a file arrived twice"
        rows = queue_rows(tmp_path / "queue.db")
        assert len(rows) == 500
        assert {r[1] for r in rows} == {2}  # all delivered
        con = sqlite3.connect(tmp_path / "queue.db")
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
        assert "Traceback" not in agent.output()
    finally:
        srv.stop()


@pytest.mark.slow
def test_thirty_second_outage_then_everything_delivered(tmp_path, key_file, agents):
    srv = LocalServer(tmp_path / "ingestion", key_file).start()
    cfg = agent_config(tmp_path, srv.url, key_file)
    agents.append(agent := Agent(cfg, tmp_path / "agent.log").start())
    cap = tmp_path / "captures"
    make_file(cap, "before.wav")
    wait_for(lambda: "before.wav" in by_name(srv.index()))
    srv.stop()
    started = time.monotonic()
    for i in range(40):
        make_file(cap / "outage", f"o{i:02d}.wav")
    wait_for(lambda: "will retry" in agent.output(), timeout=15)
    time.sleep(max(0.0, 30 - (time.monotonic() - started)))
    assert agent.alive()
    srv.start()
    wait_for(lambda: len(by_name(srv.index())) >= 41, timeout=30, interval=0.2)
    assert all(len(v) == 1 for v in by_name(srv.index()).values())
    assert agent.terminate() == 0
    srv.stop()


def test_wrong_api_key_pauses_without_dead_letters(tmp_path, server, agents):
    bad = tmp_path / "bad_key"
    bad.write_text("ei_wrong_key\n")
    cfg = agent_config(tmp_path, server.url, bad)
    agents.append(agent := Agent(cfg, tmp_path / "agent.log").start())
    for i in range(5):
        make_file(tmp_path / "captures", f"k{i}.wav")
    wait_for(lambda: agent.output().count("uploads paused") >= 2, timeout=20)
    out = agent.output()
    assert "HTTP 401" in out and "API key" in out
    assert "ei_wrong_key" not in out
    assert server.index() == []
    status = subprocess.run(
        [sys.executable, "-m", "edge_uploader", "status", "--config", str(cfg), "--json"],
        capture_output=True, text=True, env=child_env(), check=True,
    )  # fmt: skip
    info = json.loads(status.stdout)
    assert info["counts"]["dead"] == 0
    assert info["backlog"] == 5
    assert "401" in info["paused"]
    # the operator fixes the key: the agent resumes by itself
    bad.write_text(API_KEY + "\n")
    assert agent.terminate() == 0
    agents.append(agent2 := Agent(cfg, tmp_path / "agent2.log").start())
    wait_for(lambda: len(server.index()) == 5, timeout=20)
    assert agent2.terminate() == 0


def test_after_upload_delete_and_move(tmp_path, server, key_file, agents):
    moved = tmp_path / "done"
    cfg = agent_config(
        tmp_path, server.url, key_file, watch=f'after_upload = "move"\nmove_to = "{moved}"'
    )
    agents.append(agent := Agent(cfg, tmp_path / "agent.log").start())
    make_file(tmp_path / "captures" / "s1", "m.wav")
    wait_for(lambda: (moved / "s1" / "m.wav").exists(), timeout=20)
    assert not (tmp_path / "captures" / "s1" / "m.wav").exists()
    assert agent.terminate() == 0


def test_sigterm_stops_quickly(tmp_path, server, key_file, agents):
    cfg = agent_config(tmp_path, server.url, key_file)
    agents.append(agent := Agent(cfg, tmp_path / "agent.log").start())
    wait_for(lambda: "edge-uploader running" in agent.output())
    started = time.monotonic()
    assert agent.terminate() == 0
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[ingestion\n", "not valid TOML"),
        ("[ingestion]\nurll = 'http://x'\n", "ingestion.urll: unknown key"),
        ("[metadata]\nsite = 3\n", "metadata.site: metadata values must be strings"),
        (
            "[[watch]]\npath = '/nonexistent/folder'\n",
            "watch[0].path: /nonexistent/folder does not exist",
        ),
        ("[[watch]]\npath = '.'\nlabel = '{nope}'\n", "watch[0].label: unknown placeholder {nope}"),
    ],
)
def test_bad_config_exits_78_naming_the_problem(tmp_path, body, expected):
    cfg = write_config(tmp_path / "bad.toml", body)
    proc = subprocess.run(
        [sys.executable, "-m", "edge_uploader", "run", "--config", str(cfg)],
        capture_output=True, text=True, env=child_env(EI_API_KEY=API_KEY), timeout=30,
    )  # fmt: skip
    assert proc.returncode == 78
    assert str(cfg) in proc.stderr
    assert expected in proc.stderr
