"""Timings of the daemon under a stand-in for systemd: start to READY, idle wake-ups,
reload (SIGHUP to READY) and stop (SIGTERM to exit); then the same start and stop with a
backlog of ``--queued`` rows (default 100,000: a week offline), whose files exist, in the
queue. Prints one line per figure.

    .venv/bin/python bench/ops_timings.py [--queued 100000] [--idle-seconds 20] [--python P]
"""

from __future__ import annotations

import argparse
import glob
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from edge_uploader.localserver import LocalIngestionServer
from edge_uploader.store.queue import NewFile, Queue

KEY = "ei_bench_key_0123456789"


def fill(base: Path, n: int) -> None:
    """``n`` pending rows in the queue, each for a small file that exists (not watched:
    the start-up scan is not what is measured)."""
    folder = base / "backlog"
    folder.mkdir()
    files = []
    for i in range(n):
        path = folder / f"{i // 1000:03d}-{i:06d}.csv"
        if i % 1000 == 0:
            path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"t,v\n%d,1\n" % i)
        st = path.stat()
        files.append(NewFile(path=str(path), size=st.st_size, mtime_ns=st.st_mtime_ns,
                             source="backlog", label=None, category="training",
                             metadata={"site": "bench"}))  # fmt: skip
    queue = Queue(base / "q.db")
    for start in range(0, n, 10_000):
        queue.enqueue_many(files[start : start + 10_000])
    queue.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queued", type=int, default=100_000, help="rows in the backlog phase")
    ap.add_argument("--idle-seconds", type=float, default=20.0)
    ap.add_argument("--python", default=sys.executable,
                    help="the interpreter of the agent under test (an editable dev install"
                         " imports several times slower than a device's: measure one made"
                         " with `pip install .`)")  # fmt: skip
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="ops-bench-"))
    server = LocalIngestionServer(base / "server", api_keys=[KEY], quiet=True).start()
    (base / "captures").mkdir()
    (base / "key").write_text(KEY)
    (base / "key").chmod(0o600)
    config = base / "agent.toml"
    config.write_text(
        f'[ingestion]\nurl = "{server.url}"\napi_key_file = "key"\n'
        f'[queue]\npath = "q.db"\n[[watch]]\npath = "captures"\n'
        '[http]\nlisten = "127.0.0.1:0"\n'
    )
    name = f"ops-bench-{uuid.uuid4().hex[:8]}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    env = dict(os.environ, NOTIFY_SOCKET="@" + name, WATCHDOG_USEC="120000000")
    started = time.monotonic()
    proc = subprocess.Popen([args.python, "-m", "edge_uploader", "run", "--config", str(config)],
                            env=env, stderr=subprocess.DEVNULL)  # fmt: skip

    def wait_ready() -> None:
        while b"READY=1" not in sock.recv(4096):
            pass

    wait_ready()
    print(f"start to READY=1 (empty queue): {time.monotonic() - started:.2f} s")
    time.sleep(2)

    def switches() -> tuple[int, int]:
        total, tasks = 0, glob.glob(f"/proc/{proc.pid}/task/*/status")
        for status in tasks:
            with open(status) as handle:
                total += sum(int(line.split()[1]) for line in handle if "ctxt_switches" in line)
        return total, len(tasks)

    before, threads = switches()
    time.sleep(args.idle_seconds)
    after, _ = switches()
    print(f"idle: {after - before} context switches in {args.idle_seconds:.0f} s across"
          f" {threads} threads")  # fmt: skip
    reloads = []
    for _ in range(5):
        mark = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        wait_ready()
        reloads.append(time.monotonic() - mark)
    print(f"SIGHUP to READY=1: median {sorted(reloads)[2]:.2f} s of 5")
    mark = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    print(f"SIGTERM to exit (idle): {time.monotonic() - mark:.2f} s")
    if args.queued:
        (base / "q.db").unlink()
        for extra in ("q.db-wal", "q.db-shm"):
            (base / extra).unlink(missing_ok=True)
        fill(base, args.queued)
        started = time.monotonic()
        proc = subprocess.Popen([args.python, "-m", "edge_uploader", "run", "--config",
                                 str(config)], env=env, stderr=subprocess.DEVNULL)  # fmt: skip
        wait_ready()
        print(f"start to READY=1 ({args.queued:,} rows queued): "
              f"{time.monotonic() - started:.2f} s")  # fmt: skip
        time.sleep(3)  # the backlog drains
        mark = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        print(f"SIGTERM to exit (draining the backlog): {time.monotonic() - mark:.2f} s")
    server.stop()


if __name__ == "__main__":
    main()
