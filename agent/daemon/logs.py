"""Logging set-up: journald-friendly under systemd, plain timestamped text elsewhere.

Under systemd (stderr is the stream ``JOURNAL_STREAM`` names) each line starts with a
``<N>`` priority prefix that journald turns into the entry's level, and carries no
timestamp of its own (journald adds one). Elsewhere lines get a UTC timestamp and the
level name.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from ..text import shown

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class SafeFormatter(logging.Formatter):
    """Values on one line: a file name (or any text argument) with a newline, an escape
    sequence or bytes that are not UTF-8 is shown escaped (``\\n``, ``\\x1b``,
    ``\\xff``) instead of breaking the line or the terminal. The message's own lines and
    tracebacks are kept."""

    def format(self, record: logging.LogRecord) -> str:
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(_safe_arg(a) for a in args)
        try:
            return super().format(record)
        finally:
            record.args = args


def _safe_arg(value: object) -> object:
    if isinstance(value, str | os.PathLike):
        return shown(str(value))
    return value


class JournalFormatter(SafeFormatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def under_journald() -> bool:
    """True when stderr (fd 2) is the journal stream systemd gave us (``JOURNAL_STREAM``
    names its ``device:inode``); a child whose stderr was redirected elsewhere inherits the
    variable but not the stream, so the two are compared, as systemd.exec(5) advises."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not (sep and dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if under_journald():
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        fmt = SafeFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                                "%Y-%m-%dT%H:%M:%SZ")  # fmt: skip
        fmt.converter = time.gmtime
        handler.setFormatter(fmt)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for noisy in ("httpx", "httpcore", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
