"""`project audit` against the local server: wall time and peak RSS for a large project.

The local server's store is seeded directly (`SampleStore.seed`: metadata-only samples in
one transaction, no uploads), shaped like a field project: sessions of `--session-size`
samples on 10 sites, one session in 100 split across training and testing (a leak), one
sample in 500 without a session. The audit then runs as a child process (`python -m
edge_uploader project audit`) measured for wall time and peak RSS (VmHWM), first on a
project 100 times smaller, so the two peaks show whether memory follows the samples.

    python bench/audit.py                      # 100,000 samples
    python bench/audit.py --samples 5000       # a quick check that it works
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio import run  # noqa: E402  (bench/studio.py: one command, its wall time and peak RSS)

from edge_uploader.localserver import LocalIngestionServer, SeedSample  # noqa: E402

KEY = "ei_bench_key_000000"


def project(n: int, session_size: int) -> Iterator[SeedSample]:
    for i in range(n):
        session = i // session_size
        leaking = session % 100 == 0
        testing = (session % 5 == 4) or (leaking and i % session_size == 0)
        meta = {"site": f"site-{session % 10}", "device_id": f"pi-{session % 40:02d}"}
        if i % 500 != 499:
            meta["session"] = f"run-{session}"
        yield SeedSample("testing" if testing else "training", f"s{i:07d}.csv", "idle", meta)


def bench(n: int, args: argparse.Namespace, tmp: Path) -> None:
    server = LocalIngestionServer(tmp / f"server-{n}", api_keys=[KEY], quiet=True).start()
    try:
        t = time.monotonic()
        server.store.seed(project(n, args.session_size))
        print(f"{n} samples seeded in {time.monotonic() - t:.1f} s")
        config = tmp / f"agent-{n}.toml"
        config.write_text(
            f'[ingestion]\nurl = "{server.url}"\napi_key_file = "key"\n'
            f'[studio]\nurl = "{server.url}/v1"\n[queue]\npath = "queue.db"\n'
        )
        for page in args.page_sizes:
            argv = ["project", "audit", "--config", str(config), "--by", "site", "--json",
                    "--page-size", str(page)]  # fmt: skip
            secs, rss, code, out = run(argv, tmp)
            doc = json.loads(out) if out.strip() else {}
            print(f"  audit --by site --json --page-size {page:<5d} {secs:6.2f} s"
                  f"  {n / secs:7.0f} samples/s  peak RSS {rss / 1024:5.1f} MiB  exit {code}"
                  f"  ({doc.get('samples')} samples, {doc.get('groups')} groups,"
                  f" {len(doc.get('leaking_groups', []))} leaking,"
                  f" {doc.get('ungrouped', {}).get('samples')} without a session)")  # fmt: skip
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--session-size", type=int, default=20)
    ap.add_argument("--page-sizes", type=int, nargs="+", default=[100, 1000])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    try:
        (tmp / "key").write_text(KEY)
        for n in (max(args.samples // 100, 1), args.samples):
            bench(n, args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
