"""``edge-uploader capture``: one capture by hand, through the same code as MQTT commands.

A field engineer's check that a sensor or camera works::

    edge-uploader capture --config /etc/edge-uploader/agent.toml --source accel \\
        --duration-ms 2000 --label idle --session bench-test

The capture is written into ``[capture] dir`` with its sidecar, exactly like an MQTT
capture. The command does not write to the queue itself: a running daemon watches that
folder and queues the file within moments (this command waits a few seconds to say so);
without a running daemon, the next ``edge-uploader run`` finds and queues it at start-up.
The capture code (pyserial with it) is imported by the command, not by every command.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from pathlib import Path
from typing import Any

from ..config import CONFIG_CATEGORIES, Config
from ..errors import CaptureError, ConfigError, InputError
from .options import add_config_option, load, open_queue
from .parser import CONFIG, USAGE, exit_statuses

WAIT_FOR_DAEMON_SECONDS = 3.0


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "capture", help="run one capture by hand (a check that a sensor works)",
        description="One capture by hand, through the same code as MQTT capture commands:"
        " the file and its sidecar are written into [capture] dir, where the daemon queues"
        " them.",
        epilog=exit_statuses("0    captured", "1    the capture failed (the message says why)",
                             USAGE, CONFIG),
    )  # fmt: skip
    add_config_option(p)
    p.add_argument(
        "--source", required=True, help="a [[capture.serial]] or [[capture.command]] name"
    )
    p.add_argument(
        "--duration-ms", type=int, required=True, metavar="N", help="how long to capture"
    )
    p.add_argument("--label", help="the sample's label (default: unlabeled)")
    p.add_argument("--session", help="metadata 'session', the group key of related captures")
    p.add_argument("--category", choices=CONFIG_CATEGORIES, help="default: [ingestion] category")
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="do not wait to see whether a running daemon queued the file",
    )
    p.set_defaults(func=cmd_capture)


def cmd_capture(args: argparse.Namespace) -> int:
    from ..daemon.disk import DiskGuard
    from ..sources.capture import Capturer
    from ..sources.command import validate_object

    config = load(args)
    if config.capture is None:
        raise ConfigError(config.source, "capture", "no [capture] section: nothing to capture with")
    fields: dict[str, Any] = {
        "id": f"manual-{secrets.token_hex(4)}",
        "source": args.source,
        "duration_ms": args.duration_ms,
    }
    for name in ("label", "session", "category"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    guard = DiskGuard(config.disk, [config.capture.dir], config.queue.path)
    capturer = Capturer(config, config.ingestion.hmac_key.load_optional(), disk_reason=guard.reason)
    try:
        command = validate_object(fields, config.capture.sources, config.capture.max_duration_ms)
        plan = capturer.plan(command)
    except InputError as exc:
        flag = "--" + exc.field.replace("_", "-") if exc.field else "arguments"
        raise ConfigError("command line", flag, exc.message) from None
    print(f"capturing {command.duration_ms} ms from {command.source}...", flush=True)
    try:
        captured = capturer.capture(plan)
        captured.commit()
    except CaptureError as exc:
        print(f"capture failed: {exc}")
        return 1
    what = f"{captured.size} bytes"
    if captured.frequency_hz is not None:
        signed = "signed HS256" if capturer.hmac_key else "unsigned (no HMAC key configured)"
        what = (
            f"{captured.sample_count} samples, measured {captured.frequency_hz:g} Hz,"
            f" interval_ms {captured.interval_ms:g}, {signed}"
        )
    print(f"wrote {captured.path} ({what})")
    print(f"  with its sidecar {captured.path.name}.meta.json (label, session, category)")
    if args.no_wait:
        print("the daemon queues it from the capture folder (now if running, else at its start)")
        return 0
    row = _wait_queued(config, captured.path)
    if row is not None:
        print(f"queued by the running daemon (queue row {row}); see `edge-uploader status`")
    else:
        print(
            "not queued yet: no daemon seems to be running with this config. The file stays in"
            " the capture folder; `edge-uploader run` queues and uploads it at start-up."
        )
    return 0


def _wait_queued(config: Config, path: Path) -> int | None:
    """The queue row of ``path`` once a running daemon queued it; None after a short wait."""
    if not config.queue.path.exists():
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    queue = open_queue(config)
    try:
        deadline = time.monotonic() + WAIT_FOR_DAEMON_SECONDS
        while True:
            if queue.known(str(path), st.st_size, st.st_mtime_ns):
                row = queue.latest_for_path(str(path))
                return row.id if row else None
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)
    finally:
        queue.close()
