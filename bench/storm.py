"""The harness behind ``bench/crashstorm.py`` and ``bench/powercut.py`` (and their tests).

A real agent (``edge-uploader run``) watches three folders (after upload: keep, delete,
move) and sends to the real local ingestion server with seeded faults: failed requests,
dropped connections and replies lost after the sample was stored. Files arrive in bursts;
during each burst the agent is killed with SIGKILL at a random moment, then restarted on
what survived. With ``power`` the queue and every folder live on ``bench/powerfs.py``,
and each kill is a power cut: the file system forgets whatever was not synced.

After every kill, and at the end, the invariants are checked:

- **lost**: a file the device finished writing (synced, renamed, folder synced) that is
  neither on the local disk (its folder or the move target) nor stored at the server, or
  one of the folders that keep or move it that is not on the local disk at all (a moved
  file must survive in one of the two places);
- **stored twice**: a name stored more than once at the server (the agent always asks
  ``x-disallow-duplicates``, so a re-send after a lost reply must be refused);
- **integrity**: ``PRAGMA integrity_check`` of the queue is not ``ok``.
"""

from __future__ import annotations

import collections
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge_uploader.core.files import sync_folder

ROOT = Path(__file__).resolve().parent.parent
KEY = "ei_storm_key_0000000"
FOLDERS = ("keep", "del", "mov")
KEPT_LOCALLY = (".keep.json", ".mov.json")
"""Names of the files kept or moved after delivery (the folder is in the name)."""


@dataclass(frozen=True)
class Scenario:
    files: int
    kills: int
    seed: int = 1
    fail_rate: float = 0.05
    drop_rate: float = 0.02
    lose_rate: float = 0.02
    power: bool = False
    model: str = "ext4"
    """With ``power``: the file system's model (``bench/powerfs.py``), ext4 or posix."""
    kill_window: float = 1.5
    """Seconds after the agent is up within which the kill falls (uniformly)."""
    drain_timeout: float = 600.0


@dataclass
class Result:
    written: int = 0
    kills: int = 0
    stored: int = 0
    lost: list[str] = field(default_factory=list)
    stored_twice: list[str] = field(default_factory=list)
    integrity: list[str] = field(default_factory=list)
    kept_entries: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    """Re-sends the server refused as duplicates (after a lost reply or a lost state)."""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.stored_twice or self.integrity) and self.stored > 0


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("EI_", "NOTIFY_"))}
    e["PYTHONPATH"] = str(ROOT)
    e["PYTHONUNBUFFERED"] = "1"
    return e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class PowerMount:
    """``bench/powerfs.py`` mounted as a child process; ``cut`` drops the unsynced."""

    def __init__(self, state: Path, mnt: Path, seed: int, model: str = "ext4") -> None:
        self.state, self.mnt, self.seed, self.model = state, mnt, seed, model
        self.proc: subprocess.Popen[bytes] | None = None
        self.lives = 0

    def up(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self.mnt.mkdir(parents=True, exist_ok=True)
        log = open(self.state.parent / "powerfs.log", "ab")  # noqa: SIM115 - child's
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "powerfs.py"), str(self.state),
             str(self.mnt), "--seed", str(self.seed + self.lives), "--model", self.model],
            stdout=log, stderr=subprocess.STDOUT, env=env(),
        )  # fmt: skip
        log.close()
        self.lives += 1
        wait(lambda: os.path.ismount(self.mnt), 20, f"powerfs on {self.mnt}")

    def ask(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(60)
            s.connect(str(self.state / "control.sock"))
            s.sendall(command.encode() + b"\n")
            return s.makefile("r").readline().strip()

    def cut(self, command: str = "cut") -> str:
        answer = self.ask(command)
        self.down()
        return answer

    def down(self) -> None:
        if subprocess.run(["umount", str(self.mnt)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True)
        if self.proc is not None:
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Writer(threading.Thread):
    """The device: writes each file to a hidden temporary, renames it into place; with
    ``durable`` it syncs the file before and the folder after the rename, the way a
    capture program that wants its files to survive a power cut does."""

    def __init__(self, items: list[tuple[Path, bytes]], durable: bool) -> None:
        super().__init__(daemon=True)
        self.items, self.durable = items, durable
        self.stop = threading.Event()
        self.started_names: list[str] = []
        self.done: list[str] = []

    def run(self) -> None:
        for path, body in self.items:
            if self.stop.is_set():
                return
            self.started_names.append(path.name)
            try:
                self._write(path, body)
            except OSError:
                return  # the mount went away under it: the cut
            self.done.append(path.name)

    def _write(self, path: Path, body: bytes) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(body)
            if self.durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.rename(tmp, path)
        if self.durable:
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


class Storm:
    """One run of a scenario in ``work`` (a fresh folder)."""

    def __init__(self, scenario: Scenario, work: Path) -> None:
        self.sc, self.work = scenario, work
        self.rng = random.Random(scenario.seed)
        self.mount = (
            PowerMount(work / "fs" / "state", work / "fs" / "mnt", scenario.seed, scenario.model)
            if scenario.power
            else None
        )
        self.base = work / "fs" / "mnt" if scenario.power else work / "device"
        self.server_dir = work / "server"
        self.log = work / "agent.log"
        self.done: list[str] = []
        self.result = Result()
        self.server: subprocess.Popen[str] | None = None
        self.agent: subprocess.Popen[bytes] | None = None

    # --- the pieces --------------------------------------------------------------------

    def start_server(self) -> None:
        key = self.work / "server.key"
        key.write_text(KEY)
        self.port = free_port()
        sc = self.sc
        self.server = subprocess.Popen(
            [sys.executable, "-m", "edge_uploader", "local-ingestion", "--host", "127.0.0.1",
             "--port", str(self.port), "--data-dir", str(self.server_dir), "--api-key-file",
             str(key), "--quiet", "--fail-rate", str(sc.fail_rate), "--drop-rate",
             str(sc.drop_rate), "--lose-reply-rate", str(sc.lose_rate), "--seed", str(sc.seed)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env(),
        )  # fmt: skip
        assert self.server.stdout is not None
        line = self.server.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"local ingestion server did not start: {line!r}")

    def write_config(self) -> Path:
        key = self.work / "agent.key"
        key.write_text(KEY)
        watches = "".join(
            f'\n[[watch]]\npath = "{self.base / "captures" / name}"\nsettle_seconds = 0.2\n'
            + {"keep": "", "del": 'after_upload = "delete"\n',
               "mov": f'after_upload = "move"\nmove_to = "{self.base / "done"}"\n'}[name]
            for name in FOLDERS
        )  # fmt: skip
        cfg = self.work / "agent.toml"
        cfg.write_text(
            f'[device]\nid = "storm-01"\n\n[ingestion]\nurl = "http://127.0.0.1:{self.port}"\n'
            f'api_key_file = "{key}"\nretry_base_seconds = 0.05\nretry_max_seconds = 0.5\n\n'
            f'[queue]\npath = "{self.base / "queue.db"}"\nscan_interval_seconds = 2\n{watches}'
        )
        return cfg

    def start_agent(self, cfg: Path) -> None:
        with open(self.log, "ab") as log:
            self.agent = subprocess.Popen(
                [sys.executable, "-m", "edge_uploader", "run", "--config", str(cfg)],
                stdout=log, stderr=subprocess.STDOUT, env=env(),
            )  # fmt: skip

    def runs_started(self) -> int:
        if not self.log.exists():
            return 0
        return self.log.read_text(errors="replace").count("edge-uploader running")

    def index(self) -> list[dict[str, object]]:
        """The server's stored samples; a line it is still writing is waited for."""
        path = self.server_dir / "index.jsonl"
        if not path.exists():
            return []
        text = path.read_text()
        for _ in range(100):
            if not text or text.endswith("\n"):
                break
            time.sleep(0.02)
            text = path.read_text()
        return [json.loads(x) for x in text.splitlines() if x.strip()]

    def batch(self, first: int, count: int) -> list[tuple[Path, bytes]]:
        items = []
        for i in range(first, first + count):
            folder = self.base / "captures" / FOLDERS[i % 3]
            name = f"f{i:05d}.{FOLDERS[i % 3]}.json"
            body = json.dumps(
                {"n": name, "r": self.rng.randbytes(self.rng.randint(50, 1500)).hex()}
            )
            items.append((folder / name, body.encode()))
        return items

    # --- the checks --------------------------------------------------------------------

    def local_names(self) -> set[str]:
        names = set()
        for top in (self.base / "captures", self.base / "done"):
            for _, _, files in os.walk(top):
                names.update(f for f in files if not f.startswith("."))
        return names

    def check(self, when: str) -> None:
        """The invariants, on what the device holds now and what the server stored."""
        stored = collections.Counter(str(r["fileName"]) for r in self.index())
        here = self.local_names()
        r = self.result
        r.lost = sorted(
            n for n in self.done
            if n not in here and (n not in stored or n.endswith(KEPT_LOCALLY))
        )  # fmt: skip
        r.stored_twice = sorted(n for n, c in stored.items() if c > 1)
        r.stored = len(stored)
        queue = self.base / "queue.db"
        if queue.exists():
            con = sqlite3.connect(queue)
            try:
                verdict = con.execute("PRAGMA integrity_check").fetchone()[0]
            except sqlite3.Error as exc:
                verdict = str(exc)
            finally:
                con.close()
            if verdict != "ok":
                r.integrity.append(f"{when}: {verdict}")
        if r.lost or r.stored_twice:
            raise AssertionError(f"{when}: lost {r.lost[:5]}, stored twice {r.stored_twice[:5]}")

    # --- the run -----------------------------------------------------------------------

    def run(self) -> Result:
        started = time.monotonic()
        self.work.mkdir(parents=True, exist_ok=True)
        self.start_server()
        try:
            if self.mount:
                self.mount.up()
            for name in FOLDERS:
                (self.base / "captures" / name).mkdir(parents=True, exist_ok=True)
            for folder in [self.base / "captures" / n for n in FOLDERS]:
                sync_folder(folder)
            sync_folder(self.base / "captures")
            sync_folder(self.base)
            cfg = self.write_config()
            per = -(-self.sc.files // max(1, self.sc.kills))
            left: list[tuple[Path, bytes]] = []
            for k in range(self.sc.kills):
                first = k * per
                burst = self.batch(first, max(0, min(per, self.sc.files - first)))
                left = self.life(cfg, left + burst)
                self.check(f"after kill {k + 1}")
            self.drain(cfg, left)
            self.check("at the end")
        finally:
            self.stop()
        self.result.seconds = time.monotonic() - started
        return self.result

    def life(self, cfg: Path, items: list[tuple[Path, bytes]]) -> list[tuple[Path, bytes]]:
        """Start the agent, write one burst, kill at a random moment; returns the files the
        device has yet to write. Without power the device writes on while the agent is
        dead; a cut stops it too (the file it was writing is abandoned)."""
        before = self.runs_started()
        self.start_agent(cfg)
        writer = Writer(items, durable=self.sc.power)
        writer.start()
        if self.rng.random() < 0.2:  # during start-up and recovery
            time.sleep(self.rng.uniform(0.0, 1.0))
        else:
            wait(lambda: self.runs_started() > before or self.agent_dead(), 120, "the agent")
            time.sleep(self.rng.uniform(0.0, self.sc.kill_window))
        self.kill_agent()
        if self.sc.power:
            writer.stop.set()
        writer.join()
        self.done.extend(writer.done)
        self.result.written = len(self.done)
        self.result.kills += 1
        if self.mount:
            self.result.kept_entries.append(self.mount.cut())
            self.mount.up()
        return items[len(writer.started_names) :]

    def agent_dead(self) -> bool:
        return self.agent is None or self.agent.poll() is not None

    def kill_agent(self) -> None:
        if self.agent is not None:
            self.agent.kill()
            self.agent.wait()
            self.agent = None

    def drain(self, cfg: Path, left: list[tuple[Path, bytes]]) -> None:
        """A last agent delivers what is left; it is stopped with SIGTERM when done."""
        before = self.runs_started()
        self.start_agent(cfg)
        writer = Writer(left, durable=self.sc.power)
        writer.run()
        self.done.extend(writer.done)
        self.result.written = len(self.done)
        want = set(self.done)

        def delivered() -> bool:
            return want <= {str(r["fileName"]) for r in self.index()}

        wait(delivered, self.sc.drain_timeout, "every file at the server")
        wait(lambda: self.runs_started() > before, 60, "the last agent to finish starting")
        assert self.agent is not None
        self.agent.terminate()
        try:
            self.agent.wait(60)
        except subprocess.TimeoutExpired:
            tail = self.log.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError("the last agent did not stop within 60 s of SIGTERM:\n"
                               + "\n".join(tail)) from None  # fmt: skip
        self.agent = None
        con = sqlite3.connect(self.base / "queue.db")
        try:
            rows = con.execute("SELECT state, COUNT(*) FROM files GROUP BY state").fetchall()
        finally:
            con.close()
        names = {0: "pending", 1: "uploading", 2: "delivered", 3: "dead", 4: "held", 5: "gone"}
        self.result.rows = {names.get(s, str(s)): n for s, n in rows}
        self.result.refused = self.log.read_text(errors="replace").count(".delivery: duplicate ")

    def stop(self) -> None:
        self.kill_agent()
        if self.mount:
            self.mount.down()
        if self.server is not None:
            self.server.terminate()
            self.server.wait(10)
            self.server = None
