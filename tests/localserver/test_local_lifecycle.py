"""Start, stop, restart: ids persist, the CLI prints its port and stops on SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_uploader.errors import ConfigError
from edge_uploader.localserver import LocalIngestionServer
from edge_uploader.localserver.cli import add_arguments, build_server

from .conftest import make_client, upload

REPO = Path(__file__).resolve().parents[2]


def test_sample_ids_persist_across_restart(data_dir: Path) -> None:
    with LocalIngestionServer(data_dir, quiet=True) as srv, make_client(srv.url, "ei_k") as c:
        assert upload(c, "a.wav", b"a").json()["files"][0]["sampleId"] == 1
        assert upload(c, "b.wav", b"b").json()["files"][0]["sampleId"] == 2
        assert c.delete("/v1/api/1/raw-data/2").json()["success"] is True
    with LocalIngestionServer(data_dir, quiet=True) as srv, make_client(srv.url, "ei_k") as c:
        assert upload(c, "c.wav", b"c").json()["files"][0]["sampleId"] == 3  # 2 not reused
        assert [s.id for s in srv.samples()] == [1, 3]
        assert [line["sampleId"] for line in srv.index_lines()] == [1, 2, 3]


def test_ids_never_go_below_the_index(data_dir: Path) -> None:
    with LocalIngestionServer(data_dir, quiet=True) as srv, make_client(srv.url, "ei_k") as c:
        upload(c, "a.wav", b"a")
    (data_dir / "project.db").unlink()  # the live state is lost, the index is not
    for extra in ("project.db-wal", "project.db-shm"):
        (data_dir / extra).unlink(missing_ok=True)
    with LocalIngestionServer(data_dir, quiet=True) as srv, make_client(srv.url, "ei_k") as c:
        assert upload(c, "b.wav", b"b").json()["files"][0]["sampleId"] == 2


def test_keep_alive_connection_is_reused(server: LocalIngestionServer) -> None:
    with make_client(server.url) as c:
        ports = set()
        for i in range(5):
            r = upload(c, f"k.{i}.wav", f"{i}".encode())
            assert r.status_code == 200
            assert int(r.headers["content-length"]) == len(r.content)
            stream = r.extensions["network_stream"]
            ports.add(stream.get_extra_info("client_addr")[1])
        assert len(ports) == 1


def test_stop_is_prompt_with_idle_connections(data_dir: Path) -> None:
    srv = LocalIngestionServer(data_dir, quiet=True).start()
    with make_client(srv.url, "ei_k") as c:
        upload(c)  # leaves an idle keep-alive connection open
        started = time.monotonic()
        srv.stop()
        assert time.monotonic() - started < 1.5


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_key_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# accepted keys\nei_one\n\nei_two\n")
    hmac_file = tmp_path / "hmac"
    hmac_file.write_text("abcd\n")
    args = _parse(
        [
            "--data-dir",
            str(tmp_path / "d"),
            "--api-key-file",
            str(keys),
            "--hmac-key-file",
            str(hmac_file),
        ]
    )
    srv = build_server(args)
    assert srv.keys.keys == frozenset({"ei_one", "ei_two"}) and srv.hmac_key == "abcd"
    monkeypatch.setenv("EI_API_KEY", "ei_env")
    assert build_server(_parse(["--data-dir", str(tmp_path / "d")])).keys.keys == frozenset(
        {"ei_env"}
    )
    monkeypatch.delenv("EI_API_KEY")
    assert build_server(_parse(["--data-dir", str(tmp_path / "d")])).keys.keys is None
    assert "accepting any API key that starts with 'ei_'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="api-key-file"):
        build_server(_parse(["--data-dir", "d", "--api-key-file", str(tmp_path / "missing")]))
    with pytest.raises(ConfigError, match="fail_rate"):
        build_server(_parse(["--data-dir", "d", "--fail-rate", "2"]))


def test_subprocess_prints_port_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "EI_API_KEY": "ei_sub", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_uploader.localserver",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "d"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("local-ingestion listening on http://127.0.0.1:")
        url = line.split()[3]
        assert line.endswith(f"data={tmp_path / 'd'}")
        with make_client(url, "ei_sub") as c:
            assert upload(c).json()["files"][0]["sampleId"] == 1
            assert c.get("/v1/api/projects", headers={"x-api-key": "ei_other"}).status_code == 401
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 1.5
        _, err = proc.communicate()
        assert "POST /api/training/files 200" in err
        assert "ei_sub" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
