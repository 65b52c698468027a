"""Timings of the daemon under a stand-in for systemd: start to READY, idle wake-ups,
reload (SIGHUP to READY) and stop (SIGTERM to exit). Prints one line per figure.

    .venv/bin/python bench/ops_timings.py
"""

from __future__ import annotations

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

KEY = "ei_bench_key_0123456789"


def main() -> None:
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
    proc = subprocess.Popen([sys.executable, "-m", "edge_uploader", "run", "--config", str(config)],
                            env=env, stderr=subprocess.DEVNULL)  # fmt: skip

    def wait_ready() -> None:
        while b"READY=1" not in sock.recv(4096):
            pass

    wait_ready()
    print(f"start to READY=1: {time.monotonic() - started:.2f} s")
    time.sleep(2)

    def switches() -> tuple[int, int]:
        total, tasks = 0, glob.glob(f"/proc/{proc.pid}/task/*/status")
        for status in tasks:
            with open(status) as handle:
                total += sum(int(line.split()[1]) for line in handle if "ctxt_switches" in line)
        return total, len(tasks)

    before, threads = switches()
    time.sleep(20)
    after, _ = switches()
    print(f"idle: {after - before} context switches in 20 s across {threads} threads")
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
    server.stop()


if __name__ == "__main__":
    main()
