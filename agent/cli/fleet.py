"""``edge-uploader fleet status`` and ``fleet capture``: many devices through one broker.

Both read the broker settings from ``[mqtt]`` of ``--config`` (an operator's copy of an
agent config: host, TLS, ``username`` / ``password_file``, the topic prefixes)::

    edge-uploader fleet status --config ops.toml --site lab-3
    edge-uploader fleet capture --config ops.toml --site lab-3 --source accel \\
        --duration-ms 2000 --label knock

``status`` prints one row per device from the retained heartbeats, those silent longer
than ``--stale-seconds`` marked stale. ``capture`` publishes one command (on the site
topic, the fleet topic, or each named device's topic), follows every device's events and
exits 0 only when every targeted device delivered. For ``--site`` and ``--all`` the
targets are the devices whose retained heartbeat is online and fresh. The MQTT client
(paho) is imported by these commands, not by every command.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from typing import TYPE_CHECKING, Any

from ..config import CONFIG_CATEGORIES, Config, MqttConfig
from ..config.mqtt import topic_ok
from ..errors import ConfigError, InputError
from ..sources.command import ID_RE, safe_text
from .options import add_config_option, load, positive_int
from .parser import CONFIG, INTERRUPTED, USAGE, exit_statuses

if TYPE_CHECKING:
    from ..sources.mqtt.fleet import CommandFollow, FleetClient, Heartbeat

READ_SECONDS = 3.0
CAPTURE_WAIT_SECONDS = 120


def register(sub: Any) -> None:
    broker = "1    the broker could not be reached or refused the login"
    p: argparse.ArgumentParser = sub.add_parser(
        "fleet", help="many devices at once: their status, and one capture on all of them",
        description="Many devices through the broker they share ([mqtt] of --config): their"
        " status from the retained heartbeats, and one capture on a site, some devices or all.",
        epilog=exit_statuses("0    done", "1    a device did not deliver, or the broker failed",
                             USAGE, CONFIG, INTERRUPTED),
    )  # fmt: skip
    actions = p.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    s = actions.add_parser(
        "status", help="one row per device, from the retained heartbeats",
        description="One row per device from the retained heartbeats: site, online, backlog,"
        " oldest pending, last delivery, dead letters, free disk, version and the age of the"
        " heartbeat; devices silent longer than --stale-seconds are marked stale.",
        epilog=exit_statuses("0    listed (stale devices included)", broker, USAGE, CONFIG),
    )  # fmt: skip
    _common(s)
    s.add_argument("--site", help="only the devices of this site ([metadata] site)")
    s.set_defaults(func=cmd_status)
    c = actions.add_parser(
        "capture", help="one capture on a site, some devices or all of them",
        description="Publish one capture command (the site topic, the fleet topic or each"
        " device's own), follow every targeted device's events and report accepted, captured,"
        " delivered or failed per device. The session is shared: one event recorded by many"
        " devices is one group.",
        epilog=exit_statuses("0    every targeted device delivered",
                             "1    a device failed, refused or did not deliver in time, or"
                             " the broker failed", USAGE, CONFIG, INTERRUPTED),
    )  # fmt: skip
    _common(c)
    target = c.add_mutually_exclusive_group(required=True)
    target.add_argument("--site", help="every fresh device of this site (the site topic)")
    target.add_argument("--device", nargs="+", metavar="D", help="these device ids")
    target.add_argument("--all", action="store_true", help="every fresh device (the fleet topic)")
    c.add_argument("--source", required=True, help="the capture source name on the devices")
    c.add_argument("--duration-ms", type=positive_int, required=True, metavar="N")
    c.add_argument("--label", required=True, help="the samples' label")
    c.add_argument("--session", help="metadata 'session', the group key (default: the id)")
    c.add_argument("--category", choices=CONFIG_CATEGORIES, help="default: the devices' own")
    c.add_argument("--id", dest="command_id", help="the command id (default: a new one)")
    c.add_argument("--wait-seconds", type=positive_int, default=CAPTURE_WAIT_SECONDS,
                   metavar="N", help="how long to follow the events"
                   f" (default {CAPTURE_WAIT_SECONDS})")  # fmt: skip
    c.set_defaults(func=cmd_capture)


def _common(p: argparse.ArgumentParser) -> None:
    add_config_option(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--stale-seconds", type=float, metavar="N", help="a heartbeat older"
                   " than this is stale (default: 3 x heartbeat_seconds)")  # fmt: skip


def _mqtt(args: argparse.Namespace) -> tuple[Config, MqttConfig]:
    config = load(args, check_dirs=False)
    if config.mqtt is None:
        raise ConfigError(config.source, "mqtt", "no [mqtt] section: no broker to ask")
    return config, config.mqtt


def _stale(args: argparse.Namespace, mqtt: MqttConfig) -> float:
    stale = args.stale_seconds
    if stale is not None and stale <= 0:
        raise ConfigError("command line", "--stale-seconds", "expected a positive number")
    return float(stale) if stale is not None else 3 * mqtt.heartbeat_seconds


def _connect(mqtt: MqttConfig) -> FleetClient:
    from ..sources.mqtt.fleet import FleetClient

    return FleetClient(mqtt, mqtt.password.load_optional()).connect()


def cmd_status(args: argparse.Namespace) -> int:
    from ..sources.mqtt.fleet import read_heartbeats
    from .fleet_show import print_status, status_row

    _, mqtt = _mqtt(args)
    stale = _stale(args, mqtt)
    client = _connect(mqtt)
    try:
        beats = read_heartbeats(client, READ_SECONDS)
    finally:
        client.close()
    now = time.time()
    rows = [status_row(b, stale, now) for b in sorted(beats.values(), key=lambda b: b.device_id)
            if args.site is None or b.site == args.site]  # fmt: skip
    if args.json:
        json.dump({"stale_seconds": stale, "devices": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif rows:
        print_status(rows, sys.stdout)
    else:
        where = f" of site {args.site}" if args.site else ""
        print(f"no device{where} has a heartbeat on {mqtt.topic_pattern}/status")
    return 0


def _command(args: argparse.Namespace) -> dict[str, Any]:
    """The command's payload; its texts checked here as the devices will check them."""
    cid = args.command_id or f"fleet-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-" \
        f"{secrets.token_hex(3)}"  # fmt: skip
    try:
        safe_text(cid, "id", ID_RE)
        safe_text(args.label, "label")
        session = safe_text(args.session or cid.replace(":", "-"), "session")
    except InputError as exc:
        raise ConfigError("command line", f"--{exc.field}", exc.message) from None
    cmd = {"id": cid, "source": args.source, "duration_ms": args.duration_ms,
           "label": args.label, "session": session}  # fmt: skip
    if args.category:
        cmd["category"] = args.category
    return cmd


def _targets(
    args: argparse.Namespace, mqtt: MqttConfig, beats: dict[str, Heartbeat], stale: float
) -> tuple[list[str], list[str]]:
    """The targeted device ids and the topics to publish on."""
    from ..sources.mqtt.fleet import device_topic

    if args.device:
        topics = [device_topic(mqtt, d, "capture") for d in args.device]
        bad = next((d for d, t in zip(args.device, topics, strict=True) if not topic_ok(t)
                    or "/" in d), None)  # fmt: skip
        if bad is not None:
            raise ConfigError("command line", "--device", f"{bad!r} is not a usable device id")
        return list(dict.fromkeys(args.device)), list(dict.fromkeys(topics))
    if args.all:
        if not mqtt.fleet_topic:
            raise ConfigError(mqtt.password.config_source, "mqtt.fleet_topic",
                              "is turned off: no topic reaches every device")  # fmt: skip
        fresh = [b.device_id for b in beats.values() if b.fresh(stale)]
        return sorted(fresh), [mqtt.fleet_topic]
    if not mqtt.site_topic_prefix:
        raise ConfigError(mqtt.password.config_source, "mqtt.site_topic_prefix",
                          "is turned off: no topic reaches a site")  # fmt: skip
    topic = f"{mqtt.site_topic_prefix}/{args.site}/capture"
    if not topic_ok(topic):
        raise ConfigError("command line", "--site", f"{args.site!r} is not a usable site name")
    fresh = [b.device_id for b in beats.values() if b.fresh(stale) and b.site == args.site]
    return sorted(fresh), [topic]


def cmd_capture(args: argparse.Namespace) -> int:
    from ..sources.mqtt.fleet import CommandFollow, read_heartbeats

    _, mqtt = _mqtt(args)
    stale = _stale(args, mqtt)
    cmd = _command(args)
    targets, topics = _targets(args, mqtt, {}, stale)  # the options checked before connecting
    client = _connect(mqtt)
    try:
        if not args.device:
            targets, topics = _targets(args, mqtt, read_heartbeats(client, READ_SECONDS), stale)
        if not targets:
            print("edge-uploader: no device to capture on: no fresh online heartbeat"
                  + (f" of site {args.site}" if args.site else ""), file=sys.stderr)  # fmt: skip
            return 1
        follow = CommandFollow(cmd["id"], targets)
        client.subscribe([f"{mqtt.topic_pattern}/events"])
        payload = json.dumps(cmd, separators=(",", ":")).encode("utf-8")
        for topic in topics:
            client.publish(topic, payload)
        _follow(client, follow, args)
    finally:
        client.close()
    return _report(follow, cmd, topics, args)


def _follow(client: FleetClient, follow: CommandFollow, args: argparse.Namespace) -> None:
    from .fleet_show import Progress

    out = sys.stderr if args.json else sys.stdout
    progress = Progress(follow, out, out.isatty())
    if not args.json:
        print(f"command {follow.command_id} sent to {len(follow.targeted)} device(s)", file=out)
    progress.update(None)
    deadline = time.monotonic() + args.wait_seconds
    while not follow.done:
        msg = client.next_message(deadline - time.monotonic())
        if msg is None:
            break
        changed = follow.on_event(msg.payload)
        if changed is not None:
            progress.update(changed)


def _report(
    follow: CommandFollow, cmd: dict[str, Any], topics: list[str], args: argparse.Namespace
) -> int:
    from .fleet_show import summary

    ok = follow.succeeded
    if args.json:
        doc = {"id": cmd["id"], "session": cmd["session"], "topics": topics, "delivered": ok,
               "devices": [p.as_json() for p in follow.devices.values()]}  # fmt: skip
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        silent = [p.device_id for p in follow.targeted if not p.finished]
        print(f"{'done' if ok else 'NOT DONE'}: {summary(follow)}"
              + (f"; no answer from {', '.join(silent)}" if silent else ""))  # fmt: skip
    return 0 if ok else 1
