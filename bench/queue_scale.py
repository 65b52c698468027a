"""Queue operations against a large backlog: prints the time of each call.

    .venv/bin/python bench/queue_scale.py [--rows 100000]

Builds a fresh queue file in a temporary folder, enqueues ``--rows`` pending rows in
batches of 5,000, then times the calls the daemon and ``status`` make on it (``gather``
is the whole ``status --json`` document, which the status page asks for every 5 s).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from edge_uploader.store.queue import NewFile, Queue, State
from edge_uploader.store.status import gather


def timed(fn: Callable[[], object], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    meta = {"site": "north", "session": "s1"}
    with tempfile.TemporaryDirectory() as tmp:
        q = Queue(Path(tmp) / "queue.db")
        t = time.perf_counter()
        for start in range(0, args.rows, 5_000):
            n = min(5_000, args.rows - start)
            q.enqueue_many([NewFile(f"/data/f{i:07d}.wav", 100, i, "bench", None, "training", meta)
                            for i in range(start, start + n)])  # fmt: skip
        enqueue = time.perf_counter() - t
        print(f"rows: {args.rows}")
        print(f"enqueue, batches of 5000: {enqueue:.2f} s, {enqueue / args.rows * 1e6:.1f} us/row")
        probes: list[tuple[str, Callable[[], object]]] = [
            ("lease(8)", lambda: q.lease(8)),
            ("next_due()", q.next_due),
            ("counts()", q.counts),
            ("known()", lambda: q.known("/data/f0000500.wav", 100, 500)),
            ("oldest_pending()", q.oldest_pending),
            ("backlog_by_source", q.backlog_by_source),
            ("recent_deliveries", lambda: q.recent_deliveries(20)),
            ("gather() (status)", lambda: gather(q)),  # each status page refresh
        ]
        for name, fn in probes:
            print(f"{name:<18}{timed(fn) * 1e3:8.3f} ms")
        t = time.perf_counter()
        n = sum(1 for _ in q.rows(State.PENDING))
        full = time.perf_counter() - t
        print(f"rows(pending) pass: {full:.2f} s for {n} rows, {full / max(n, 1) * 1e6:.1f} us/row")
        q.close()


if __name__ == "__main__":
    main()
