"""What the queue holds, read straight from the queue file (``edge-uploader status``).

``gather`` builds the document; its JSON form (``status --json``) is a stable, documented
format for scripts and dashboards: keys are only ever added, never renamed or removed.
"""

from __future__ import annotations

import time
from datetime import tzinfo
from typing import Any

from ..config.link import LinkConfig, local_day, next_midnight, window_state
from ..text import shown
from .ledger import BLOCKED_KEY, Ledger
from .queue import Queue, Row, State

STATUS_FORMAT_VERSION = 1
THROUGHPUT_WINDOWS = (60, 300, 900)
RECENT_DELIVERIES = 20


BUDGET_FULL_KEY = "budget_full"
"""In the queue's state: the local day on which the next upload no longer fitted in the
daily data budget (it is spent for that day)."""
OVERRIDE_KEY = "window_override"
"""In the queue's state: ``retry-now`` asked the running daemon to send outside the upload
windows (cleared when the daemon starts: the override lasts until the next stop)."""


def gather(queue: Queue, *, dead_limit: int = 20, now: float | None = None,
           link: LinkConfig | None = None, tz: tzinfo | None = None,
           recent_limit: int = RECENT_DELIVERIES) -> dict[str, Any]:  # fmt: skip
    """The document; ``link`` (the config's metered-link keys) adds the window, the
    budget and the cap, computed from the clock and the queue's count of bytes per day.
    Every part is bounded (lists by their limits) and read through an index, so the
    status page can ask for it every few seconds on a queue of 100,000 rows."""
    now = time.time() if now is None else now
    counts = queue.counts()
    oldest = queue.oldest_pending()
    state = queue.get_state()
    dead = [
        {"id": r.id, "path": shown(r.path), "reason": _reason(r), "attempts": r.attempts}
        for r in queue.rows(State.DEAD, limit=dead_limit)
    ]
    held = [
        {"id": r.id, "path": shown(r.path), "reason": _reason(r)}
        for r in queue.rows(State.HELD, limit=dead_limit)
    ]
    throughput = {}
    for window in THROUGHPUT_WINDOWS:
        files, size = queue.delivered_since(now - window)
        throughput[f"last_{window}s"] = {
            "files": files, "bytes": size, "files_per_second": round(files / window, 3),
        }  # fmt: skip
    recent = [
        {"id": r.id, "path": r.path, "sample_id": r.sample_id, "size": r.size,
         "delivered_at": r.delivered_at}
        for r in queue.recent_deliveries(recent_limit)
    ]  # fmt: skip
    return {
        "version": STATUS_FORMAT_VERSION,
        "generated_at": round(now, 3),
        "queue": str(queue.path),
        "counts": counts,
        "backlog": counts["pending"] + counts["uploading"],
        "backlog_by_watch": queue.backlog_by_source(),
        "oldest_pending_age_seconds": None if oldest is None else round(now - oldest, 1),
        "last_delivery_at": state.get("last_delivery_at"),
        "last_error": state.get("last_error"),
        "paused": state.get("paused"),
        "concurrency": state.get("concurrency"),
        "throughput": throughput,
        "dead_letters": dead,
        "held": held,
        "recent_deliveries": recent,
        "remote_deletes": {**Ledger(queue).counts(now), "blocked": state.get(BLOCKED_KEY)},
        **_link(queue, link or LinkConfig(), state, now, tz),
    }


def _link(queue: Queue, link: LinkConfig, state: dict[str, Any], now: float,
          tz: tzinfo | None) -> dict[str, Any]:  # fmt: skip
    window = None
    if link.upload_windows:
        w = window_state(link.upload_windows, now, tz)
        window = {"windows": [str(x) for x in link.upload_windows], "open": w.open,
                  "next_open_at": w.next_open_at, "closes_at": w.closes_at,
                  "override": bool(state.get(OVERRIDE_KEY))}  # fmt: skip
    budget = None
    if link.max_bytes_per_day:
        today = local_day(now, tz)
        used = queue.bytes_sent_on(today)
        budget = {"max_bytes_per_day": link.max_bytes_per_day, "used_bytes": used,
                  "left_bytes": max(0, link.max_bytes_per_day - used),
                  "resets_at": next_midnight(now, tz),
                  "spent": used >= link.max_bytes_per_day
                  or state.get(BUDGET_FULL_KEY) == today}  # fmt: skip
    return {"window": window, "budget": budget,
            "max_bytes_per_second": link.max_bytes_per_second}  # fmt: skip


def _reason(row: Row) -> str | None:
    """A row's reason as shown: a file name in it cannot break a line or a terminal."""
    return None if row.last_error is None else shown(row.last_error)
