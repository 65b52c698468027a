"""Metered links end to end: a real agent process, the local ingestion server, real files.

Upload windows (nothing sent outside one; ``retry-now`` overrides), the daily data budget
(counted in the queue, kept across a restart), priorities (a sensor window does not wait
behind a backlog) and a forward proxy (HTTP_PROXY honoured, NO_PROXY bypasses it, a dead
proxy is named). The bandwidth cap's figure belongs to ``bench/bandwidth.py``.
"""

from __future__ import annotations

import base64
import http.server
import json
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import Agent, LocalServer, child_env, free_port, wait_for, write_config


def config(tmp_path: Path, url: str, key_file: Path, ingestion: str = "",
           watches: str = "") -> Path:  # fmt: skip
    (tmp_path / "captures").mkdir(exist_ok=True)
    watches = watches or f'[[watch]]\npath = "{tmp_path / "captures"}"\nsettle_seconds = 0.1\n'
    return write_config(
        tmp_path / "agent.toml",
        f"""
[device]
id = "pi-metered"

[ingestion]
url = "{url}"
api_key_file = "{key_file}"
retry_base_seconds = 0.05
retry_max_seconds = 0.5
{ingestion}

[queue]
path = "{tmp_path / "queue.db"}"

{watches}
""",
    )


def drop(folder: Path, n: int, prefix: str = "f", size: int = 2048) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"{prefix}{i:03d}.json"
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes((f"{prefix}{i}".encode() * size)[:size])
        tmp.rename(folder / name)
        names.append(name)
    return names


def status(cfg: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "edge_uploader", "status", "--config", str(cfg),
                          "--json"], capture_output=True, text=True, env=child_env(),
                         check=True)  # fmt: skip
    return json.loads(out.stdout)


def cli(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "edge_uploader", *args], capture_output=True,
                         text=True, env=child_env(), check=True)  # fmt: skip
    return out.stdout


def closed_window() -> str:
    """A window that opens in two hours (local time): closed now."""
    now = time.localtime()
    start = (now.tm_hour + 2) % 24
    return f"{start:02d}:00-{(start + 1) % 24:02d}:00"


def test_outside_the_windows_nothing_is_sent_until_retry_now(
    tmp_path: Path, server: LocalServer, key_file: Path, agents: list[Agent]
) -> None:
    window = closed_window()
    cfg = config(tmp_path, server.url, key_file, f'upload_windows = ["{window}"]')
    agents.append(agent := Agent(cfg, tmp_path / "agent.log").start())
    wait_for(lambda: "edge-uploader running" in agent.output())
    drop(tmp_path / "captures", 5)
    wait_for(lambda: status(cfg)["backlog"] == 5)
    wait_for(lambda: "uploads wait: outside the upload windows" in agent.output())
    assert server.index() == []  # nothing reached the server
    info = status(cfg)
    assert info["window"]["windows"] == [window] and info["window"]["open"] is False
    assert info["window"]["next_open_at"] > time.time()
    text = cli("status", "--config", str(cfg))
    assert f"upload windows {window}: CLOSED: nothing is sent until" in text

    assert "woken" in cli("retry-now", "--config", str(cfg))
    wait_for(lambda: len(server.index()) == 5)
    assert status(cfg)["window"]["override"] is True
    assert "overridden by retry-now" in cli("status", "--config", str(cfg))
    assert agent.terminate() == 0

    # the override lasted until the stop: a new start keeps to the windows again
    agents.append(again := Agent(cfg, tmp_path / "agent2.log").start())
    wait_for(lambda: "edge-uploader running" in again.output())
    drop(tmp_path / "captures", 2, prefix="late")
    wait_for(lambda: "uploads wait: outside the upload windows" in again.output())
    assert status(cfg)["window"]["override"] is False
    assert len(server.index()) == 5
    assert again.terminate() == 0


def test_the_daily_budget_holds_and_survives_a_restart(
    tmp_path: Path, server: LocalServer, key_file: Path, agents: list[Agent]
) -> None:
    port = free_port()
    watch = (f'[[watch]]\npath = "{tmp_path / "captures"}"\nsettle_seconds = 0.1\n'
             f'[http]\nlisten = "127.0.0.1:{port}"\n')  # fmt: skip
    cfg = config(tmp_path, server.url, key_file,
                 "max_bytes_per_day = 7000\nmax_files_per_request = 1\nconcurrency = 1\n",
                 watch)  # fmt: skip
    agents.append(agent := Agent(cfg, tmp_path / "agent.log").start())
    wait_for(lambda: "edge-uploader running" in agent.output())
    drop(tmp_path / "captures", 6)  # 6 x 2048 bytes; 3 fit in 7000
    wait_for(lambda: "daily data budget of 7000 bytes is spent" in agent.output())
    wait_for(lambda: status(cfg)["counts"]["delivered"] == 3)
    info = status(cfg)
    assert info["budget"] == {
        "max_bytes_per_day": 7000, "used_bytes": 3 * 2048, "left_bytes": 7000 - 3 * 2048,
        "resets_at": info["budget"]["resets_at"], "spent": True,
    }  # fmt: skip
    assert info["backlog"] == 3
    assert "SPENT: uploads wait until" in cli("status", "--config", str(cfg))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        metrics = page.read().decode()
    assert "edge_uploader_data_budget_bytes 7000" in metrics
    assert f"edge_uploader_data_budget_used_bytes {3 * 2048}" in metrics
    assert "edge_uploader_data_budget_spent 1" in metrics
    assert agent.terminate() == 0

    agents.append(again := Agent(cfg, tmp_path / "agent2.log").start())
    wait_for(lambda: "daily data budget of 7000 bytes is spent" in again.output())
    assert len(server.index()) == 3  # a restart did not reset the budget
    assert again.terminate() == 0


def test_a_sensor_capture_does_not_wait_behind_a_video_backlog(
    tmp_path: Path, key_file: Path, agents: list[Agent]
) -> None:
    slow = LocalServer(tmp_path / "slow", key_file).start("--latency-ms", "40")
    try:
        video, sensor = tmp_path / "video", tmp_path / "sensor"
        watches = (f'[[watch]]\npath = "{video}"\nsettle_seconds = 0.1\n'
                   f'[[watch]]\npath = "{sensor}"\nsettle_seconds = 0.1\npriority = 10\n')  # fmt: skip
        video.mkdir()
        sensor.mkdir()
        cfg = config(tmp_path, slow.url, key_file, "concurrency = 1\nmax_files_per_request = 1\n",
                     watches)  # fmt: skip
        drop(video, 60, prefix="video")  # queued by the start-up scan: a backlog
        agents.append(agent := Agent(cfg, tmp_path / "agent.log").start())
        wait_for(lambda: len(slow.index()) >= 3)
        drop(sensor, 1, prefix="sensor")
        wait_for(lambda: any(r["fileName"].startswith("sensor") for r in slow.index()))
        order = [r["fileName"] for r in slow.index()]
        assert order.index("sensor000.json") < 20  # it went next, not after 60 videos
        assert agent.terminate() == 0
    finally:
        slow.stop()


class _Proxy(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    seen: list[str]
    credentials: list[str | None]


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    """A forward proxy for plain http:// (absolute-form requests), as a site proxy is."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        self.server.credentials.append(  # type: ignore[attr-defined]
            self.headers.get("proxy-authorization")
        )
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        hop = ("proxy-connection", "connection", "proxy-authorization")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
        request = urllib.request.Request(self.path, data=body, headers=headers, method="POST")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as answer:
            data = answer.read()
            self.send_response(answer.status)
            for k, v in answer.headers.items():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[_Proxy]:
    srv = _Proxy(("127.0.0.1", 0), _ProxyHandler)
    srv.seen = []
    srv.credentials = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_uploads_go_through_the_proxy_the_environment_names(
    tmp_path: Path, server: LocalServer, key_file: Path, agents: list[Agent], proxy: _Proxy
) -> None:
    cfg = config(tmp_path, server.url, key_file)
    proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
    agents.append(agent := Agent(cfg, tmp_path / "agent.log").start(HTTP_PROXY=proxy_url))
    wait_for(lambda: "edge-uploader running" in agent.output())
    assert f"through the proxy {proxy_url}" in agent.output()
    drop(tmp_path / "captures", 3)
    wait_for(lambda: len(server.index()) == 3)
    assert proxy.seen and all(p.startswith(server.url + "/api/") for p in proxy.seen)
    assert agent.terminate() == 0

    # NO_PROXY: the service is reached directly
    proxy.seen.clear()
    agents.append(direct := Agent(cfg, tmp_path / "agent2.log").start(
        HTTP_PROXY=proxy_url, NO_PROXY="127.0.0.1"))  # fmt: skip
    drop(tmp_path / "captures", 2, prefix="direct")
    wait_for(lambda: len(server.index()) == 5)
    assert proxy.seen == []
    assert "through the proxy" not in direct.output()
    assert direct.terminate() == 0


def test_a_proxy_password_from_the_environment_is_sent_to_the_proxy_alone(
    tmp_path: Path, server: LocalServer, key_file: Path, agents: list[Agent], proxy: _Proxy
) -> None:
    cfg = config(tmp_path, server.url, key_file)
    port = proxy.server_address[1]
    env = {"HTTP_PROXY": f"http://field:s3cret@127.0.0.1:{port}"}
    agents.append(agent := Agent(cfg, tmp_path / "agent.log").start(**env))
    wait_for(lambda: "edge-uploader running" in agent.output())
    assert f"through the proxy http://field:***@127.0.0.1:{port}" in agent.output()
    drop(tmp_path / "captures", 2)
    wait_for(lambda: len(server.index()) == 2)
    # Two files may go in one request or in two; each request carries the password.
    basic = "Basic " + base64.b64encode(b"field:s3cret").decode()
    assert proxy.credentials and set(proxy.credentials) == {basic}
    assert agent.terminate() == 0
    assert "s3cret" not in agent.output()


def test_a_dead_proxy_is_named_in_the_reason(
    tmp_path: Path, server: LocalServer, key_file: Path, agents: list[Agent]
) -> None:
    port = free_port()  # nothing listens there
    with socket.socket() as s:  # (make sure of it)
        assert s.connect_ex(("127.0.0.1", port)) != 0
    cfg = config(tmp_path, server.url, key_file)
    dead = f"http://user:s3cret@127.0.0.1:{port}"
    agents.append(agent := Agent(cfg, tmp_path / "agent.log").start(HTTP_PROXY=dead))
    wait_for(lambda: "edge-uploader running" in agent.output())
    drop(tmp_path / "captures", 1)
    wait_for(lambda: status(cfg)["last_error"] is not None)
    reason = status(cfg)["last_error"]
    assert f"through the proxy http://user:***@127.0.0.1:{port}" in reason
    assert "s3cret" not in agent.output() and "s3cret" not in reason
    assert agent.terminate() == 0
