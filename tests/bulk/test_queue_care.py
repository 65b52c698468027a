"""Queue care: dead list/retry/drop, retry-now (and waking a daemon), check-config, status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from edge_uploader.cli import main
from edge_uploader.daemon.wake import STATE_KEY, process_start, wake_daemon
from edge_uploader.localserver import LocalIngestionServer
from edge_uploader.store.queue import Queue, State
from tests.fakes import FakeClock

from .helpers import (
    API_KEY,
    ServerProcess,
    cli_popen,
    index,
    make_files,
    queue_path,
    run_cli,
    wait_for,
)


@pytest.fixture
def small_server(tmp_path: Path) -> Any:
    """A server that refuses files over 100 bytes (413): dead letters on demand."""
    srv = LocalIngestionServer(
        tmp_path / "small", api_keys=[API_KEY], quiet=True, max_file_bytes=100
    ).start()
    yield srv
    srv.stop()


def _dead_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> Path:
    monkeypatch.setenv("EI_INGESTION_URL", url)
    data = tmp_path / "data"
    make_files(data, 3)  # small: accepted
    (data / "big.1.wav").write_bytes(b"x" * 500)
    (data / "big.2.wav").write_bytes(b"y" * 500)
    assert main(["upload", "--no-progress", str(data)]) == 1
    return data


def test_dead_list_retry_and_drop(
    tmp_path: Path,
    env: dict[str, str],
    small_server: LocalIngestionServer,
    server: LocalIngestionServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = _dead_run(tmp_path, monkeypatch, small_server.url)
    out = capsys.readouterr().out
    assert "refused (dead):      2" in out and "HTTP 413" in out

    assert main(["dead", "list"]) == 0
    text = capsys.readouterr().out
    assert "big.1.wav" in text and "big.2.wav" in text and "2 dead letter(s)" in text

    assert main(["dead", "list", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == 1 and doc["count"] == 2 and doc["queue"] == str(queue_path(tmp_path))
    first = doc["dead_letters"][0]
    assert set(first) == {
        "id",
        "path",
        "file_name",
        "size",
        "mtime_ns",
        "source",
        "batch",
        "category",
        "label",
        "metadata",
        "reason",
        "attempts",
        "enqueued_at",
        "sha256",
    }
    assert first["reason"].startswith("HTTP 413") and first["batch"].startswith("upload-")
    assert first["source"] == "upload" and first["attempts"] == 1 and first["size"] == 500
    ids = [d["id"] for d in doc["dead_letters"]]

    assert main(["dead", "list", "--json", "--id", str(ids[1])]) == 0
    assert [d["id"] for d in json.loads(capsys.readouterr().out)["dead_letters"]] == [ids[1]]

    for action in ("drop", "retry"):
        with pytest.raises(SystemExit) as exc:
            main(["dead", action])
        assert exc.value.code == 2
    assert "--id N, --reason TEXT, --batch ID, or --all" in capsys.readouterr().err

    assert main(["dead", "retry", "--id", str(ids[0])]) == 0
    assert "1 dead letter(s) queued again" in capsys.readouterr().out
    # the service accepts it now: the same upload command delivers the retried row
    monkeypatch.setenv("EI_INGESTION_URL", server.url)
    assert main(["upload", "--no-progress", str(data)]) == 1  # big.2 is still dead
    out = capsys.readouterr().out
    assert "delivered:           4  (1 this run" in out and "refused (dead):      1" in out
    retried = Path(doc["dead_letters"][0]["path"]).name
    assert [line["originalFileName"] for line in index(server.data_dir)] == [retried]

    assert main(["dead", "drop", "--reason", "HTTP 413"]) == 0
    assert "1 dead letter(s) dropped" in capsys.readouterr().out
    assert main(["dead", "list"]) == 0
    assert "0 dead letter(s)" in capsys.readouterr().out


def test_retry_now_wakes_only_a_live_daemon(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock(time.time() + 1000)  # rows due far in the future
    q = Queue(queue_path(tmp_path), clock=clock)
    from edge_uploader.store.queue import NewFile, Result

    (rid,) = q.enqueue_many(
        [
            NewFile(
                path="/x/a.wav",
                size=1,
                mtime_ns=1,
                source="watch:x",
                label=None,
                category="training",
                metadata={},
            )
        ]
    )
    q.lease(1)
    q.settle([Result(rid, State.PENDING, "HTTP 500", clock() + 500)])
    got: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
    try:
        q.set_state(**{STATE_KEY: {"pid": os.getpid(), "start": "0"}})  # a reused pid
        assert wake_daemon(q) is None and got == []
        q.set_state(**{STATE_KEY: {"pid": os.getpid(), "start": process_start(os.getpid())}})
        q.close()
        assert main(["retry-now"]) == 0
        out = capsys.readouterr().out
        assert "1 waiting file(s) are due now" in out and f"pid {os.getpid()}" in out
        assert wait_for(lambda: got == [signal.SIGUSR1], timeout=2)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    q = Queue(queue_path(tmp_path))
    row = q.get(rid)
    q.close()
    assert row is not None and row.next_attempt_at <= time.time()


@pytest.mark.slow
def test_retry_now_makes_a_running_daemon_send_at_once(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    """A daemon holding back after an outage (backoff of minutes) sends as soon as
    `retry-now` wakes it with SIGUSR1."""
    srv = ServerProcess(tmp_path / "server").start()
    port = srv.port
    srv.stop()  # the service is down when the files arrive
    watch = tmp_path / "watch"
    make_files(watch, 3)
    key = tmp_path / "key"
    key.write_text(API_KEY + "\n")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[ingestion]\nurl = "http://127.0.0.1:{port}"\napi_key_file = "{key}"\n'
        "retry_base_seconds = 60\nretry_max_seconds = 600\n"
        f'[queue]\npath = "{tmp_path / "q.db"}"\n[[watch]]\npath = "{watch}"\n'
        "settle_seconds = 0\n"
    )
    daemon = cli_popen(
        ["run", "--config", str(config)], {}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:

        def waiting() -> bool:
            if not (tmp_path / "q.db").exists():
                return False
            q = Queue(tmp_path / "q.db")
            try:
                counts = q.counts()
                return counts["pending"] == 3 and STATE_KEY in q.get_state()
            finally:
                q.close()

        assert wait_for(waiting, timeout=15)
        back = ServerProcess(tmp_path / "server", port=port).start()
        servers.append(back)
        result = run_cli(["retry-now", "--config", str(config)], {})
        assert result.returncode == 0 and "was woken" in result.stdout, result.stdout
        assert wait_for(lambda: len(index(back.data_dir)) == 3, timeout=10)
    finally:
        daemon.terminate()
        daemon.wait(10)


def test_check_config(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    watch = tmp_path / "cam"
    (watch / "sess-7").mkdir(parents=True)
    sample = watch / "sess-7" / "idle.01.jpg"
    sample.write_bytes(b"jpg")
    (watch / "sess-7" / "idle.01.jpg.meta.json").write_text(
        json.dumps({"metadata": {"temp": "21"}})
    )
    config = tmp_path / "agent.toml"
    config.write_text(
        '[device]\nid = "pi-07"\n[metadata]\nsite = "north"\n'
        f'[[watch]]\npath = "{watch}"\ncategory = "testing"\n'
        '[watch.metadata]\nsession = "{dir}"\n'
    )
    assert main(["check-config", str(config), "--sample", str(sample)]) == 0
    out = capsys.readouterr().out
    assert "device: id pi-07" in out and "API key: from the environment variable EI_API_KEY" in out
    assert "watch[0]: " + str(watch) in out
    assert "label: none sent; the service infers it from the file name -> 'idle'" in out
    assert "category: testing" in out
    assert '"session":"sess-7"' in out and '"site":"north"' in out and '"temp":"21"' in out
    assert out.rstrip().endswith("config OK")
    assert API_KEY not in out

    (watch / "sess-7" / "idle.01.jpg.meta.json").write_text("{broken")
    assert main(["check-config", str(config), "--sample", str(sample)]) == 78
    assert "would be held" in capsys.readouterr().err
    config.write_text("[ingestion]\nconcurency = 4\n")
    assert main(["check-config", str(config)]) == 78
    assert "ingestion.concurency: unknown key" in capsys.readouterr().err
    config.write_text("")
    os.environ.pop("EI_API_KEY")
    assert main(["check-config", str(config)]) == 78
    assert "no API key" in capsys.readouterr().err


def test_status_without_a_config_reads_the_upload_queue(
    tmp_path: Path,
    env: dict[str, str],
    server: LocalIngestionServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_files(tmp_path / "d", 3)
    assert main(["upload", "--no-progress", str(tmp_path / "d")]) == 0
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["counts"]["delivered"] == 3 and info["throughput"]["last_60s"]["files"] == 3
    q = Queue(queue_path(tmp_path))
    assert all(r.sample_id for r in q.rows(State.DELIVERED))
    q.close()
