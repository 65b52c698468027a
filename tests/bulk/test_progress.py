"""The progress display: one updating line on a terminal, plain lines elsewhere."""

from __future__ import annotations

import dataclasses
import io
import os
import pty
import select
import subprocess
from pathlib import Path

from edge_uploader.bulk.progress import Progress, render_summary
from edge_uploader.bulk.tracker import Summary

from .helpers import API_KEY, ServerProcess, cli_popen, make_files


def _snap(**over: object) -> dict[str, object]:
    totals = {
        "pending": (60, 600),
        "uploading": (4, 40),
        "delivered": (30, 300),
        "dead": (1, 10),
        "held": (0, 0),
        "gone": (0, 0),
    }
    snap: dict[str, object] = {
        "totals": totals,
        "scanning": False,
        "sent_files": 30,
        "sent_bytes": 300,
        "retries": 0,
        "skipped": 1,
        "last_error": None,
        "paused": None,
        "trouble_since": None,
        "elapsed": 3.0,
    }
    snap.update(over)
    return snap


def test_render_lines() -> None:
    plain = Progress(io.StringIO(), tty=False)
    assert plain.interval == 2.0
    plain.render(_snap(totals={**_snap()["totals"], "delivered": (20, 200)}), 100.0)  # type: ignore[dict-item]
    line = plain.render(_snap(), 102.0)
    assert line.startswith("progress: [31/95]") and "33%" in line and "310 B/950 B" in line
    assert "5 files/s" in line and "ETA 0:13" in line and "failed 2" in line
    tty = Progress(io.StringIO(), tty=True)
    assert tty.interval == 0.25
    line = tty.render(_snap(scanning=True, trouble_since=1.0, last_error="network error: x"), 5.0)
    assert (
        line.startswith("[31/95+]") and "ETA" not in line and "retrying (network error: x)" in line
    )


def test_messages_keep_the_progress_line_on_a_terminal() -> None:
    out = io.StringIO()
    p = Progress(out, tty=True)
    p._line = "[1/2]"
    p.message("skipped x: empty file")
    assert out.getvalue() == "\r\x1b[Kskipped x: empty file\n[1/2]"


def test_summary_text() -> None:
    totals = {
        "pending": (2, 20),
        "uploading": (0, 0),
        "delivered": (7, 70),
        "dead": (1, 10),
        "held": (0, 0),
        "gone": (0, 0),
    }
    s = Summary(
        batch="upload-x",
        outcome="gave-up",
        totals=totals,
        sent_files=5,
        sent_bytes=50,
        duplicates=1,
        skipped=0,
        skipped_examples=[],
        elapsed=65.0,
        last_error="network error: refused",
        dead_examples=[(4, "/d/a.wav", "HTTP 400")],
    )
    text = render_summary(s)
    assert "stopped: the ingestion service could not be reached after 1:05" in text
    assert "delivered:           7  (5 this run" in text and "2 earlier" in text
    assert "already at the service (duplicates): 1" in text
    assert "not yet delivered:   2 (last error: network error: refused)" in text
    assert "#4 /d/a.wav: HTTP 400" in text and "dead list --batch upload-x" in text
    assert "run the same command again" in text and s.exit_code == 1
    done = Summary(
        batch="b",
        outcome="done",
        totals={**totals, "pending": (0, 0), "dead": (0, 0)},
        sent_files=7,
        sent_bytes=70,
        duplicates=0,
        skipped=0,
        skipped_examples=[],
        elapsed=1.0,
        last_error=None,
        dead_examples=[],
    )
    assert done.exit_code == 0 and "OK, every file delivered" in render_summary(done)
    late = dataclasses.replace(done, outcome="interrupted")
    assert late.exit_code != 0  # Ctrl-C keeps its status; the words stay true
    assert "result: every file delivered, but interrupted" in render_summary(late)


def test_a_terminal_gets_one_updating_line(tmp_path: Path) -> None:
    make_files(tmp_path / "d", 400)  # 20 files go in one request: a second of rounds to draw
    srv = ServerProcess(tmp_path / "server", extra=["--latency-ms", "100"]).start()
    master, slave = pty.openpty()
    try:
        env = {
            "EI_API_KEY": API_KEY,
            "EI_INGESTION_URL": srv.url,
            "XDG_STATE_HOME": str(tmp_path / "state"),
        }
        proc = cli_popen(
            ["upload", str(tmp_path / "d"), "--concurrency", "2"],
            env,
            stdout=subprocess.PIPE,
            stderr=slave,
        )
        os.close(slave)
        seen = b""
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        out, _ = proc.communicate(timeout=30)
    finally:
        os.close(master)
        srv.stop()
    assert proc.returncode == 0, out
    assert b"\r\x1b[K[" in seen and b"files/s" in seen
    assert b"\n[" not in seen  # progress is redrawn in place, not printed line by line
    assert "OK, every file delivered" in out
