"""The ``edge-uploader`` command: parse, load and validate config, call the library.

Exit statuses: 0 success; 1 work left undone (dead letters, undelivered files); 2 usage;
78 configuration error (EX_CONFIG: systemd does not restart-loop on it).
Secrets are never accepted as arguments: they come from files or the environment.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import __version__
from ..config import load_config
from ..daemon.logs import setup_logging
from ..errors import EX_CONFIG, AgentError, ConfigError, QueueError

log = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value}")
    return value


def _config_arg(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--config", "-c", type=Path, required=required, metavar="FILE",
                   help="the agent's TOML config file")  # fmt: skip


def cmd_run(args: argparse.Namespace) -> int:
    from ..config.preflight import prepare
    from ..daemon.lifecycle import Daemon

    config = prepare(args.config)  # a missing key is a config error before anything starts
    return Daemon(config, config_path=args.config).run_forever()


def cmd_status(args: argparse.Namespace) -> int:
    from ..store.queue import Queue
    from ..store.status import gather, render_text, to_json

    config = load_config(args.config, check_dirs=False)
    if not config.queue.path.exists():
        raise ConfigError(str(config.queue.path), "queue.path", "no queue file here yet")
    queue = Queue(config.queue.path)
    try:
        info = gather(queue, dead_limit=args.limit)
    finally:
        queue.close()
    print(to_json(info) if args.json else render_text(info))
    return 0


def cmd_local_ingestion(args: argparse.Namespace) -> int:
    from ..localserver.cli import run

    return int(run(args))


COMMAND_MODULES: tuple[str, ...] = (
    "edge_uploader.cli.capture",
    "edge_uploader.cli.project",
    "edge_uploader.cli.upload",
    "edge_uploader.cli.queue_care",
    "edge_uploader.cli.check_config",
)
"""Modules that add subcommands: each has ``register(subparsers) -> None``."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-uploader",
        description="Turn every captured file into a tagged Edge Impulse sample; lose none.",
    )
    parser.add_argument("--version", action="version", version=f"edge-uploader {__version__}")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"))  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon: watch, queue, upload")
    _config_arg(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="what the queue holds: counts, backlog, dead letters")
    _config_arg(p, required=False)  # without: the per-user queue of `upload`
    p.add_argument("--json", action="store_true", help="stable machine-readable output")
    p.add_argument("--limit", type=positive_int, default=20,
                   help="dead letters and held files to list")  # fmt: skip
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("local-ingestion", help="run a local ingestion service (no account needed)")
    try:
        from ..localserver.cli import add_arguments
    except ImportError:  # pragma: no cover - the server ships with the package
        pass
    else:
        add_arguments(p)
    p.set_defaults(func=cmd_local_ingestion)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    func: Handler = args.func
    try:
        return func(args)
    except ConfigError as exc:
        print(f"edge-uploader: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except QueueError as exc:
        print(f"edge-uploader: queue error: {exc}", file=sys.stderr)
        return 1
    except AgentError as exc:
        print(f"edge-uploader: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
