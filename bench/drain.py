"""Drain benchmark: the agent against a naive sequential httpx loop, in the same run.

A backlog (default 2,000 files of 2 KB and 200 of 200 KB) is drained into the local
ingestion server over loopback, first by ``edge-uploader run`` with its full durability
(SQLite queue, hashing, metadata), then by a naive loop (one httpx client, one POST after
another, no queue) over the same files into a fresh server. Both run as child processes
measured the same way: wall time from process start to the last sample stored, peak RSS
(VmHWM) and CPU seconds. Then the agent idles for ``--idle-seconds`` to measure idle CPU.

    python bench/drain.py                 # full run (about a minute)
    python bench/drain.py --small 200 --large 20 --idle-seconds 5   # quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "ei_bench_key_000000"
TICK = os.sysconf("SC_CLK_TCK")

NAIVE = textwrap.dedent(
    """
    import json, sys, os, httpx
    url, key, folder = sys.argv[1], sys.argv[2], sys.argv[3]
    meta = json.dumps({"site": "bench", "location": "lab", "device_id": "bench-01"},
                      separators=(",", ":"))
    headers = {"x-api-key": key, "x-disallow-duplicates": "1", "x-metadata": meta}
    with httpx.Client(timeout=60) as client:
        for root, _, files in os.walk(folder):
            for name in sorted(files):
                with open(os.path.join(root, name), "rb") as fh:
                    r = client.post(url + "/api/training/files", headers=headers,
                                    files={"data": (name, fh, "application/octet-stream")})
                r.raise_for_status()
    """
)


def make_backlog(folder: Path, small: int, large: int) -> int:
    total = 0
    for i in range(small + large):
        size = 2_000 if i < small else 200_000
        sub = folder / f"session-{i // 250:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        head = f"sample {i}\n".encode()
        body = (head * (size // len(head) + 1))[:size]
        (sub / f"s{i:05d}.wav").write_bytes(body)
        total += size
    old = time.time() - 60
    for p in folder.rglob("*.wav"):
        os.utime(p, (old, old))
    return total


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 16), b""))
    except FileNotFoundError:
        return 0


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS in bytes) of a live process."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    peak = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return cpu, peak


def start_server(data: Path, port: int) -> subprocess.Popen[str]:
    keyfile = data.parent / f"{data.name}.key"
    keyfile.write_text(KEY)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_uploader", "local-ingestion", "--host", "127.0.0.1",
         "--port", str(port), "--data-dir", str(data), "--api-key-file", str(keyfile), "--quiet"],
        stdout=subprocess.PIPE, text=True, env=env(),
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening" not in line:
        raise SystemExit(f"local ingestion server did not start: {line!r}")
    return proc


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("EI_")}
    e["PYTHONPATH"] = str(ROOT)
    e.update(extra)
    return e


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_done(proc: subprocess.Popen[bytes], index: Path, want: int, timeout: float) -> float:
    """Seconds until ``want`` samples are stored; samples the process while it runs."""
    deadline = time.monotonic() + timeout
    while count_lines(index) < want:
        if proc.poll() is not None and count_lines(index) < want:
            stored = count_lines(index)
            raise SystemExit(f"process exited early ({proc.returncode}); {stored} stored")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {count_lines(index)}/{want} stored")
        time.sleep(0.02)
    return time.monotonic()


def run_agent(work: Path, backlog: Path, want: int, idle_seconds: float) -> dict[str, float]:
    data = work / "ingestion-agent"
    port = free_port()
    server = start_server(data, port)
    cfg = work / "agent.toml"
    cfg.write_text(
        textwrap.dedent(
            f"""
            [device]
            id = "bench-01"
            [metadata]
            site = "bench"
            location = "lab"
            [ingestion]
            url = "http://127.0.0.1:{port}"
            category = "split-by-group"
            [queue]
            path = "{work / "queue.db"}"
            [[watch]]
            path = "{backlog}"
            metadata = {{ session = "{{dir}}" }}
            """
        )
    )
    try:
        started = time.monotonic()
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_uploader", "--log-level", "warning", "run",
             "--config", str(cfg)],
            env=env(EI_API_KEY=KEY), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        done = wait_done(agent, data / "index.jsonl", want, 600)
        cpu, peak = proc_stats(agent.pid)
        result = {"seconds": done - started, "cpu": cpu, "rss": peak}
        if idle_seconds > 0:
            time.sleep(1.0)
            cpu0, _ = proc_stats(agent.pid)
            time.sleep(idle_seconds)
            cpu1, peak = proc_stats(agent.pid)
            result["idle_cpu_pct"] = 100.0 * (cpu1 - cpu0) / idle_seconds
            result["rss"] = max(result["rss"], peak)
        agent.terminate()
        agent.wait(15)
        return result
    finally:
        server.terminate()
        server.wait(10)


def run_naive(work: Path, backlog: Path, want: int) -> dict[str, float]:
    data = work / "ingestion-naive"
    port = free_port()
    server = start_server(data, port)
    try:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-c", NAIVE, f"http://127.0.0.1:{port}", KEY, str(backlog)],
            env=env(),
        )
        done = wait_done(proc, data / "index.jsonl", want, 600)
        cpu, peak = proc_stats(proc.pid)
        proc.wait(30)
        return {"seconds": done - started, "cpu": cpu, "rss": peak}
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=2000, help="files of 2 KB")
    ap.add_argument("--large", type=int, default=200, help="files of 200 KB")
    ap.add_argument("--idle-seconds", type=float, default=30.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edge-uploader-bench-"))
    try:
        backlog = work / "backlog"
        total = make_backlog(backlog, args.small, args.large)
        want = args.small + args.large
        naive = run_naive(work, backlog, want)
        agent = run_agent(work, backlog, want, args.idle_seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mb = total / 1e6
    print(f"backlog: {args.small} x 2 KB + {args.large} x 200 KB = {want} files, {mb:.1f} MB")
    print(f"{'':14}{'files/s':>10}{'MB/s':>9}{'peak RSS MB':>13}{'CPU s':>8}")
    for name, r in (("agent", agent), ("naive loop", naive)):
        print(
            f"{name:14}{want / r['seconds']:>10.1f}{mb / r['seconds']:>9.2f}"
            f"{r['rss'] / 2**20:>13.1f}{r['cpu']:>8.2f}"
        )
    ratio = naive["seconds"] / agent["seconds"]
    print(f"agent / naive files/s ratio: {ratio:.2f}  (target >= 0.80)")
    print(f"agent peak RSS: {agent['rss'] / 2**20:.1f} MB  (target < 60 MB)")
    if "idle_cpu_pct" in agent:
        print(
            f"agent idle CPU over {args.idle_seconds:.0f} s: "
            f"{agent['idle_cpu_pct']:.2f}% of one core  (target < 1%)"
        )


if __name__ == "__main__":
    main()
