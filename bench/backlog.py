"""Backlog benchmark: does the agent's memory grow with the size of its backlog?

Creates a small backlog (default 1,000 files) and a large one (default 100,000 files) of
tiny files, starts ``edge-uploader run`` on each with the ingestion service unreachable
(so the whole backlog stays queued), waits until every file is in the queue, then lets the
service come up and measures while the first 2,000 are delivered. Prints the peak RSS of
both runs and their ratio: a flat ratio means memory does not grow with the backlog.

    python bench/backlog.py                    # 1,000 vs 100,000 files (a few minutes)
    python bench/backlog.py --large 20000      # quicker
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from drain import KEY, count_lines, env, free_port, proc_stats, start_server


def make_files(folder: Path, n: int) -> None:
    for i in range(n):
        sub = folder / f"d{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:06d}.csv").write_bytes(f"t,v\n{i},{i * 7}\n".encode())


def queued(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(con.execute("SELECT count(*) FROM files").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def run(work: Path, n: int, deliver: int) -> dict[str, float]:
    folder = work / f"backlog-{n}"
    make_files(folder, n)
    port = free_port()
    cfg = work / f"agent-{n}.toml"
    db = work / f"queue-{n}.db"
    cfg.write_text(
        textwrap.dedent(
            f"""
            [metadata]
            site = "bench"
            [ingestion]
            url = "http://127.0.0.1:{port}"
            retry_base_seconds = 0.2
            retry_max_seconds = 1
            [queue]
            path = "{db}"
            [[watch]]
            path = "{folder}"
            settle_seconds = 0
            """
        )
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "edge_uploader", "--log-level", "warning", "run",
             "--config", str(cfg)],
        env=env(EI_API_KEY=KEY), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server = None
    try:
        started = time.monotonic()
        while queued(db) < n:
            if agent.poll() is not None:
                raise SystemExit("agent exited early")
            time.sleep(0.2)
        scan_seconds = time.monotonic() - started
        _, rss_queued = proc_stats(agent.pid)
        server = start_server(work / f"ingestion-{n}", port)
        index = work / f"ingestion-{n}" / "index.jsonl"
        started = time.monotonic()
        while count_lines(index) < deliver:
            time.sleep(0.05)
        deliver_seconds = time.monotonic() - started
        cpu, peak = proc_stats(agent.pid)
        return {"scan_s": scan_seconds, "rss_queued": rss_queued, "peak": peak,
                "deliver_rate": deliver / deliver_seconds, "cpu": cpu}  # fmt: skip
    finally:
        agent.terminate()
        agent.wait(15)
        if server is not None:
            server.terminate()
            server.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=1_000)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--deliver", type=int, default=1_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edge-uploader-backlog-"))
    try:
        small = run(work, args.small, min(args.deliver, args.small))
        large = run(work, args.large, args.deliver)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'backlog':>10}{'queue s':>10}{'RSS queued MB':>15}{'peak RSS MB':>13}{'files/s':>9}")
    for n, r in ((args.small, small), (args.large, large)):
        print(
            f"{n:>10}{r['scan_s']:>10.1f}{r['rss_queued'] / 2**20:>15.1f}"
            f"{r['peak'] / 2**20:>13.1f}{r['deliver_rate']:>9.0f}"
        )
    print(
        f"peak RSS ratio, {args.large:,} vs {args.small:,} files: "
        f"{large['peak'] / small['peak']:.2f}  (1.0 = flat)"
    )


if __name__ == "__main__":
    main()
