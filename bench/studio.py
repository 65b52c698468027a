"""Project-side benchmark: metadata backfill and deletion sync against the local server.

N samples are uploaded straight into a local ingestion server and recorded as delivered in
a fresh queue (the ledger). Then, each as a child process measured for wall time and peak
RSS (VmHWM): a dry run, the backfill at concurrency 1 and 4 (two different jobs), a re-run
of a finished job, and one deletion-sync pass deleting every sample (grace 0, no cap).

    python bench/studio.py              # 5,000 samples (about a minute)
    python bench/studio.py --samples 500
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_uploader.localserver import LocalIngestionServer  # noqa: E402
from edge_uploader.store.queue import NewFile, Queue, Result, State  # noqa: E402

KEY = "ei_bench_key_000000"


def populate(server: LocalIngestionServer, queue: Queue, captures: Path, n: int) -> None:
    captures.mkdir(parents=True)
    with httpx.Client(base_url=server.url, headers={"x-api-key": KEY}) as client:
        new, ids = [], []
        for i in range(n):
            p = captures / f"s{i:06d}.csv"
            p.write_text(f"t,v\n0,{i}\n")
            st = p.stat()
            meta = {"device_id": "bench-01", "session": "s1"}
            r = client.post("/api/training/files", files={"data": (p.name, p.read_bytes())},
                            headers={"x-metadata": json.dumps(meta)})  # fmt: skip
            ids.append(r.json()["files"][0]["sampleId"])
            new.append(NewFile(str(p), st.st_size, st.st_mtime_ns, f"watch:{captures}", None,
                               "training", meta))  # fmt: skip
        rows = queue.enqueue_many(new)
        pairs = zip(rows, ids, strict=True)
        queue.settle([Result(r, State.DELIVERED, sample_id=s) for r, s in pairs])


def run(argv: list[str], tmp: Path) -> tuple[float, int, int, str]:
    """Wall seconds, peak RSS in KiB, exit status and stdout of one edge-uploader command
    (bench/audit.py uses it too)."""
    started = time.monotonic()
    with open(tmp / "out.txt", "w+") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edge_uploader", *argv], cwd=ROOT,
                                stdout=out, stderr=subprocess.DEVNULL)  # fmt: skip
        peak = 0
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.05)
        out.seek(0)
        text = out.read()
    return time.monotonic() - started, peak, proc.returncode, text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=5000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-studio-"))
    try:
        server = LocalIngestionServer(tmp / "server", api_keys=[KEY], quiet=True).start()
        (tmp / "key").write_text(KEY)
        queue = Queue(tmp / "queue.db")
        t = time.monotonic()
        populate(server, queue, tmp / "captures", args.samples)
        queue.close()
        print(f"setup: {args.samples} samples in {time.monotonic() - t:.1f} s")
        config = tmp / "agent.toml"
        config.write_text(
            f'[ingestion]\nurl = "{server.url}"\napi_key_file = "key"\n'
            f'[studio]\nurl = "{server.url}/v1"\n[queue]\npath = "queue.db"\n'
            '[[watch]]\npath = "captures"\n'
            "[sync]\ndelete_remote = true\ngrace_seconds = 0\nmax_deletes_per_hour = 1000000\n"
        )
        c = ["--config", str(config)]
        steps = [
            ("backfill --dry-run", ["metadata", "backfill", *c, "--set", "site=a", "--dry-run"]),
            ("backfill, concurrency 1", ["metadata", "backfill", *c, "--set", "site=a",
                                         "--concurrency", "1"]),
            ("backfill, concurrency 4", ["metadata", "backfill", *c, "--set", "site=b",
                                         "--concurrency", "4"]),
            ("re-run of a finished job", ["metadata", "backfill", *c, "--set", "site=b"]),
            ("sync --dry-run (metadata check)", ["sync", *c, "--dry-run"]),
        ]  # fmt: skip
        for title, argv in steps:
            secs, rss, _, _ = run(argv, tmp)
            print(f"{title:34s} {secs:6.2f} s  {args.samples / secs:7.0f} samples/s"
                  f"  peak RSS {rss / 1024:5.1f} MiB")  # fmt: skip
        for f in (tmp / "captures").iterdir():  # the files go; the watched folder stays
            f.unlink()
        secs, rss, _, text = run(["sync", *c], tmp)
        out = text.splitlines()[-1] if text else ""
        print(f"{'sync: delete every sample':34s} {secs:6.2f} s  {args.samples / secs:7.0f}"
              f" samples/s  peak RSS {rss / 1024:5.1f} MiB  ({out.strip()})")  # fmt: skip
        server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
