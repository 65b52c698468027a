"""What every command shares: the ``--config`` option, number types, opening the queue.

Each is defined once, so ``--config`` reads and helps the same in every command, and a
command that needs the queue file refuses a missing one with the same message.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import Config
from ..errors import ConfigError
from ..store.queue import Queue

CONFIG_HELP = "the agent's TOML config file"


def add_config_option(
    parser: argparse.ArgumentParser, *, required: bool = True, note: str | None = None
) -> None:
    """``--config FILE`` / ``-c FILE``; ``note`` says what happens without it."""
    parser.add_argument("--config", "-c", type=Path, required=required, metavar="FILE",
                        help=CONFIG_HELP + (f" ({note})" if note else ""))  # fmt: skip


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value}")
    return value


def open_queue(config: Config, *, why: str | None = None, create: bool = False) -> Queue:
    """The queue file the config names; a missing one is a config error (exit 78) saying
    ``why`` the command needs it, unless ``create`` (a new, empty queue)."""
    path = config.queue.path
    if not create and not path.exists():
        raise ConfigError(str(path), "queue.path",
                          "no queue file here" + (f": {why}" if why else " yet"))  # fmt: skip
    return Queue(path)
