"""Queue care: ``dead list|retry|drop`` and ``retry-now``, on the daemon's queue or an upload's.

They work on the queue file directly (SQLite in WAL mode lets them run beside a running
daemon) and wake the daemon afterwards (``daemon.wake``), so retried rows go out at once.
``dead list --json`` is a stable format, documented in docs/bulk.md: keys are only added.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from ..daemon.wake import wake_daemon
from ..store.queue import Queue, Row, State
from ..store.status import OVERRIDE_KEY
from ..text import shown
from .options import add_config_option, load, open_queue, positive_int
from .parser import QUEUE_CONFIG, USAGE, exit_statuses

DEAD_FORMAT_VERSION = 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dead = sub.add_parser(
        "dead", help="files the service refused: list, retry or drop them",
        description="Dead letters: files the service refused for good, kept with its reason."
        " List them, queue them again after fixing the cause, or forget them.",
        epilog=exit_statuses("0    done", USAGE, QUEUE_CONFIG),
    )  # fmt: skip
    dead_sub = dead.add_subparsers(dest="dead_command", required=True, metavar="ACTION")

    p = dead_sub.add_parser(
        "list", help="list dead letters with the service's reason",
        description="List dead letters with the service's reason, streamed; --json is a"
        " stable format (docs/bulk.md).",
        epilog=exit_statuses("0    listed (also when there are none)", USAGE, QUEUE_CONFIG),
    )  # fmt: skip
    _common(p)
    p.add_argument("--json", action="store_true", help="stable machine-readable output")
    p.add_argument("--limit", type=positive_int, metavar="N", help="at most N rows")
    p.set_defaults(func=cmd_dead_list)

    for name, func, text in (
        ("retry", cmd_dead_retry, "queue dead letters again (after fixing the cause)"),
        ("drop", cmd_dead_drop, "forget dead letters (the files themselves are not touched)"),
    ):
        p = dead_sub.add_parser(
            name, help=text, description=text[0].upper() + text[1:] + ": the rows chosen by"
            " --id, --reason, --batch, or --all. A running daemon is woken to send at once.",
            epilog=exit_statuses("0    done (the count says how many rows)",
                                 USAGE + ", or no rows chosen", QUEUE_CONFIG),
        )  # fmt: skip
        _common(p)
        p.add_argument("--all", action="store_true", help="every dead letter")
        p.set_defaults(func=func, parser=p)

    text = ("skip backoff waits: every pending file is due now (and the running daemon sends"
            " outside its upload windows until it stops)")  # fmt: skip
    p = sub.add_parser("retry-now", help=text, description=text[0].upper() + text[1:] + ".",
                       epilog=exit_statuses("0    done", USAGE, QUEUE_CONFIG))  # fmt: skip
    add_config_option(p, required=False, note="the per-user queue")
    p.set_defaults(func=cmd_retry_now)


def _common(p: argparse.ArgumentParser) -> None:
    add_config_option(p, required=False, note="the per-user queue")
    p.add_argument(
        "--id", type=int, action="append", dest="ids", metavar="N", help="this row id (repeatable)"
    )
    p.add_argument("--reason", metavar="TEXT", help="rows whose reason contains TEXT")
    p.add_argument("--batch", metavar="ID", help="rows of this upload batch")  # fmt: skip


def _queue(args: argparse.Namespace) -> Queue:
    return open_queue(load(args, check_dirs=False), why="nothing was queued yet")


def _selected(args: argparse.Namespace) -> dict[str, Any]:
    return {"row_ids": args.ids, "reason_contains": args.reason, "batch": args.batch}


def dead_rows(queue: Queue, args: argparse.Namespace) -> Iterator[Row]:
    """Dead rows matching the selectors, streamed from the queue."""
    ids = set(args.ids or ())
    count = 0
    for row in queue.rows(State.DEAD, batch=args.batch):
        if ids and row.id not in ids:
            continue
        if args.reason and args.reason not in (row.last_error or ""):
            continue
        yield row
        count += 1
        if getattr(args, "limit", None) is not None and count >= args.limit:
            return


def dead_json(row: Row) -> dict[str, Any]:
    return {
        "id": row.id,
        "path": shown(row.path),
        "file_name": row.file_name,
        "size": row.size,
        "mtime_ns": row.mtime_ns,
        "source": row.source,
        "batch": row.batch,
        "category": row.category,
        "label": row.label,
        "metadata": row.metadata,
        "reason": None if row.last_error is None else shown(row.last_error),
        "attempts": row.attempts,
        "enqueued_at": row.enqueued_at,
        "sha256": row.sha256,
    }


def cmd_dead_list(args: argparse.Namespace) -> int:
    queue = _queue(args)
    try:
        write_dead_list(queue, args, sys.stdout)
    finally:
        queue.close()
    return 0


def write_dead_list(queue: Queue, args: argparse.Namespace, out: TextIO) -> int:
    """Print the list (streamed: a long list is never held in memory); returns the count."""
    n = 0
    if args.json:
        out.write(f'{{"version": {DEAD_FORMAT_VERSION}, "queue": {json.dumps(str(queue.path))}, '
                  '"dead_letters": [')  # fmt: skip
        for row in dead_rows(queue, args):
            out.write(("\n  " if n == 0 else ",\n  ") + json.dumps(dead_json(row), sort_keys=True))
            n += 1
        out.write(f'\n], "count": {n}}}\n')
        return n
    for row in dead_rows(queue, args):
        batch = f", batch {row.batch}" if row.batch else ""
        out.write(f"#{row.id}  {shown(row.path)}  ({row.attempts} attempt(s){batch})\n"
                  f"      {shown(row.last_error or '')}\n")  # fmt: skip
        n += 1
    out.write(f"{n} dead letter(s)\n")
    return n


def _require_selector(args: argparse.Namespace, verb: str) -> None:
    if not (args.all or args.ids or args.reason or args.batch):
        args.parser.error(f"say which dead letters to {verb}: --id N, --reason TEXT, "
                          "--batch ID, or --all")  # fmt: skip


def cmd_dead_retry(args: argparse.Namespace) -> int:
    _require_selector(args, "retry")
    queue = _queue(args)
    try:
        n = queue.retry(state=State.DEAD, **_selected(args))
        pid = wake_daemon(queue) if n else None
    finally:
        queue.close()
    print(f"{n} dead letter(s) queued again." + _wake_note(pid, n))
    return 0


def cmd_dead_drop(args: argparse.Namespace) -> int:
    _require_selector(args, "drop")
    queue = _queue(args)
    try:
        n = queue.drop(state=State.DEAD, **_selected(args))
    finally:
        queue.close()
    print(f"{n} dead letter(s) dropped from the queue (the files were not touched; a file "
          "still in a watched folder is queued again by the next scan).")  # fmt: skip
    return 0


def cmd_retry_now(args: argparse.Namespace) -> int:
    queue = _queue(args)
    try:
        n = queue.retry_now()
        queue.set_state(**{OVERRIDE_KEY: True})  # and outside the upload windows, until a stop
        pid = wake_daemon(queue)
    finally:
        queue.close()
    print(f"{n} waiting file(s) are due now." + _wake_note(pid, n))
    return 0


def _wake_note(pid: int | None, n: int) -> str:
    if pid is not None:
        return (f" The running daemon (pid {pid}) was woken and sends them now, outside its"
                " upload windows too, until it stops.")  # fmt: skip
    if not n:
        return ""
    return (
        " No running daemon was found to wake: a daemon sends them when it next wakes"
        " (at the latest at its next retry time); rows of an upload batch are sent by"
        " running that upload command again."
    )
