"""``run``, ``status`` and ``local-ingestion``: the daemon, its queue, the local service
(``local_ingestion``, whose code loads only when it runs)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..store.status import gather
from ..text import age
from . import local_ingestion
from .options import add_config_option, config_path, load, open_queue, positive_int
from .parser import CONFIG, QUEUE_CONFIG, USAGE, exit_statuses


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run", help="run the daemon: watch, queue, upload",
        description="The daemon: watch the folders, take MQTT-triggered captures, queue every"
        " file and upload it. SIGTERM or SIGINT stop it within seconds; SIGHUP reloads the"
        " config (an invalid one is refused and the old one keeps running).",
        epilog=exit_statuses("0    stopped by SIGTERM or SIGINT", "1    stopped by an error it"
                             " cannot recover from (the log says which)", USAGE,
                             CONFIG + "; systemd does not restart on it"),
    )  # fmt: skip
    add_config_option(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "status", help="what the queue holds: counts, backlog, dead letters",
        description="What the queue holds: files by state, the backlog and its oldest file,"
        " throughput, pauses and the last error, dead letters and held files with their"
        " reasons. --json is a stable format (docs/bulk.md). Works beside a running daemon.",
        epilog=exit_statuses("0    shown", USAGE, QUEUE_CONFIG),
    )  # fmt: skip
    add_config_option(p, required=False, note="the per-user queue of `upload`")
    p.add_argument("--json", action="store_true", help="stable machine-readable output")
    p.add_argument("--limit", type=positive_int, default=20,
                   help="dead letters and held files to list")  # fmt: skip
    p.set_defaults(func=cmd_status)

    local_ingestion.register(sub)


def cmd_run(args: argparse.Namespace) -> int:
    from ..config.preflight import prepare
    from ..daemon.lifecycle import Daemon  # the whole agent: imported only to run it
    from ..daemon.memory import tune_malloc

    tune_malloc()
    path = config_path(args, daemon=True)
    config = prepare(path)  # a missing key is a config error before anything starts
    return Daemon(config, config_path=path).run_forever()


def cmd_status(args: argparse.Namespace) -> int:
    config = load(args, check_dirs=False)
    queue = open_queue(config)
    try:
        info = gather(queue, dead_limit=args.limit, link=config.ingestion.link)
    finally:
        queue.close()
    print(to_json(info) if args.json else render_text(info))
    return 0


def render_text(info: dict[str, Any]) -> str:
    c = info["counts"]
    lines = [
        f"queue: {info['queue']}",
        "files: " + ", ".join(f"{k} {v}" for k, v in c.items()),
    ]
    oldest = info["oldest_pending_age_seconds"]
    lines.append(f"oldest pending: {age(oldest)}" if oldest is not None else "oldest pending: none")
    if info["last_delivery_at"]:
        lines.append(f"last delivery: {age(time.time() - info['last_delivery_at'])} ago")
    t = info["throughput"]
    lines.append(
        "delivered: "
        + ", ".join(f"{v['files']} in the last {int(k[5:-1]) // 60} min" for k, v in t.items())
    )
    lines.extend(_uploads(info.get("concurrency")))
    lines.extend(_metered(info))
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


def _uploads(c: dict[str, Any] | None) -> list[str]:
    """The delivery's last recorded limit on requests in flight and round-trip time."""
    if not c:
        return []
    mode = f"auto, at most {c['maximum']}" if c.get("adaptive") else "fixed"
    rtt = "not measured yet" if c.get("rtt_ms") is None else f"{c['rtt_ms']:.0f} ms"
    line = f"uploads: {c['limit']} request(s) in flight at most ({mode}), round trip {rtt}"
    if c.get("outage"):
        line += "; OUTAGE: the service does not answer, one probe at a time"
    return [line]


def _metered(info: dict[str, Any]) -> list[str]:
    """The bandwidth cap, the upload windows and the daily budget, when configured."""
    lines = []
    cap = info.get("max_bytes_per_second")
    if cap:
        lines.append(f"bandwidth cap: {_bytes(cap)}/s")
    w = info.get("window")
    if w:
        windows = ", ".join(w["windows"])
        if w.get("override"):
            state = "overridden by retry-now until the daemon stops"
        elif w["open"]:
            state = "open" + (f" until {_when(w['closes_at'])}" if w.get("closes_at") else "")
        else:
            state = f"CLOSED: nothing is sent until {_when(w['next_open_at'])}"
        lines.append(f"upload windows {windows}: {state}")
    b = info.get("budget")
    if b:
        line = (f"data budget: {_bytes(b['used_bytes'])} of {_bytes(b['max_bytes_per_day'])}"
                f" used today, {_bytes(b['left_bytes'])} left")  # fmt: skip
        if b["spent"]:
            line += f"; SPENT: uploads wait until {_when(b['resets_at'])}"
        lines.append(line)
    return lines


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _when(ts: float | None) -> str:
    if ts is None:
        return "unknown"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


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


def to_json(info: dict[str, Any]) -> str:
    return json.dumps(info, indent=2, sort_keys=True)
