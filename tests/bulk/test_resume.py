"""Resumability with real processes: SIGKILL mid-run, and the service going away mid-run.

The upload command and the local ingestion server each run as a subprocess; the server
answers slowly (``--latency-ms``) so the command is caught in the middle of its work.
"""

from __future__ import annotations

import collections
import signal
import subprocess
from pathlib import Path

import pytest

from .helpers import API_KEY, ServerProcess, cli_popen, index, make_files, run_cli, wait_for

pytestmark = pytest.mark.slow


def _env(tmp_path: Path, url: str) -> dict[str, str]:
    return {
        "EI_API_KEY": API_KEY,
        "EI_INGESTION_URL": url,
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }


def _once_each(lines: list[dict[str, object]], n: int) -> None:
    per_file = collections.Counter(line["originalFileName"] for line in lines)
    assert len(per_file) == n, f"{n - len(per_file)} file(s) never arrived"
    assert max(per_file.values()) == 1, [k for k, v in per_file.items() if v > 1]


def test_sigkill_mid_run_then_rerun_delivers_every_file_exactly_once(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    n = 240
    make_files(tmp_path / "data", n)
    srv = ServerProcess(tmp_path / "server", extra=["--latency-ms", "30"]).start()
    servers.append(srv)
    env = _env(tmp_path, srv.url)
    args = ["upload", str(tmp_path / "data"), "--concurrency", "4", "--session", "kill-test"]
    proc = cli_popen(args, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert wait_for(lambda: len(index(srv.data_dir)) >= 60, timeout=30)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    delivered_before_kill = len(index(srv.data_dir))
    assert delivered_before_kill < n, "the run finished before it could be killed"

    again = run_cli(args, env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "OK, every file delivered" in again.stdout
    assert "upload(s) interrupted last time are queued again" in again.stderr
    _once_each(index(srv.data_dir), n)

    third = run_cli(args, env)  # and a third run sends nothing at all
    assert third.returncode == 0 and "(0 this run" in third.stdout
    assert len(index(srv.data_dir)) == n


def test_service_gone_mid_run_exits_nonzero_and_a_rerun_delivers_the_rest(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    n = 200
    make_files(tmp_path / "data", n)
    srv = ServerProcess(tmp_path / "server", extra=["--latency-ms", "30"]).start()
    servers.append(srv)
    env = _env(tmp_path, srv.url)
    args = ["upload", str(tmp_path / "data"), "--give-up-after", "2"]
    proc = cli_popen(args, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert wait_for(lambda: len(index(srv.data_dir)) >= 40, timeout=30)
    srv.kill()  # the network goes away
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, out + err
    assert "stopped: the ingestion service could not be reached" in out
    assert "not yet delivered:" in out and "last error: network error" in out
    assert "run the same command again to deliver the rest" in out
    assert "NOT everything was delivered" in out
    arrived = len(index(srv.data_dir))
    assert 40 <= arrived < n

    back = ServerProcess(tmp_path / "server", port=srv.port).start()  # same data, same port
    servers.append(back)
    again = run_cli(args, env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{arrived} earlier" in again.stdout or "earlier" in again.stdout
    _once_each(index(back.data_dir), n)


def test_ctrl_c_stops_cleanly_and_a_rerun_finishes(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    n = 400  # several files go in one request: enough rounds that Ctrl-C lands mid-batch
    make_files(tmp_path / "data", n)
    srv = ServerProcess(tmp_path / "server", extra=["--latency-ms", "100"]).start()
    servers.append(srv)
    env = _env(tmp_path, srv.url)
    args = ["upload", str(tmp_path / "data"), "--concurrency", "2"]
    proc = cli_popen(args, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert wait_for(lambda: len(index(srv.data_dir)) >= 20, timeout=30)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert "interrupted" in out and "not yet delivered:" in out
    assert "stopping: uploads in flight finish" in err
    again = run_cli(args, env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "interrupted last time" not in again.stderr  # the stop left nothing half-done
    _once_each(index(srv.data_dir), n)
