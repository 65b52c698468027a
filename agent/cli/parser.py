"""The argument parser every command is built with: no abbreviations, no secrets in argv.

``CommandParser`` is an ``argparse.ArgumentParser`` that never expands abbreviations
(``--api-key`` would otherwise be taken for ``--api-key-file``), refuses any option that
looks like a secret (``--api-key``, ``--hmac-key``, ``--mqtt-password``, ``--password``,
``--token``...: ``secrets.secret_refusal``) before reading it, and never echoes a word that
looks like an API key in a usage error. Subparsers are of the same class (argparse uses
``type(self)``), so every parser of the command gets this behaviour.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from ..secrets import redact, secret_refusal

EXIT_STATUS_TITLE = "exit status:"


class HelpFormatter(argparse.HelpFormatter):
    """Descriptions are wrapped to the terminal; the exit-status list keeps its lines."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(EXIT_STATUS_TITLE):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` without abbreviations that refuses secrets as options."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        words = list(sys.argv[1:] if args is None else args)
        for word in words:
            if word == "--":
                break
            refusal = secret_refusal(word)
            if refusal is not None:
                self.error(refusal)
        return super().parse_known_args(words, namespace)

    def error(self, message: str) -> NoReturn:
        """Usage error, exit status 2; words that look like API keys are not echoed."""
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {redact(message)}\n")


def subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The direct subcommand parsers of ``parser`` (each name once, aliases skipped)."""
    seen: set[int] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if id(child) not in seen:
                    seen.add(id(child))
                    yield child


def walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every parser below it, depth first."""
    yield parser
    for child in subparsers(parser):
        yield from walk(child)


def exit_statuses(*lines: str) -> str:
    """The ``exit status:`` paragraph of a command's help (an epilog)."""
    return EXIT_STATUS_TITLE + "\n" + "\n".join(f"  {line}" for line in lines)


USAGE = "2    usage: an unknown, malformed or secret-carrying option"
CONFIG = "78   configuration error: the config file, an option's value or a secret (EX_CONFIG)"
QUEUE_CONFIG = "78   configuration error, or no queue file where the config says (EX_CONFIG)"
INTERRUPTED = "130  interrupted (Ctrl-C)"
