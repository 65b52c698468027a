"""A watched folder full of hostile sidecars: the agent stays up and holds each data file
with the reason, naming the sidecar, while good files beside them are delivered.

The sidecars come from the seeded generator in ``tests/fuzzdocs.py`` (truncated JSON,
wrong types, huge values, deep nesting, unknown keys, BOM, invalid UTF-8, paths and NUL
bytes in fields, over 64 KiB), plus what a file system can put at a sidecar's name: a
FIFO and a link to a device. The 5,000-digit number is the case the parser fuzz found.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

from edge_uploader.core.sidecar import parse_sidecar
from edge_uploader.errors import SidecarError
from tests.fuzzdocs import sidecar
from tests.integration.test_delivery import agent_config, by_name, make_file
from tests.support import Agent, child_env, wait_for

SEED = 20261202
HOSTILE = 120
GOOD = 10


def refused(raw: bytes) -> bool:
    try:
        parse_sidecar(raw, "x")
    except SidecarError:
        return True
    return False


def test_hostile_sidecars_hold_their_files_and_the_agent_stays_up(
    tmp_path, server, key_file, agents
):
    cfg = agent_config(tmp_path, server.url, key_file)
    agents.append(agent := Agent(cfg, tmp_path / "agent.log").start())
    cap = tmp_path / "captures"
    rng = random.Random(SEED)
    docs = [b'{"label": ' + b"1" * 5000 + b"}", b"[" * 20_000 + b"]" * 20_000]
    while len(docs) < HOSTILE:
        raw, _ = sidecar(rng)
        if refused(raw):
            docs.append(raw)
    for i, raw in enumerate(docs):
        (cap / f"h{i:03d}.wav.meta.json").write_bytes(raw)
        make_file(cap, f"h{i:03d}.wav")
    os.mkfifo(cap / "fifo.wav.meta.json")
    make_file(cap, "fifo.wav")
    (cap / "dev.wav.meta.json").symlink_to("/dev/zero")
    make_file(cap, "dev.wav")
    for i in range(GOOD):
        (cap / f"good{i}.wav.meta.json").write_text(json.dumps({"label": f"ok {i}"}))
        make_file(cap, f"good{i}.wav")
    hostile = [f"h{i:03d}.wav" for i in range(HOSTILE)] + ["fifo.wav", "dev.wav"]

    def status() -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "edge_uploader", "status", "--config", str(cfg), "--json",
             "--limit", "1000"],
            capture_output=True, text=True, env=child_env(), check=True,
        )  # fmt: skip
        return json.loads(done.stdout)

    wait_for(lambda: len(by_name(server.index())) >= GOOD, timeout=60)
    info = wait_for(lambda: (s := status())["counts"]["held"] >= len(hostile) and s, timeout=60)
    assert agent.alive()
    assert info["counts"]["held"] == len(hostile)
    held = {os.path.basename(h["path"]): h["reason"] for h in info["held"]}
    assert sorted(held) == sorted(hostile)
    for name, reason in held.items():
        assert f"{name}.meta.json" in reason, (name, reason)
    assert "not valid JSON" in held["h000.wav"] and "not valid JSON" in held["h001.wav"]
    assert "not a regular file" in held["fifo.wav"] and "not a regular file" in held["dev.wav"]
    delivered = by_name(server.index())
    assert sorted(delivered) == sorted(f"good{i}.wav" for i in range(GOOD))
    assert agent.terminate() == 0
