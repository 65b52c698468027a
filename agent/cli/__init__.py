"""The ``edge-uploader`` command: parse, load and validate config, call the library.

Each module of this package adds its subcommands with ``register(subparsers)``; ``main``
parses, sets up logging and maps the error tree to exit statuses: 0 success; 1 work left
undone (dead letters, undelivered files); 2 usage; 78 configuration error (EX_CONFIG:
systemd does not restart-loop on it). Secrets are never accepted as arguments: they come
from files or the environment.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from ..daemon.logs import setup_logging
from ..errors import EX_CONFIG, AgentError, ConfigError, QueueError
from . import capture, check_config, fleet, project, queue_care, run, upload

Handler = Callable[[argparse.Namespace], int]
COMMANDS = (run, upload, queue_care, check_config, capture, project, fleet)
"""The modules that add subcommands, in the order ``--help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-uploader",
        description="Turn every captured file into a tagged Edge Impulse sample; lose none.",
    )
    parser.add_argument("--version", action="version", version=f"edge-uploader {__version__}")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"))  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
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
