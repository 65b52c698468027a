"""Bulk upload benchmark: ``edge-uploader upload`` versus a naive sequential httpx loop.

    python bench/bulk.py [--files 5000] [--size 2048] [--concurrency N] [--latency-ms 0]

Creates a folder of small files, starts the local ingestion server (a subprocess, fresh
data dir), uploads the folder with ``python -m edge_uploader upload`` (a subprocess; its peak RSS is
read from ``wait4``), then restarts the server with a fresh data dir and uploads the same
folder with one ``httpx.Client`` in a plain loop (same headers, one file per request).
Prints files/s for both, the ratio and the agent's peak RSS, and checks that every file
arrived exactly once both times. Targets: ratio >= 1.0, peak RSS < 60 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "ei_bench_key"


def make_folder(folder: Path, n: int, size: int, flat: bool = False) -> None:
    for i in range(n):
        sub = folder if flat else folder / f"s{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        body = os.urandom(size)
        (sub / f"idle.{i:06d}.wav").write_bytes(body)


class Server:
    def __init__(self, data_dir: Path, latency_ms: int) -> None:
        key_file = data_dir.parent / f"{data_dir.name}.keys"
        key_file.write_text(API_KEY + "\n")
        cmd = [
            sys.executable,
            "-m",
            "edge_uploader.localserver",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            "--api-key-file",
            str(key_file),
            "--quiet",
            "--latency-ms",
            str(latency_ms),
        ]
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("local-ingestion listening on"):
            raise SystemExit(f"server did not start: {line!r}")
        self.url = line.split()[3]

    def stop(self) -> float:
        """Stop; returns the server's CPU seconds."""
        self.proc.terminate()
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return usage.ru_utime + usage.ru_stime

    def count(self) -> tuple[int, int]:
        """(index lines, distinct file names)."""
        lines = (self.data_dir / "index.jsonl").read_text().splitlines()
        names = {json.loads(line)["originalFileName"] for line in lines if line.strip()}
        return len(lines), len(names)


def run_agent(
    folder: Path, state: Path, url: str, concurrency: int | None
) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB, exit status) of ``python -m edge_uploader upload FOLDER``."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "EI_API_KEY": API_KEY,
        "EI_INGESTION_URL": url,
        "XDG_STATE_HOME": str(state),
    }
    cmd = [sys.executable, "-m", "edge_uploader", "upload", str(folder), "--no-progress"]
    if concurrency:
        cmd += ["--concurrency", str(concurrency)]
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        print(output.decode(errors="replace"), file=sys.stderr)
    cpu = usage.ru_utime + usage.ru_stime
    return elapsed, cpu, usage.ru_maxrss / 1024, proc.returncode


def run_naive(folder: Path, url: str) -> tuple[float, float]:
    """One client, one request per file, in order: what a short script would do."""
    files = sorted(p for p in folder.rglob("*.wav"))
    metadata = json.dumps(
        {"agent_version": "0.1.0", "captured_at": "2026-01-01T00:00:00.000Z", "device_id": "bench"},
        separators=(",", ":"),
    )
    headers = {"x-api-key": API_KEY, "x-disallow-duplicates": "1", "x-metadata": metadata}
    started = time.perf_counter()
    cpu = time.process_time()
    with httpx.Client(timeout=60) as client:
        for path in files:
            with open(path, "rb") as handle:
                response = client.post(
                    f"{url}/api/training/files",
                    headers=headers,
                    files={"data": (path.name, handle, "audio/wav")},
                )
            response.raise_for_status()
    return time.perf_counter() - started, time.process_time() - cpu


def agent_round(base: Path, folder: Path, n: int, args: argparse.Namespace, i: int) -> dict:
    server = Server(base / f"server-agent-{i}", args.latency_ms)
    try:
        seconds, cpu, rss, status = run_agent(folder, base / f"state-{i}", server.url,
                                              args.concurrency)  # fmt: skip
        lines, names = server.count()
    finally:
        server_cpu = server.stop()
    ok = status == 0 and lines == names == n
    print(f"  agent upload: {seconds:6.2f} s {n / seconds:5.0f} files/s  peak RSS {rss:.1f} MB"
          f"  CPU agent {cpu:.1f} s, server {server_cpu:.1f} s  exit {status}, {lines} stored"
          f" ({names} distinct)")  # fmt: skip
    return {"rate": n / seconds, "rss": rss, "ok": ok}


def naive_round(base: Path, folder: Path, n: int, args: argparse.Namespace, i: int) -> dict:
    server = Server(base / f"server-naive-{i}", args.latency_ms)
    try:
        seconds, cpu = run_naive(folder, server.url)
        lines, names = server.count()
    finally:
        server_cpu = server.stop()
    print(
        f"  naive loop:   {seconds:6.2f} s {n / seconds:5.0f} files/s"
        f"                  CPU client {cpu:.1f} s, server {server_cpu:.1f} s  {lines} stored"
    )
    return {"rate": n / seconds, "ok": lines == names == n}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--size", type=int, default=2048, help="bytes per file")
    parser.add_argument("--concurrency", type=int, help="the agent's --concurrency")
    parser.add_argument("--latency-ms", type=int, default=0, help="server delay per upload")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="agent and naive runs, alternated; the best of each is compared "
        "(other processes on the machine make single runs noisy)",
    )
    parser.add_argument("--flat", action="store_true", help="one folder (default: 1000 per folder)")
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-bulk-") as tmp:
        base = Path(tmp)
        folder = base / "data"
        t0 = time.perf_counter()
        make_folder(folder, args.files, args.size, args.flat)
        print(f"folder: {args.files} files of {args.size} bytes "
              f"({time.perf_counter() - t0:.1f} s to create); load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
        agent, naive = [], []
        for i in range(args.rounds):
            print(f"round {i + 1}:")
            agent.append(agent_round(base, folder, args.files, args, i))
            if not args.skip_naive:
                naive.append(naive_round(base, folder, args.files, args, i))
        rss = max(r["rss"] for r in agent)
        ok = all(r["ok"] for r in agent + naive) and rss < 60
        best_agent = max(r["rate"] for r in agent)
        print(f"agent: best {best_agent:.0f} files/s; peak RSS {rss:.1f} MB (target < 60)")
        if args.skip_naive:
            return 0 if ok else 1
        best_naive = max(r["rate"] for r in naive)
        ratio = best_agent / best_naive
        print(f"naive: best {best_naive:.0f} files/s")
        rounds = ", ".join(
            f"{a['rate'] / b['rate']:.2f}x" for a, b in zip(agent, naive, strict=True)
        )
        print(f"ratio agent/naive (best of {args.rounds}): {ratio:.2f}x (target >= 1.0); "
              f"per round: {rounds}")  # fmt: skip
        return 0 if ok and ratio >= 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
