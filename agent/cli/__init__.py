"""The ``edge-uploader`` command: parse, load and validate config, call the library.

Each module of this package adds its subcommands with ``register(subparsers)``; ``main``
parses, sets up logging and maps the error tree to exit statuses: 0 success; 1 work left
undone (dead letters, undelivered files); 2 usage; 65 a damaged queue file (EX_DATAERR:
``queue rebuild`` sets it aside); 78 configuration error (EX_CONFIG; systemd
restart-loops on neither); 130 interrupted; 141 the output pipe was closed
early (``status | head -3``: quietly, as other command-line tools do). Every parser is a
``parser.CommandParser``: no abbreviated options, and secrets are never accepted as
arguments: they come from files or the environment.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from .. import __version__
from ..daemon.logs import setup_logging
from ..errors import EX_CONFIG, EX_DATAERR, AgentError, ConfigError, QueueDamaged, QueueError
from ..secrets import redact
from .parser import CommandParser, exit_statuses, walk

Handler = Callable[[argparse.Namespace], int]
COMMAND_MODULES = ("run", "upload", "queue_care", "queue_repair", "check_config", "capture",
                   "project", "audit", "fleet")  # fmt: skip
"""The modules that add subcommands, in the order ``--help`` lists them."""
MODULE_OF = {
    "run": "run", "status": "run", "local-ingestion": "run", "upload": "upload",
    "dead": "queue_care", "retry-now": "queue_care", "queue": "queue_repair",
    "check-config": "check_config", "capture": "capture", "metadata": "project",
    "sync": "project", "project": "audit", "fleet": "fleet",
}  # fmt: skip
"""Which module adds each command: a command line that names one loads that module alone
(the daemon and ``upload`` start about 15 ms sooner than with all nine)."""


def _command_word(argv: Sequence[str]) -> str | None:
    """The COMMAND of a command line (options before it skipped), if it names one."""
    words = iter(argv)
    for word in words:
        if word == "--log-level":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _modules(argv: Sequence[str] | None) -> list[ModuleType]:
    word = _command_word(sys.argv[1:] if argv is None else argv)
    names = [MODULE_OF[word]] if word in MODULE_OF else COMMAND_MODULES
    return [importlib.import_module(f"{__name__}.{name}") for name in names]


LOG_LEVELS = ("debug", "info", "warning", "error")
EX_PIPE = 141
"""128 + SIGPIPE: what a shell reports for a command whose reader went away."""


def build_parser(argv: Sequence[str] | None = ()) -> argparse.ArgumentParser:
    """The parser for ``argv``'s command (every command for ``()``, ``--help`` or a word
    that is not one; ``None``: ``sys.argv``)."""
    parser = CommandParser(
        prog="edge-uploader",
        description="Turn every captured file into a tagged Edge Impulse sample; lose none."
        " `edge-uploader COMMAND --help` describes each command.",
        epilog=exit_statuses(
            "0    success", "1    work left undone (the command's help says which)",
            "2    usage: an unknown or malformed option", "65   a damaged queue file",
            "78   configuration error",
            "130  interrupted (Ctrl-C)", "141  the output was closed early (| head)",
        ),
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"edge-uploader {__version__}")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS,
                        help="how much to log (default info); also after COMMAND")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _modules(argv):
        module.register(sub)
    for child in walk(parser):
        # after the subcommand too (absent, the first one stands); local-ingestion hands
        # every word to the server's own parser
        if child is not parser and "-" in child.prefix_chars:
            child.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS,
                               help="how much to log (default info)")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a reader that goes away (``| head``) ends it quietly."""
    try:
        status = _run(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # the Python docs' advice: point stdout at devnull so the interpreter's last flush
        # at exit cannot fail again and print a traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EX_PIPE
    return status


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    func: Handler = args.func
    try:
        return func(args)
    except ConfigError as exc:
        for problem in getattr(exc, "problems", (exc,)):
            # a key pasted in the wrong place (an option's value, --config's path) never prints
            text = redact(str(problem))
            print(f"edge-uploader: config error: {text}", file=sys.stderr)
        return EX_CONFIG
    except QueueDamaged as exc:
        print(f"edge-uploader: queue error: {exc}", file=sys.stderr)
        return EX_DATAERR
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
