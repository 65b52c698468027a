"""What every command shares: the ``--config`` option, number types, opening the queue.

Each is defined once, so ``--config`` reads and helps the same in every command, finding
the config when it is not given follows one order (``config.discover``), and a command
that needs the queue file refuses a missing one with the same message.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..config import Config, FoundConfig, find_config, load_config
from ..config.discover import CONFIG_ENV, SYSTEM_CONFIG
from ..errors import ConfigError
from ..store.queue import Queue

CONFIG_HELP = (
    f"the agent's TOML config file (default: ${CONFIG_ENV}, else {SYSTEM_CONFIG}, else"
    " $XDG_CONFIG_HOME/edge-uploader/agent.toml"
)


def add_config_option(
    parser: argparse.ArgumentParser, *, required: bool = True, note: str | None = None
) -> None:
    """``--config FILE`` / ``-c FILE``, found by the documented order when not given;
    ``required``: a file is needed (none found is a config error); ``note`` says what
    happens when none is found otherwise."""
    end = f", else {note})" if note else ")"
    parser.add_argument("--config", "-c", type=Path, metavar="FILE", help=CONFIG_HELP + end)
    parser.set_defaults(config_required=required)


log = logging.getLogger(__name__)


def find(args: argparse.Namespace, *, daemon: bool = False) -> FoundConfig:
    """The config file this command uses (``path`` None: the built-in defaults). When it
    was not given with ``--config``, one stderr line says which one was found and why (the
    ``daemon``: one log line)."""
    found = find_config(args.config, required=getattr(args, "config_required", True))
    if args.config is not None:
        return found
    if daemon:
        log.info("using the %s", found.describe())
    elif log.isEnabledFor(logging.INFO):
        print(f"edge-uploader: {found.describe()}", file=sys.stderr, flush=True)
    return found


def config_path(args: argparse.Namespace, *, daemon: bool = False) -> Path | None:
    """``find(args).path``."""
    return find(args, daemon=daemon).path


def load(args: argparse.Namespace, *, check_dirs: bool = True) -> Config:
    """The config this command uses, loaded and validated. A found file that cannot be
    read says how it was found, and how to use another."""
    found = find(args)
    try:
        return load_config(found.path, check_dirs=check_dirs)
    except ConfigError as exc:
        if args.config is not None or exc.key or getattr(exc, "problems", None):
            raise
        raise ConfigError(exc.source, exc.key, f"{exc.message} (found as {found.how}; give"
                          " --config FILE to use another)") from None  # fmt: skip


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
