"""``upload`` against a service that refuses the key or has no such route: a real
``edge-uploader upload`` process and a real local server, each run bounded by a timeout.

The run must end quickly with an exit status that names the cause (77 authentication
refused, 76 wrong URL), keep the service's reason in the summary, give advice that fits
the cause, and dead-letter nothing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from edge_uploader.bulk.tracker import EXIT_AUTH_REFUSED, EXIT_WRONG_URL
from edge_uploader.cli import main
from edge_uploader.localserver import LocalIngestionServer
from edge_uploader.localserver.faults import FaultConfig
from edge_uploader.store.queue import Queue

from .helpers import index, make_files, run_cli


def test_a_wrong_key_ends_every_run_quickly_with_its_reason(
    tmp_path: Path, env: dict[str, str], server: LocalIngestionServer
) -> None:
    """The re-run with other options makes a new batch that takes over the queued rows:
    it used to wait for them forever, printing ``0%`` every 2 s."""
    make_files(tmp_path / "d", 30)
    bad = {**env, "EI_API_KEY": "ei_wrong"}
    for extra in ([], ["--no-captured-at"], ["--session", "s2"], []):
        started = time.monotonic()
        done = run_cli(["upload", str(tmp_path / "d"), *extra], bad)
        assert time.monotonic() - started < 20
        assert done.returncode == EXIT_AUTH_REFUSED, done.stdout + done.stderr
        out = done.stdout
        assert "authentication refused" in out
        assert "not yet delivered:   30 (last error: HTTP 401: Invalid API key)" in out
        assert "fix the API key" in out and "deliver the rest" not in out
        assert "ei_wrong" not in out + done.stderr
    assert index(server.data_dir) == []
    done = run_cli(["upload", str(tmp_path / "d")], env)
    assert done.returncode == 0, done.stdout
    assert len(index(server.data_dir)) == 30


def test_an_unreachable_service_gives_up_after_the_given_time(
    tmp_path: Path, env: dict[str, str]
) -> None:
    make_files(tmp_path / "d", 5)
    gone = {**env, "EI_INGESTION_URL": "http://127.0.0.1:9"}  # discard: nothing listens
    started = time.monotonic()
    done = run_cli(["upload", "--give-up-after", "1", str(tmp_path / "d")], gone)
    assert time.monotonic() - started < 15
    assert done.returncode == 1
    assert "could not be reached" in done.stdout
    assert "check the network" in done.stdout


@pytest.mark.parametrize("suffix", ["/v1", "/api/training/files"])
def test_a_wrong_url_path_stops_with_wrong_url_and_dead_letters_nothing(
    tmp_path: Path, env: dict[str, str], server: LocalIngestionServer, suffix: str
) -> None:
    """Files of two categories, 8 requests in flight: the service's 404 names two routes
    (this dead-lettered the files of the second category)."""
    root = tmp_path / "d"
    entries = []
    for i, path in enumerate(make_files(root, 12)):
        entries.append({"path": path.name, "category": "testing" if i % 2 else "training"})
    (root / "info.labels").write_text(json.dumps({"version": 1, "files": entries}))
    wrong = {**env, "EI_INGESTION_URL": server.url + suffix}
    args = ["upload", "--concurrency", "8", str(root)]
    done = run_cli(args, wrong)
    assert done.returncode == EXIT_WRONG_URL, done.stdout + done.stderr
    assert "wrong URL" in done.stdout and "HTTP 404" in done.stdout
    assert "fix the URL" in done.stdout
    assert "refused" not in done.stderr and "refused (dead)" not in done.stdout
    assert index(server.data_dir) == []
    assert run_cli(args, env).returncode == 0
    assert len(index(server.data_dir)) == 12


def test_one_404_among_accepted_files_is_that_files_refusal(
    tmp_path: Path, env: dict[str, str], server: LocalIngestionServer
) -> None:
    """Once a file was accepted the URL is right: a 404 is about its file alone."""
    for i, path in enumerate(make_files(tmp_path / "d", 5)):
        os.utime(path, (1.7e9 + 60 * i, 1.7e9 + 60 * i))  # captured_at differs: one a request
    server.set_faults(FaultConfig(fail_status=404))
    server.script_faults(["ok", "fail"])
    done = run_cli(["upload", "--concurrency", "1", str(tmp_path / "d")], env)
    assert done.returncode == 1, done.stdout
    assert "refused (dead):      1" in done.stdout and "wrong URL" not in done.stdout
    assert len(index(server.data_dir)) == 4


def test_a_run_that_nothing_moves_ends_after_give_up_after(
    tmp_path: Path,
    env: dict[str, str],
    server: LocalIngestionServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Whatever holds delivery back (here: the queue hands out no row, as when another
    process holds them), a run with nothing in flight and no event ends; it used to print
    ``0%`` every 2 s until Ctrl-C."""
    make_files(tmp_path / "d", 3)
    monkeypatch.setattr(Queue, "lease", lambda self, *a, **k: [])
    started = time.monotonic()
    code = main(["upload", "--no-progress", "--give-up-after", "1", str(tmp_path / "d")])
    assert code == 1 and time.monotonic() - started < 10
    out = capsys.readouterr().out
    assert "not yet delivered:   3" in out and "run the same command again" in out
