"""Logging: journald priority prefixes under systemd, UTC timestamps elsewhere."""

from __future__ import annotations

import logging
import os
import re

import pytest

from edge_uploader.daemon.logs import JournalFormatter, setup_logging, under_journald


def record(level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("agent.test", level, __file__, 1, msg, args, None)


@pytest.mark.parametrize(
    ("level", "prio"),
    [(logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6),
     (logging.DEBUG, 7), (25, 6)],
)  # fmt: skip
def test_journal_priorities(level: int, prio: int) -> None:
    fmt = JournalFormatter("%(name)s: %(message)s")
    assert fmt.format(record(level, "queued %s", "a.wav")) == f"<{prio}>agent.test: queued a.wav"


def test_every_line_of_a_multiline_message_carries_the_prefix() -> None:
    fmt = JournalFormatter("%(name)s: %(message)s")
    assert fmt.format(record(logging.ERROR, "one\ntwo")) == "<3>agent.test: one\n<3>two"


def _stderr_stream() -> str:
    st = os.fstat(2)
    return f"{st.st_dev}:{st.st_ino}"


def test_under_journald(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not under_journald()
    monkeypatch.setenv("JOURNAL_STREAM", _stderr_stream())
    assert under_journald()
    # inherited by a process whose stderr goes elsewhere: not the journal
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    assert not under_journald()


def test_setup_under_systemd(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", _stderr_stream())
    setup_logging("warning")
    log = logging.getLogger("agent.x")
    log.info("hidden")
    log.warning("visible %d", 1)
    assert capsys.readouterr().err == "<4>agent.x: visible 1\n"


def test_setup_plain(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("debug")
    logging.getLogger("agent.y").debug("details")
    err = capsys.readouterr().err
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ DEBUG   agent\.y: details\n", err), err


def test_setup_replaces_handlers_and_quiets_libraries(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info")
    setup_logging("info")
    root = logging.getLogger()
    assert len(root.handlers) == 1
    assert root.level == logging.INFO
    for name in ("httpx", "httpcore", "watchdog"):
        assert logging.getLogger(name).level == logging.WARNING
    logging.getLogger("httpx").info("HTTP Request: POST ...")
    assert capsys.readouterr().err == ""


def test_unknown_level_falls_back_to_info() -> None:
    setup_logging("chatty")
    assert logging.getLogger().level == logging.INFO


def test_a_file_name_cannot_break_a_line_or_a_terminal() -> None:
    """Names come from the field: a newline, an escape sequence or bytes that are not
    UTF-8 (surrogate-escaped) in one must stay inside its own log line."""
    from pathlib import Path

    fmt = JournalFormatter("%(name)s: %(message)s")
    bad = "/cap/new\nline \x1b[2J \udcff.wav"
    want = "<6>agent.test: queued /cap/new\\nline \\x1b[2J \\xff.wav"
    assert fmt.format(record(logging.INFO, "queued %s", bad)) == want
    assert fmt.format(record(logging.INFO, "queued %s", Path(bad))) == want
