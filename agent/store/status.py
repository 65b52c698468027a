"""``edge-uploader status``: what the queue holds, read straight from the queue file.

The JSON form (``--json``) is a stable, documented format for scripts and dashboards:
keys are only ever added, never renamed or removed. See README "status --json".
"""

from __future__ import annotations

import json
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
        "throughput": throughput,
        "dead_letters": dead,
        "held": held,
        "remote_deletes": {**Ledger(queue).counts(now), "blocked": state.get(BLOCKED_KEY)},
    }


def render_text(info: dict[str, Any]) -> str:
    c = info["counts"]
    lines = [
        f"queue: {info['queue']}",
        "files: " + ", ".join(f"{k} {v}" for k, v in c.items()),
    ]
    age = info["oldest_pending_age_seconds"]
    lines.append(f"oldest pending: {_age(age)}" if age is not None else "oldest pending: none")
    if info["last_delivery_at"]:
        lines.append(f"last delivery: {_age(time.time() - info['last_delivery_at'])} ago")
    t = info["throughput"]
    lines.append(
        "delivered: "
        + ", ".join(f"{v['files']} in the last {int(k[5:-1]) // 60} min" for k, v in t.items())
    )
    if info["paused"]:
        lines.append(f"UPLOADS PAUSED: {info['paused']}")
    if info["last_error"]:
        lines.append(f"last error: {info['last_error']}")
    lines.extend(_remote_deletes(info.get("remote_deletes") or {}))
    for title, key in (("dead letters", "dead_letters"), ("held", "held")):
        if info[key]:
            lines.append(f"{title} (first {len(info[key])}):")
            lines.extend(f"  #{d['id']} {d['path']}: {d['reason']}" for d in info[key])
    return "\n".join(lines)


def _remote_deletes(rd: dict[str, Any]) -> list[str]:
    """Deletion sync: what is scheduled and, loudly, whether the cap holds it back."""
    lines = []
    if rd.get("scheduled") or rd.get("failed"):
        lines.append(
            f"remote deletions: {rd['scheduled']} scheduled ({rd['due']} due),"
            f" {rd['done_last_hour']} done in the last hour, {rd['failed']} failed"
        )
    blocked = rd.get("blocked")
    if blocked:
        lines.append(
            f"DELETION SYNC BLOCKED: {blocked['pending']} pending remote deletion(s), more than"
            f" max_deletes_per_hour = {blocked['max_deletes_per_hour']}; nothing is deleted."
            f" If intended: {blocked['confirm']}"
        )
    return lines


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def to_json(info: dict[str, Any]) -> str:
    return json.dumps(info, indent=2, sort_keys=True)
