"""The optional local health endpoint: ``[http] listen = "127.0.0.1:9108"``.

- ``GET /healthz``: 200 with ``{"status": "ok"}`` when healthy, 503 with
  ``{"status": "unhealthy", "reasons": [...]}`` otherwise (see ``agent.health``);
- ``GET /metrics``: Prometheus text format (see ``agent.metrics``).

It listens on loopback unless the config names another address, and it never shows a
secret (there is none to show: it reads counters, queue counts and free space). The
server is stdlib ``http.server`` in a thread; the accept loop sleeps in ``select`` until a
connection or the stop signal arrives (no periodic wake-ups).
"""

from __future__ import annotations

import json
import logging
import selectors
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from ..config import HttpConfig
from ..errors import ConfigError
from . import metrics
from .health import assess

if TYPE_CHECKING:
    from .lifecycle import Service

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 5.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    service: Service


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_SECONDS
    server_version = "edge-uploader"
    sys_version = ""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/healthz":
                health = assess(self.server.service)
                doc: dict[str, object] = {"status": "ok" if health.healthy else "unhealthy"}
                if health.reasons:
                    doc["reasons"] = health.reasons
                body = (json.dumps(doc, indent=1) + "\n").encode()
                self._send(200 if health.healthy else 503, "application/json", body)
            elif path == "/metrics":
                self._send(200, metrics.CONTENT_TYPE, metrics.render(self.server.service).encode())
            else:
                self._send(404, "text/plain", b"not found: try /healthz or /metrics\n")
        except Exception:
            log.exception("health endpoint failed on %s", path)
            self._send(500, "text/plain", b"internal error\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class HealthServer:
    """A ``Component``: serves ``/healthz`` and ``/metrics`` while the daemon runs."""

    name = "http"

    def __init__(self, config: HttpConfig, source: str = "config") -> None:
        assert config.listen is not None
        self.config = config
        self.source = source
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stop_r, self._stop_w = socket.socketpair()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the real port when 0 was configured."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self, service: Service) -> None:
        host, port = self.config.listen or ("127.0.0.1", 0)
        server_class = _Server6 if ":" in host else _Server
        try:
            server = server_class((host, port), _Handler)
        except OSError as exc:
            reason = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            raise ConfigError(self.source, "http.listen", reason) from None
        server.service = service
        self._server = server
        if not self.config.loopback:
            log.warning("health endpoint listens on %s:%d, reachable from the network", host, port)
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._thread.start()
        log.info("health endpoint on http://%s:%d/healthz and /metrics", *self.address)

    def _serve(self) -> None:
        assert self._server is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._server.socket, selectors.EVENT_READ)
            sel.register(self._stop_r, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj is self._stop_r:
                        return
                    self._server.handle_request()

    def stop(self) -> None:
        try:
            self._stop_w.send(b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(5)
        if self._server is not None:
            self._server.server_close()
        self._stop_r.close()
        self._stop_w.close()
