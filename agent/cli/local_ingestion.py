"""``local-ingestion``: the local ingestion service (``make run``, tests, benchmarks).

Its options are defined by the server itself (``localserver.cli``), which is loaded only
when this command runs: the daemon and every other command start without any of the
server's code. The top-level parser hands the command's arguments over untouched.
"""

from __future__ import annotations

import argparse

PROG = "edge-uploader local-ingestion"
HELP = "run a local ingestion service (no account needed)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # prefix_chars that no argument starts with: every word, "--help" included, is the
    # server's to parse
    p = sub.add_parser("local-ingestion", help=HELP, add_help=False, prefix_chars="\0")
    p.add_argument("server_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_local_ingestion)


def cmd_local_ingestion(args: argparse.Namespace) -> int:
    from ..localserver.cli import add_arguments, run

    parser = argparse.ArgumentParser(prog=PROG, description=HELP[0].upper() + HELP[1:] + ".",
                                     allow_abbrev=False)  # fmt: skip
    add_arguments(parser)
    return int(run(parser.parse_args(args.server_args)))
