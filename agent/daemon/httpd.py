"""The optional local health endpoint: ``[http] listen = "127.0.0.1:9108"``.

- ``GET /healthz``: 200 with ``{"status": "ok"}`` when healthy, 503 with
  ``{"status": "unhealthy", "reasons": [...]}`` otherwise (see ``daemon.health``);
- ``GET /metrics``: Prometheus text format (see ``daemon.metrics``).

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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..config import HttpConfig
from ..core.runtime import Runtime
from ..errors import ConfigError
from ..loop import Loop
from . import metrics
from .health import Vitals, assess

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 5.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    vitals: Vitals


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
                health = assess(self.server.vitals)
                doc: dict[str, object] = {"status": "ok" if health.healthy else "unhealthy"}
                if health.reasons:
                    doc["reasons"] = health.reasons
                body = (json.dumps(doc, indent=1) + "\n").encode()
                self._send(200 if health.healthy else 503, "application/json", body)
            elif path == "/metrics":
                self._send(200, metrics.CONTENT_TYPE, metrics.render(self.server.vitals).encode())
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
    """A component: serves ``/healthz`` and ``/metrics`` while the daemon runs. It reads
    the daemon only through ``Vitals``."""

    name = "http"

    def __init__(self, config: HttpConfig, vitals: Vitals, source: str = "config") -> None:
        assert config.listen is not None
        self.config = config
        self.vitals = vitals
        self.source = source
        self._server: _Server | None = None
        self._loop: _Accept | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the real port when 0 was configured."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self, runtime: Runtime) -> None:
        host, port = self.config.listen or ("127.0.0.1", 0)
        server_class = _Server6 if ":" in host else _Server
        try:
            server = server_class((host, port), _Handler)
        except OSError as exc:
            reason = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            raise ConfigError(self.source, "http.listen", reason) from None
        server.vitals = self.vitals
        self._server = server
        if not self.config.loopback:
            log.warning("health endpoint listens on %s:%d, reachable from the network", host, port)
        self._loop = _Accept(server)
        self._loop.start()
        log.info("health endpoint on http://%s:%d/healthz and /metrics", *self.address)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.stop()
        if self._server is not None:
            self._server.server_close()


class _Accept(Loop):
    """Sleeps in ``select`` until a connection or the stop signal (no periodic wake-ups)."""

    def __init__(self, server: _Server) -> None:
        super().__init__("http")
        self.server = server
        self._stop_r, self._stop_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(server.socket, selectors.EVENT_READ)
        self._selector.register(self._stop_r, selectors.EVENT_READ)

    def step(self) -> float | None:
        for key, _ in self._selector.select():
            if key.fileobj is self._stop_r:
                return 0.0
            self.server.handle_request()
        return 0.0

    def interrupt(self) -> None:
        try:
            self._stop_w.send(b"x")
        except OSError:
            pass

    def finish(self) -> None:
        self._selector.close()
        self._stop_r.close()
        self._stop_w.close()
