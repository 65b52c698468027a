"""Logs suit journald under systemd (``<N>`` priority prefixes, no timestamp of our own)
and are plain timestamped text elsewhere."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

_CHILD = """
import logging
from edge_uploader.daemon.logs import setup_logging
setup_logging("debug")
log = logging.getLogger("agent.test")
log.debug("a debug line"); log.info("an info line"); log.warning("a warning")
log.error("an error")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("with a traceback")
"""


def _run(tmp_path: Path, journal: str | None) -> list[str]:
    out = tmp_path / "stderr.txt"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with open(out, "wb") as handle:
        if journal == "match":
            st = os.fstat(handle.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        elif journal is not None:
            env["JOURNAL_STREAM"] = journal
        subprocess.run([sys.executable, "-c", _CHILD], stderr=handle, env=env, cwd=REPO,
                       check=True, timeout=30)  # fmt: skip
    return out.read_text().splitlines()


def test_journald_lines_carry_priorities_and_no_timestamp(tmp_path: Path) -> None:
    lines = _run(tmp_path, "match")
    assert lines[:4] == [
        "<7>agent.test: a debug line",
        "<6>agent.test: an info line",
        "<4>agent.test: a warning",
        "<3>agent.test: an error",
    ]
    # every line of a traceback keeps the priority, so journald files it as one level
    assert lines[4] == "<3>agent.test: with a traceback"
    assert all(line.startswith("<3>") for line in lines[4:])
    assert any("ValueError: boom" in line for line in lines[4:])
    assert not any(re.search(r"\d{4}-\d\d-\d\dT", line) for line in lines)


def test_plain_text_elsewhere(tmp_path: Path) -> None:
    for journal in (None, "1:2"):  # unset, or inherited from a parent whose stderr it was
        lines = _run(tmp_path, journal)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO    agent.test: an info line",
                            lines[1]), lines  # fmt: skip
        assert not any(line.startswith("<") for line in lines)
