"""Health in process: the watchdog's "alive" test with a hung upload (held at the HTTP
transport seam), and ``/healthz`` + ``/metrics`` over real HTTP."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path

import httpx

from edge_uploader.config import load_config
from edge_uploader.daemon.health import assess
from edge_uploader.daemon.lifecycle import Daemon
from edge_uploader.localserver import LocalIngestionServer

from .conftest import free_port, http_get, wait_for, write_config


def _service(config: Path, transport: httpx.BaseTransport | None = None) -> Daemon:
    service = Daemon(load_config(config), config_path=config, transport=transport)
    service.start()
    return service


class Gate(httpx.BaseTransport):
    """Holds every request, body unsent, until opened; then forwards it to the real server."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.open.wait(60)
        return self.inner.handle_request(request)


def test_a_hung_uploader_is_not_alive_and_recovers(
    tmp_path: Path, server: LocalIngestionServer
) -> None:
    config = write_config(tmp_path, server.url, "[health]\nstall_seconds = 0.5\n")
    gate = Gate()
    service = _service(config, gate)
    try:
        assert assess(service).alive and assess(service).healthy
        pipeline = service.delivery
        assert pipeline is not None
        (tmp_path / "captures" / "x.csv").write_text("t,v\n0,1\n")
        wait_for(lambda: pipeline.inflight == 1)
        wait_for(lambda: not assess(service).alive, timeout=5)
        assert "uploads stalled: 1 in flight" in assess(service).reasons[0]
        assert not service.health().alive
        gate.open.set()
        wait_for(lambda: len(server.index_lines()) == 1)
        wait_for(lambda: assess(service).alive)
    finally:
        service.stop()


def test_waiting_for_a_retry_or_a_refused_key_is_idle_by_design(
    tmp_path: Path, server: LocalIngestionServer
) -> None:
    config = write_config(tmp_path, server.url, "[health]\nstall_seconds = 0.5\n",
                          key="ei_not_the_right_key")  # fmt: skip
    service = _service(config)
    try:
        (tmp_path / "captures" / "x.csv").write_text("t,v\n0,1\n")
        wait_for(lambda: service.delivery is not None and service.delivery.paused)
        wait_for(lambda: service.delivery is not None and service.delivery.inflight == 0)
        health = assess(service)
        assert health.alive, "a refused key pauses uploads: restarting would not help"
        assert not health.healthy
        assert any(r.startswith("uploads paused: HTTP 401") for r in health.reasons)
    finally:
        service.stop()


_SAMPLE = re.compile(r'^(edge_uploader|process)_[a-z_]+(\{[a-z]+="[^"]*"\})? -?[0-9.e+]+$')


def test_healthz_and_metrics(tmp_path: Path, server: LocalIngestionServer) -> None:
    port = free_port()
    config = write_config(tmp_path, server.url, f'[http]\nlisten = "127.0.0.1:{port}"\n')
    service = _service(config)
    base = f"http://127.0.0.1:{port}"
    try:
        status, body = http_get(base + "/healthz")
        assert status == 200 and json.loads(body) == {"status": "ok"}
        for name in ("a.csv", "b.csv"):
            (tmp_path / "captures" / name).write_text(f"t,v\n0,{name[0]}\n")
        wait_for(lambda: len(server.index_lines()) == 2)
        wait_for(lambda: "edge_uploader_files_delivered_total 2" in http_get(base + "/metrics")[1])
        status, text = http_get(base + "/metrics")
        assert status == 200
        values = {}
        for line in text.splitlines():
            if line.startswith("#"):
                assert re.match(r"^# (HELP|TYPE) (edge_uploader|process)_[a-z_]+ .+", line), line
                continue
            assert _SAMPLE.match(line), line
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
        assert values["edge_uploader_files_seen_total"] == 2
        assert values["edge_uploader_files_enqueued_total"] == 2
        assert values["edge_uploader_files_delivered_total"] == 2
        assert values["edge_uploader_files_duplicate_total"] == 0
        assert values["edge_uploader_upload_retries_total"] == 0
        assert values["edge_uploader_files_dead_total"] == 0
        assert values["edge_uploader_bytes_sent_total"] == 16
        assert values['edge_uploader_queue_depth{state="delivered"}'] == 2
        assert values['edge_uploader_queue_depth{state="pending"}'] == 0
        assert values["edge_uploader_queue_backlog"] == 0
        assert values["process_open_fds"] > 0
        assert values["edge_uploader_oldest_pending_age_seconds"] == 0
        assert values['edge_uploader_upload_latency_seconds_bucket{le="+Inf"}'] == 2
        assert values["edge_uploader_upload_latency_seconds_count"] == 2
        assert values["edge_uploader_captures_allowed"] == 1
        assert values["edge_uploader_healthy"] == 1
        assert values["edge_uploader_upload_concurrency_limit"] >= 1  # "auto": adapted
        assert values["edge_uploader_upload_rtt_seconds"] > 0
        assert values["edge_uploader_upload_outage"] == 0
        assert values["edge_uploader_upload_window_open"] == 1  # no windows: always open
        assert values["edge_uploader_upload_bandwidth_cap_bytes"] == 0
        assert "edge_uploader_data_budget_bytes" not in values  # no budget configured
        assert http_get(base + "/nope")[0] == 404
        assert "# TYPE edge_uploader_upload_latency_seconds histogram" in text
    finally:
        service.stop()
    # stopped: the port is closed
    try:
        urllib.request.urlopen(base + "/healthz", timeout=2)
        raise AssertionError("still listening after stop")
    except urllib.error.URLError:
        pass


def test_healthz_503_with_reasons(tmp_path: Path, server: LocalIngestionServer) -> None:
    port = free_port()
    config = write_config(
        tmp_path, server.url,
        f'[http]\nlisten = "127.0.0.1:{port}"\n[disk]\nmin_free_percent = 90\n',
        key="ei_wrong",
    )  # fmt: skip
    service = _service(config)
    try:
        (tmp_path / "captures" / "a.csv").write_text("t,v\n0,1\n")
        wait_for(lambda: service.delivery is not None and service.delivery.paused)
        status, body = http_get(f"http://127.0.0.1:{port}/healthz")
        assert status == 503
        doc = json.loads(body)
        assert doc["status"] == "unhealthy"
        assert any(r.startswith("uploads paused: HTTP 401") for r in doc["reasons"])
        assert any(r.startswith("low disk space on ") for r in doc["reasons"])
        assert "ei_wrong" not in body
    finally:
        service.stop()


def test_a_reload_that_cannot_start_goes_back_to_the_running_config(
    tmp_path: Path, server: LocalIngestionServer
) -> None:
    import socket

    config = write_config(tmp_path, server.url)
    service = _service(config)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        config.write_text(config.read_text() + f'\n[http]\nlisten = "127.0.0.1:{port}"\n')
        assert service.reload() is False
        assert service.reload_error is not None and "cannot listen" in service.reload_error
        assert service.config.http.listen is None, "the running config stays"
        assert "last reload refused: " in service.status_line()
        (tmp_path / "captures" / "z.csv").write_text("t,v\n0,z\n")
        wait_for(lambda: len(server.index_lines()) == 1)
        assert assess(service).alive
    finally:
        taken.close()
        service.stop()


def test_a_slow_large_upload_is_progress_not_a_hang(tmp_path: Path) -> None:
    """Every body chunk sent counts: an upload slower than stall_seconds stays alive."""
    import time

    chunks: list[int] = []

    class SlowLink(httpx.BaseTransport):
        """Takes the body 64 KiB at a time, 0.1 s per chunk: about 2.4 s in all."""

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            for chunk in request.stream:  # type: ignore[union-attr]
                chunks.append(len(chunk))
                time.sleep(0.1)
            body = b'{"success": true, "files": [{"success": true, "sampleId": 1}]}'
            return httpx.Response(200, content=body)

    config = write_config(tmp_path, "http://127.0.0.1:9", "[health]\nstall_seconds = 0.6\n")
    service = Daemon(load_config(config), transport=SlowLink())
    service.start()
    try:
        (tmp_path / "captures" / "big.wav").write_bytes(b"\1" * (1500 * 1024))
        wait_for(lambda: service.delivery is not None and service.delivery.inflight == 1)
        checks = []
        while service.delivery is not None and service.delivery.inflight:
            checks.append(assess(service).alive)
            time.sleep(0.05)
        assert len(chunks) >= 15 and len(checks) >= 20, (len(chunks), len(checks))
        assert all(checks), "the upload took longer than stall_seconds, but it made progress"
        assert wait_for(lambda: service.stats.counts["delivered"] == 1)  # reported just after
    finally:
        service.stop()
