"""How ``edge-uploader fleet`` shows what it read: the status table and capture progress.

Progress is a plain line per update when the output is not a terminal (logs, CI, pipes:
every line stays true), and a table redrawn in place on a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TextIO

from ..sources.mqtt.fleet import CommandFollow, DeviceProgress, Heartbeat, parse_at
from ..text import age

STATUS_COLUMNS = ("device", "site", "online", "backlog", "oldest pending", "last delivery",
                  "dead letters", "free disk", "version", "heartbeat age")  # fmt: skip


def duration(seconds: float | None) -> str:
    return "-" if seconds is None else age(seconds)


def size(n: object) -> str:
    if not isinstance(n, int):
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def status_row(beat: Heartbeat, stale_seconds: float, now: float) -> dict[str, Any]:
    """One device's row, as JSON (``--json``) and as the table's source."""
    doc = beat.doc
    last = parse_at(doc.get("last_delivery_at"))
    state = doc.get("status") if isinstance(doc.get("status"), str) else "unknown"
    return {
        "device_id": beat.device_id,
        "site": beat.site,
        "status": state,
        "online": beat.online,
        "stale": beat.online and not beat.fresh(stale_seconds),
        "backlog": doc.get("queue_depth"),
        "oldest_pending_age_seconds": doc.get("oldest_pending_age_seconds"),
        "last_delivery_at": doc.get("last_delivery_at"),
        "last_delivery_age_seconds": None if last is None else round(now - last, 1),
        "dead_letters": doc.get("dead_letters"),
        "free_disk_bytes": doc.get("free_disk_bytes"),
        "agent_version": doc.get("agent_version"),
        "heartbeat_age_seconds": None if beat.age_seconds is None else round(beat.age_seconds, 1),
        "reason": doc.get("reason"),
    }


def _online_text(row: dict[str, Any]) -> str:
    if row["stale"]:
        return "STALE"
    return "yes" if row["online"] else f"no ({row['reason'] or row['status']})"


def table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def print_status(rows: list[dict[str, Any]], out: TextIO) -> None:
    lines = [list(STATUS_COLUMNS)]
    for r in rows:
        lines.append([
            r["device_id"], r["site"] or "-", _online_text(r),
            "-" if r["backlog"] is None else str(r["backlog"]),
            duration(r["oldest_pending_age_seconds"]),
            "never" if r["last_delivery_at"] is None
            else duration(r["last_delivery_age_seconds"]) + " ago",
            "-" if r["dead_letters"] is None else str(r["dead_letters"]),
            size(r["free_disk_bytes"]), str(r["agent_version"] or "-"),
            duration(r["heartbeat_age_seconds"]),
        ])  # fmt: skip
    table(lines, out)
    stale = sum(1 for r in rows if r["stale"])
    online = sum(1 for r in rows if r["online"] and not r["stale"])
    out.write(f"{len(rows)} device(s): {online} online, {stale} stale,"
              f" {len(rows) - online - stale} offline\n")  # fmt: skip


def summary(follow: CommandFollow) -> str:
    counts = follow.counts()
    total = len(follow.targeted)
    return (f"{counts['delivered']}/{total} delivered, {counts['queued']} queued,"
            f" {counts['captured']} captured, {counts['accepted']} accepted,"
            f" {counts['failed']} failed")  # fmt: skip


class Progress:
    """Shows a command's progress: a line per update, or a redrawn table on a terminal."""

    def __init__(self, follow: CommandFollow, out: TextIO, tty: bool) -> None:
        self.follow = follow
        self.out = out
        self.tty = tty
        self.started = time.monotonic()
        self._drawn = 0

    def update(self, changed: DeviceProgress | None) -> None:
        if self.tty:
            self._redraw()
        elif changed is not None:
            extra = f" ({changed.reason})" if changed.reason else ""
            if changed.sample_id is not None:
                extra = f" sample {changed.sample_id}"
            note = "" if changed.targeted else " (not targeted)"
            self.out.write(f"{self._elapsed()} {changed.device_id}: {changed.stage}{extra}{note}"
                           f" | {summary(self.follow)}\n")  # fmt: skip
            self.out.flush()

    def _elapsed(self) -> str:
        return f"[{time.monotonic() - self.started:6.1f} s]"

    def _redraw(self) -> None:
        rows = [["device", "stage", "sample", "reason"]]
        for p in sorted(self.follow.devices.values(), key=lambda p: p.device_id):
            rows.append([p.device_id + ("" if p.targeted else " *"), p.stage,
                         "-" if p.sample_id is None else str(p.sample_id),
                         (p.reason or "")[:60]])  # fmt: skip
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
        table(rows, self.out)
        self.out.write(f"{self._elapsed()} {summary(self.follow)}\n")
        self.out.flush()
        self._drawn = len(rows) + 1
