"""Files changing under the agent: the real agent process, the real local ingestion
server, real inotify and SQLite.

Appended to or replaced after queueing, rewritten after delivery, deleted in flight, a
folder renamed while its files wait, symbolic links out of a watched folder, names that
break lines or are not UTF-8, and 20,000 files dropped at once (past the kernel's inotify
queue). What the service stores is always a complete version of a file, the final one is
delivered once, and nothing else is sent or lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import Agent, LocalServer, child_env, free_port, wait_for, write_config


def config(tmp_path: Path, url: str, *, scan: float = 2, watch: str = "") -> Path:
    (tmp_path / "captures").mkdir(exist_ok=True)
    return write_config(tmp_path / "agent.toml", f"""
[device]
id = "pi-0042"

[ingestion]
url = "{url}"
api_key_file = "{tmp_path / "api_key"}"
retry_base_seconds = 0.05
retry_max_seconds = 0.5

[queue]
path = "{tmp_path / "queue.db"}"
scan_interval_seconds = {scan}

[[watch]]
path = "{tmp_path / "captures"}"
settle_seconds = 0.2
recursive = true
metadata = {{ session = "{{dir}}" }}
{watch}
""")  # fmt: skip


def rows(tmp_path: Path) -> list[tuple[Any, ...]]:
    """(path, state, last_error, sha256) of every queue row; paths as the agent sees them."""
    db = tmp_path / "queue.db"
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        found = con.execute("SELECT path, state, last_error, sha256 FROM files ORDER BY id")
        return [(os.fsdecode(p) if isinstance(p, bytes) else p, *rest) for p, *rest in found]
    except sqlite3.OperationalError:  # the agent is still creating the schema
        return []
    finally:
        con.close()


PENDING, UPLOADING, DELIVERED, GONE = 0, 1, 2, 5


def states(tmp_path: Path, path: Path) -> list[int]:
    return [r[1] for r in rows(tmp_path) if r[0] == str(path)]


def settled(tmp_path: Path) -> bool:
    """Nothing left to send."""
    found = rows(tmp_path)
    return bool(found) and all(r[1] not in (PENDING, UPLOADING) for r in found)


def stored(srv: LocalServer, rec: dict[str, Any]) -> bytes:
    return (srv.data_dir / "files" / str(rec["sampleId"]) / rec["fileName"]).read_bytes()


def write(path: Path, data: bytes, mode: str = "wb") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as fh:
        fh.write(data)


@pytest.fixture
def later(tmp_path: Path, key_file: Path) -> Any:
    """A server on a fixed port that is not up yet: files wait in the queue for it."""
    srv = LocalServer(tmp_path / "ingestion", key_file, port=free_port())
    yield srv
    srv.stop()


@pytest.mark.parametrize("change", ["append", "replace"])
def test_a_file_changed_after_queueing_is_delivered_complete_once(tmp_path, later, agents, change):
    """The queued version is never sent once the file changed (its size or time differ):
    its row becomes gone, and the version the writer finished is delivered, once."""
    agents.append(Agent(config(tmp_path, later.url), tmp_path / "agent.log").start())
    f = tmp_path / "captures" / "take.csv"
    write(f, b"t,x\n" + b"1,2\n" * 100)
    wait_for(lambda: states(tmp_path, f), timeout=20)
    final = b"t,x\n" + b"1,2\n" * 100 + b"3,4\n" * 50
    if change == "append":
        write(f, b"3,4\n" * 50, "ab")
    else:
        write(tmp_path / "captures" / ".take.csv.tmp", final)
        os.replace(tmp_path / "captures" / ".take.csv.tmp", f)
    wait_for(lambda: len(states(tmp_path, f)) == 2, timeout=20)
    later.start()
    wait_for(lambda: settled(tmp_path) and later.index(), timeout=30)
    (rec,) = later.index()
    assert stored(later, rec) == final
    assert rec["sha256"] == hashlib.sha256(final).hexdigest()
    assert sorted(states(tmp_path, f)) == [DELIVERED, GONE]
    (gone,) = [r for r in rows(tmp_path) if r[1] == GONE]
    assert "changed after it was queued" in gone[2]


def test_a_file_rewritten_after_delivery_is_a_new_sample(tmp_path, server, agents):
    agents.append(Agent(config(tmp_path, server.url), tmp_path / "agent.log").start())
    f = tmp_path / "captures" / "latest.csv"
    write(f, b"a,b\n1,1\n")
    wait_for(lambda: server.index(), timeout=20)
    write(f, b"a,b\n2,2\n3,3\n")  # in place, as a logger that reopens its file does
    first, second = wait_for(lambda: len(server.index()) == 2 and server.index(), timeout=20)
    assert first["sampleId"] != second["sampleId"]
    assert stored(server, first) == b"a,b\n1,1\n"  # the old sample stays delivered
    assert stored(server, second) == b"a,b\n2,2\n3,3\n"
    assert states(tmp_path, f) == [DELIVERED, DELIVERED]


def test_a_file_deleted_in_flight_is_gone_without_retries(tmp_path, later, agents):
    agent = Agent(config(tmp_path, later.url), tmp_path / "agent.log").start()
    agents.append(agent)
    f = tmp_path / "captures" / "short-lived.csv"
    write(f, b"x\n" * 10)
    wait_for(lambda: states(tmp_path, f), timeout=20)
    f.unlink()
    later.start()
    write(tmp_path / "captures" / "after.csv", b"y\n" * 10)
    wait_for(lambda: [r["fileName"] for r in later.index()] == ["after.csv"], timeout=30)
    wait_for(lambda: settled(tmp_path), timeout=10)
    assert states(tmp_path, f) == [GONE]
    assert agent.alive()
    assert agent.terminate() == 0


def test_a_folder_renamed_while_its_files_wait_loses_nothing_and_stores_nothing_twice(
    tmp_path, later, agents
):
    agents.append(Agent(config(tmp_path, later.url), tmp_path / "agent.log").start())
    old, new = tmp_path / "captures" / "run-1", tmp_path / "captures" / "run-1-checked"
    names = [f"f{i}.csv" for i in range(5)]
    for name in names:
        write(old / name, f"{name}\n".encode() * 20)
    wait_for(lambda: all(states(tmp_path, old / n) for n in names), timeout=20)
    old.rename(new)
    wait_for(lambda: all(states(tmp_path, new / n) for n in names), timeout=20)
    later.start()
    wait_for(lambda: settled(tmp_path) and len(later.index()) >= 5, timeout=30)
    index = later.index()
    assert sorted(r["fileName"] for r in index) == names  # each once
    assert {r["metadata"]["session"] for r in index} == {"run-1-checked"}
    for n in names:
        assert states(tmp_path, old / n) == [GONE]
        assert states(tmp_path, new / n) == [DELIVERED]


def test_symbolic_links_out_of_a_watched_folder_are_never_followed(tmp_path, server, agents):
    """Untrusted input never chooses a path: a link to a file or a folder outside the
    watch (here a stand-in for /etc/shadow) is not uploaded, by the scan or by events."""
    outside = tmp_path / "outside"
    write(outside / "shadow.csv", b"root:secret\n")
    write(outside / "dir" / "inner.csv", b"inner\n")
    cap = tmp_path / "captures"
    cap.mkdir()
    (cap / "link.csv").symlink_to(outside / "shadow.csv")
    (cap / "linkdir").symlink_to(outside / "dir", target_is_directory=True)
    write(cap / "zz-before.csv", b"before\n")  # the scan reaches it after the links
    agent = Agent(config(tmp_path, server.url), tmp_path / "agent.log").start()
    agents.append(agent)
    wait_for(lambda: "zz-before.csv" in [r["fileName"] for r in server.index()], timeout=20)
    (tmp_path / "ln.csv").symlink_to(outside / "shadow.csv")
    os.rename(tmp_path / "ln.csv", cap / "moved-in.csv")  # a complete-file event
    write(outside / "dir" / "later.csv", b"later\n")  # behind the folder link
    write(cap / "zz-after.csv", b"after\n")  # inotify is in order: the rest came first
    wait_for(lambda: len(server.index()) == 2, timeout=20)
    assert sorted(r["fileName"] for r in server.index()) == ["zz-after.csv", "zz-before.csv"]
    assert all(b"secret" not in stored(server, r) for r in server.index())
    assert "skipped" in agent.output() and "not a regular file" in agent.output()


ODD = [b"new\nline.csv", b"bad-\xff\xfe-utf8.csv", b"L" * 251 + b".csv", b"esc-\x1b[2J.csv"]


def test_odd_names_are_queued_sent_under_safe_names_and_logged_on_one_line(
    tmp_path, server, agents
):
    cfg = config(tmp_path, server.url)
    agent = Agent(cfg, tmp_path / "agent.log").start()
    agents.append(agent)
    cap = os.fsencode(tmp_path / "captures")
    for name in ODD:
        write(Path(os.fsdecode(cap + b"/" + name)), name * 3)
    held = cap + b"/held\n\xff.csv"
    write(Path(os.fsdecode(held + b".meta.json")), b'{"label": 3}')
    write(Path(os.fsdecode(held)), b"held\n")
    wait_for(lambda: len(server.index()) == len(ODD), timeout=30)
    by_sha = {r["sha256"]: r for r in server.index()}
    sent = {name: by_sha[hashlib.sha256(name * 3).hexdigest()] for name in ODD}
    for name, rec in sent.items():
        assert stored(server, rec) == name * 3  # the bytes of that very file
        assert rec["fileName"].isprintable() and len(rec["fileName"].encode()) <= 255
    assert [sent[n]["fileName"] for n in (ODD[0], ODD[1], ODD[3])] == [
        "new_line.csv", "bad-__-utf8.csv", "esc-_[2J.csv"
    ]  # fmt: skip
    wait_for(lambda: "held" in agent.output(), timeout=20)
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")
    lines = agent.output().splitlines()
    assert all(stamp.match(line) for line in lines), lines
    assert any("new\\nline.csv" in line for line in lines)
    status = subprocess.run(
        [sys.executable, "-m", "edge_uploader", "status", "--config", str(cfg), "--json"],
        capture_output=True, env=child_env(), check=True,
    )  # fmt: skip
    info = json.loads(status.stdout)  # valid UTF-8 JSON
    assert info["held"][0]["path"].endswith("/held\\n\\xff.csv")
    text = subprocess.run(
        [sys.executable, "-m", "edge_uploader", "status", "--config", str(cfg)],
        capture_output=True, env=child_env(), check=False,
    )  # fmt: skip
    assert b"held\\n\\xff.csv" in text.stdout and b"\xff" not in text.stdout
    assert agent.terminate() == 0


def vm_hwm_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


@pytest.mark.slow
def test_20000_files_dropped_at_once_are_each_delivered_once(tmp_path, server, agents):
    """More events than the kernel queues (``fs.inotify.max_queued_events``, 16,384 by
    default): the agent is stopped while the files land, so the queue overflows for
    sure; the overflow triggers a rescan (the periodic one is 10 minutes away)."""
    n = int(os.environ.get("CHANGING_FILES", "20000"))
    agent = Agent(config(tmp_path, server.url, scan=600), tmp_path / "agent.log").start()
    agents.append(agent)
    cap = tmp_path / "captures"
    write(cap / "first.csv", b"first\n")
    wait_for(lambda: server.index(), timeout=30)
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGSTOP)
    try:
        for i in range(n):
            write(cap / f"drop-{i:05d}.csv", f"{i}\n".encode())
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    started = time.monotonic()
    wait_for(lambda: len(server.index()) >= n + 1, timeout=600, interval=1.0)
    took = time.monotonic() - started
    wait_for(lambda: settled(tmp_path), timeout=30)
    peak = vm_hwm_kib(agent.proc.pid)
    names = [r["fileName"] for r in server.index()]
    assert len(names) == len(set(names)) == n + 1
    if n > 16384:
        assert "queue overflow" in agent.output()
    print(f"\n{n} files delivered in {took:.1f} s ({n / took:.0f} files/s); "
          f"agent peak RSS {peak / 1024:.0f} MB")  # fmt: skip
    assert peak < 120 * 1024
    assert agent.terminate() == 0
