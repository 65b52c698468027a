"""The optional local health endpoint: ``[http] listen = "127.0.0.1:9108"``.

- ``GET /healthz``: 200 with ``{"status": "ok"}`` when healthy, 503 with
  ``{"status": "unhealthy", "reasons": [...]}`` otherwise (see ``daemon.health``);
- ``GET /metrics``: Prometheus text format (see ``daemon.metrics``);
- ``GET /``: the status page for the technician on site (see ``daemon.statuspage``), which
  reads ``GET /status.json``: the ``status --json`` document (``store.status.gather``).

Read-only: any other method is 405. It listens on loopback unless the config names
another address, and it never shows a secret (there is none to show: it reads counters,
the queue and free space; file names and the service's answers are shown). The
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
from ..errors import ConfigError, QueueError
from ..loop import Loop
from ..store.status import gather
from . import metrics, statuspage
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
                self._healthz()
            elif path == "/metrics":
                self._send(200, metrics.CONTENT_TYPE, metrics.render(self.server.vitals).encode())
            elif path == "/":
                self._send(
                    200,
                    "text/html; charset=utf-8",
                    statuspage.PAGE,
                    {"Content-Security-Policy": statuspage.CONTENT_SECURITY_POLICY},
                )
            elif path == "/status.json":
                self._status()
            else:
                self._send(404, "text/plain", b"not found: try /, /healthz or /metrics\n")
        except Exception:
            log.exception("health endpoint failed on %s", path)
            self._send(500, "text/plain", b"internal error\n")

    def _healthz(self) -> None:
        health = assess(self.server.vitals)
        doc: dict[str, object] = {"status": "ok" if health.healthy else "unhealthy"}
        if health.reasons:
            doc["reasons"] = health.reasons
        self._json(200 if health.healthy else 503, doc)

    def _status(self) -> None:
        """The ``status --json`` document of the running daemon's queue (503 while it
        starts or reloads, or when the queue cannot be read: the page says so)."""
        vitals = self.server.vitals
        queue = vitals.queue
        if queue is None:
            self._json(503, {"error": "starting or reloading"})
            return
        try:
            doc = gather(queue, link=vitals.config.ingestion.link)
        except QueueError as exc:
            self._json(503, {"error": str(exc)})
            return
        self._json(200, doc)

    def _json(self, status: int, doc: dict[str, object]) -> None:
        body = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
        self._send(status, "application/json", body)

    def _send(self, status: int, content_type: str, body: bytes,
              headers: dict[str, str] | None = None) -> None:  # fmt: skip
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def _read_only(self) -> None:
        """Nothing here changes anything: every method but GET and HEAD is refused."""
        self.close_connection = True
        self._send(405, "text/plain", b"read-only: only GET and HEAD\n", {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _read_only

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class HealthServer:
    """A component: serves ``/healthz``, ``/metrics`` and the status page while the daemon
    runs. It reads the daemon only through ``Vitals``."""

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
        log.info("status page on http://%s:%d/ (and /healthz, /metrics)", *self.address)

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
