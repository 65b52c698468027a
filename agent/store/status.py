"""What the queue holds, read straight from the queue file (``edge-uploader status``).

``gather`` builds the document; its JSON form (``status --json``) is a stable, documented
format for scripts and dashboards: keys are only ever added, never renamed or removed.
"""

from __future__ import annotations

import time
from typing import Any

from .ledger import BLOCKED_KEY, Ledger
from .queue import Queue, State

STATUS_FORMAT_VERSION = 1
THROUGHPUT_WINDOWS = (60, 300, 900)


def gather(queue: Queue, *, dead_limit: int = 20, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    counts = queue.counts()
    oldest = queue.oldest_pending()
    state = queue.get_state()
    dead = [
        {"id": r.id, "path": r.path, "reason": r.last_error, "attempts": r.attempts}
        for r in queue.rows(State.DEAD, limit=dead_limit)
    ]
    held = [
        {"id": r.id, "path": r.path, "reason": r.last_error}
        for r in queue.rows(State.HELD, limit=dead_limit)
    ]
    throughput = {}
    for window in THROUGHPUT_WINDOWS:
        files, size = queue.delivered_since(now - window)
        throughput[f"last_{window}s"] = {
            "files": files, "bytes": size, "files_per_second": round(files / window, 3),
        }  # fmt: skip
    return {
        "version": STATUS_FORMAT_VERSION,
        "queue": str(queue.path),
        "counts": counts,
        "backlog": counts["pending"] + counts["uploading"],
        "oldest_pending_age_seconds": None if oldest is None else round(now - oldest, 1),
        "last_delivery_at": state.get("last_delivery_at"),
        "last_error": state.get("last_error"),
        "paused": state.get("paused"),
        "concurrency": state.get("concurrency"),
        "throughput": throughput,
        "dead_letters": dead,
        "held": held,
        "remote_deletes": {**Ledger(queue).counts(now), "blocked": state.get(BLOCKED_KEY)},
    }
