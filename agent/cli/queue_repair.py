"""``queue check`` and ``queue rebuild``: a damaged queue file named, set aside, rebuilt.

A queue file that was truncated, overwritten or otherwise damaged stops ``run`` with exit
status 65 and a message naming the file and this command. ``queue rebuild`` moves the file
aside (it is kept), starts a new queue with the delivered rows it could still read, and
leaves the rest to the daemon's reconciliation scan, which queues again every file still
in a watched folder.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import ConfigError, QueueDamaged
from ..store.queue import Queue
from ..store.repair import rebuild
from .options import add_config_option, load
from .parser import QUEUE_CONFIG, USAGE, exit_statuses

DAMAGED = "65   the queue file is damaged (EX_DATAERR): the message names it"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    queue = sub.add_parser(
        "queue", help="check the queue file, or set a damaged one aside",
        description="Check the queue file, or set a damaged one aside and start a new one"
        " (the reconciliation scan queues again what is still in the watched folders).",
        epilog=exit_statuses("0    sound, or rebuilt", "1    not rebuilt: the agent holds the file",
                             USAGE, DAMAGED, QUEUE_CONFIG),
    )  # fmt: skip
    queue_sub = queue.add_subparsers(dest="queue_command", required=True, metavar="ACTION")
    p = queue_sub.add_parser(
        "check", help="is the queue file sound? (exit 0, or 65: damaged)",
        description="Read the whole queue file (SQLite's integrity check) and say whether it"
        " is sound.",
        epilog=exit_statuses("0    the queue file is sound", USAGE, DAMAGED, QUEUE_CONFIG),
    )  # fmt: skip
    add_config_option(p, required=False, note="default: the per-user queue")
    p.set_defaults(func=cmd_check)
    why = "move a damaged queue file aside (kept) and start a new one"
    p = queue_sub.add_parser(
        "rebuild", help=why,
        description="Move a damaged queue file (and its -wal and -shm) aside, kept under a"
        " dated name, and start a new queue with the delivered rows that can still be read."
        " Stop the agent first.",
        epilog=exit_statuses("0    rebuilt, or sound and left alone",
                             "1    the file is open in another process (the agent)",
                             USAGE, QUEUE_CONFIG),
    )  # fmt: skip
    add_config_option(p, required=False, note="default: the per-user queue")
    p.add_argument("--force", action="store_true", help="even if the file looks sound")
    p.set_defaults(func=cmd_rebuild)


def _path(args: argparse.Namespace) -> Path:
    path = load(args, check_dirs=False).queue.path
    if not path.exists():
        raise ConfigError(str(path), "queue.path", "no queue file here")
    return path


def _damage(path: Path) -> QueueDamaged | None:
    """What is wrong with the file, or None if it is sound."""
    try:
        queue = Queue(path)
    except QueueDamaged as exc:
        return exc
    try:
        queue.check()
    except QueueDamaged as exc:
        return exc
    finally:
        queue.close()
    return None


def cmd_check(args: argparse.Namespace) -> int:
    path = _path(args)
    damage = _damage(path)
    if damage is not None:
        raise damage
    print(f"{path}: the queue file is sound.")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    path = _path(args)
    holders = _holders(path)
    if holders:
        print(f"edge-uploader: {path} is open in process(es) {', '.join(map(str, holders))}:"
              " stop the agent first (systemctl stop edge-uploader).")  # fmt: skip
        return 1
    damage = _damage(path)
    if damage is None and not args.force:
        print(f"{path}: the queue file is sound; nothing to do (--force rebuilds it anyway).")
        return 0
    if damage is not None:
        print(f"{path}: the queue file is damaged: setting it aside.")
    done = rebuild(path)
    moves = (f"{p} -> {done.aside}{str(p)[len(str(path)) :]}" for p in done.moved)
    print(f"moved aside (kept): {', '.join(moves)}")
    stopped = f" (reading stopped early: {done.note})" if done.note else ""
    print(f"new queue: {path}, with {done.kept} delivered file(s) read from the old one"
          f"{stopped}.\nStart the agent: its reconciliation scan queues again every file still"
          " in a watched folder (files the service already has are refused as duplicates and"
          " count as delivered).")  # fmt: skip
    return 0


def _holders(path: Path) -> list[int]:
    """Processes (that this user may see) holding the file open: a running daemon."""
    target = path.resolve()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if any(fd.readlink() == target for fd in (proc / "fd").iterdir()):
                found.append(int(proc.name))
        except OSError:
            continue
    return found
