"""``local-ingestion``: the local ingestion service (``make run``, tests, benchmarks).

Its options are defined by the server itself (``localserver.cli``), which is loaded only
when this command runs: the daemon and every other command start without any of the
server's code. The top-level parser hands the command's arguments over untouched.
"""

from __future__ import annotations

import argparse

from .parser import USAGE, CommandParser, exit_statuses

PROG = "edge-uploader local-ingestion"
HELP = "run a local ingestion service (no account needed)"
DESCRIPTION = (
    "A local implementation of the Edge Impulse ingestion service, for trying the agent"
    " without an account: it stores what it receives under --data-dir. Stdout carries one"
    " line, `local-ingestion listening on http://HOST:PORT data=DIR`."
)
EPILOG = exit_statuses(
    "0    stopped by SIGTERM or SIGINT",
    USAGE,
    "78   configuration error: an unreadable key file, a port in use",
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # prefix_chars that no argument starts with: every word, "--help" included, is the
    # server's to parse
    p = sub.add_parser("local-ingestion", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       add_help=False, prefix_chars="\0")  # fmt: skip
    p.add_argument("server_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_local_ingestion)


def cmd_local_ingestion(args: argparse.Namespace) -> int:
    from ..localserver.cli import add_arguments, run

    parser = CommandParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG)
    add_arguments(parser)
    return int(run(parser.parse_args(args.server_args)))
