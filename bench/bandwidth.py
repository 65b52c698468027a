"""Metered-link figures: the bandwidth cap as measured on the wire, and upload windows.

Every byte the agent sends goes through a counting relay (a TCP forwarder on loopback in
front of the project's local ingestion server), so the rate is measured where a site's
uplink would see it, not by the agent about itself. Three runs, each its own process:

1. ``edge-uploader upload --max-bytes-per-second CAP`` on a folder bigger than the
   measuring span can drain: the rate over ``--seconds`` (after a warm-up), against the
   cap; and the same folder uncapped first, so the figure is a ratio to what the link
   could do.
2. ``edge-uploader run`` draining the same backlog with ``[ingestion]
   max_bytes_per_second = CAP``: the daemon's rate.
3. ``edge-uploader run`` with an upload window that is closed now: the bytes that reach
   the relay while files arrive (the target is 0), then ``retry-now``, which overrides the
   window: bytes flow again.

    python bench/bandwidth.py                         # cap 100 kB/s, 60 s spans
    python bench/bandwidth.py --seconds 20 --cap 200000   # a quicker look
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from edge_uploader.localserver import LocalIngestionServer

ROOT = Path(__file__).resolve().parent.parent
KEY = "ei_bench_bandwidth_key"
WARMUP_SECONDS = 3.0


class Relay:
    """Forwards TCP to ``target`` and timestamps every byte sent towards it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.marks: list[tuple[float, int]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                if count:
                    with self.lock:
                        self.marks.append((time.monotonic(), len(data)))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def bytes_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(n for t, n in self.marks if start <= t < end)

    def total(self) -> int:
        with self.lock:
            return sum(n for _, n in self.marks)


def make_files(folder: Path, total_bytes: int, size: int = 50_000) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    n = total_bytes // size + 1
    for i in range(n):
        (folder / f"clip.{i:05d}.wav").write_bytes(os.urandom(size))
    return n


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("EI_")}
    e.update(EI_API_KEY=KEY, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return e


def agent_config(work: Path, url: str, extra: str) -> Path:
    (work / "captures").mkdir(exist_ok=True)
    cfg = work / "agent.toml"
    cfg.write_text(f"""
[device]
id = "bench-bw"

[ingestion]
url = "{url}"
retry_base_seconds = 0.2
retry_max_seconds = 2
{extra}

[queue]
path = "{work / "queue.db"}"

[[watch]]
path = "{work / "captures"}"
settle_seconds = 0.2
""")
    return cfg


def measure(relay: Relay, seconds: float) -> float:
    """Bytes per second over ``seconds`` after the warm-up (the caller started sending)."""
    start = time.monotonic() + WARMUP_SECONDS
    time.sleep(WARMUP_SECONDS + seconds)
    return relay.bytes_between(start, start + seconds) / seconds


def run_upload(work: Path, relay: Relay, files: Path, cap: int | None,
               seconds: float) -> float:  # fmt: skip
    cmd = [sys.executable, "-m", "edge_uploader", "upload", "--no-progress",
           "--no-captured-at", str(files)]  # fmt: skip
    if cap is not None:
        cmd[4:4] = ["--max-bytes-per-second", str(cap)]
    e = env() | {"EI_INGESTION_URL": f"http://127.0.0.1:{relay.port}",
                 "XDG_STATE_HOME": str(work / f"state-{cap}")}  # fmt: skip
    if cap is None:  # uncapped: how long the whole folder takes, for the ratio
        started = time.monotonic()
        subprocess.run(cmd, env=e, check=True, capture_output=True)
        return relay.total() / (time.monotonic() - started)
    proc = subprocess.Popen(cmd, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return measure(relay, seconds)
    finally:
        proc.terminate()
        proc.wait(30)


def run_daemon(work: Path, relay: Relay, extra: str, files: Path | None) -> subprocess.Popen[bytes]:
    cfg = agent_config(work, f"http://127.0.0.1:{relay.port}", extra)
    if files is not None:
        for p in sorted(files.iterdir()):
            os.link(p, work / "captures" / p.name)
    log = open(work / "agent.log", "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen([sys.executable, "-m", "edge_uploader", "run", "--config", str(cfg)],
                            env=env(), stdout=log, stderr=subprocess.STDOUT)  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(30)


def closed_window() -> str:
    start = (time.localtime().tm_hour + 2) % 24
    return f"{start:02d}:00-{(start + 1) % 24:02d}:00"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cap", type=int, default=100_000, help="bytes per second (default 100000)")
    ap.add_argument("--seconds", type=float, default=60.0, help="measuring span (default 60)")
    args = ap.parse_args()
    cap, span = args.cap, args.seconds
    with tempfile.TemporaryDirectory(prefix="edge-uploader-bw-") as tmp:
        base = Path(tmp)
        server = LocalIngestionServer(base / "server", api_keys=[KEY], quiet=True).start()
        try:
            files = base / "files"
            n = make_files(files, int(cap * (span + WARMUP_SECONDS) * 1.3))
            print(f"{n} files of 50 kB ({n * 50 // 1000} MB); cap {cap} B/s; spans of {span:.0f} s")

            relay = Relay(("127.0.0.1", server.port))
            link = run_upload(base / "u0", relay, files, None, span)
            print(f"  uncapped link (the same folder, upload): {link / 1000:,.0f} kB/s")

            relay = Relay(("127.0.0.1", server.port))
            rate = run_upload(base / "u1", relay, files, cap, span)
            report("upload --max-bytes-per-second", rate, cap)
            relay = Relay(("127.0.0.1", server.port))
            rate = _daemon_rate(base / "d1", relay, cap, files, span)
            report("run, max_bytes_per_second", rate, cap)

            relay = Relay(("127.0.0.1", server.port))
            work = base / "w1"
            work.mkdir()
            window = closed_window()
            proc = run_daemon(work, relay, f'upload_windows = ["{window}"]', files)
            try:
                time.sleep(min(span, 20.0))
                outside = relay.total()
                print(
                    f"  window {window} (closed now): {outside} bytes sent in "
                    f"{min(span, 20.0):.0f} s with {n} files queued (target 0)"
                )
                subprocess.run([sys.executable, "-m", "edge_uploader", "retry-now", "--config",
                                str(work / "agent.toml")], env=env(), check=True,
                               capture_output=True)  # fmt: skip
                time.sleep(5)
                print(
                    f"  after retry-now (overrides the window): {relay.total() - outside:,}"
                    " bytes in 5 s"
                )
            finally:
                stop(proc)
        finally:
            server.stop()
    return 0


def report(label: str, rate: float, cap: int) -> None:
    print(f"  {label:32s} {rate / 1000:8.1f} kB/s  = {rate / cap:.3f} x the cap"
          f"  ({(rate - cap) / cap * 100:+.1f} %; target within 5 %)")  # fmt: skip


def _daemon_rate(work: Path, relay: Relay, cap: int, files: Path, span: float) -> float:
    work.mkdir()
    proc = run_daemon(work, relay, f"max_bytes_per_second = {cap}", files)
    try:
        return measure(relay, span)
    finally:
        stop(proc)


if __name__ == "__main__":
    sys.exit(main())
