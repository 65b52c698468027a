"""The HTTP side of the local ingestion server: one request handler for both APIs.

One port serves ingestion (``/api/...``) and the Studio subset (``/v1/...``). It is a
``ThreadingHTTPServer`` (a thread per connection) speaking HTTP/1.1 with keep-alive,
because clients reuse connections and the agent's behaviour under reuse is what we test.

Connection hygiene is the subtle part: a response sent before the body is fully read
would leave body bytes that the next request on the connection parses as garbage. So
every refusal first drains the body (up to ``drain_limit`` = 2 x max_file_bytes + 1 MiB);
when that is not possible the response says ``Connection: close`` and the socket is
closed gracefully (half-close, then discard briefly) so the client still reads the
answer instead of a reset. A ``/files`` request whose Content-Length already exceeds
``drain_limit`` is answered 413 at once (we send one sample per request, so a body that
big can only hold an oversized file).
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from . import ingest
from .faults import FaultAction, FaultDecision, FaultInjector
from .multipart import (
    BodyError,
    BodyReader,
    ChunkedReader,
    LengthReader,
    MultipartParser,
    Part,
    PartTooLarge,
    TooManyParts,
    boundary_of,
    drain,
    spool,
)
from .store import SampleStore
from .studio import StudioApi

MAX_HEADER_BYTES = 16 * 1024
MAX_STUDIO_BODY = 1024 * 1024
LINGER_SECONDS = 1.0
IDLE_TIMEOUT_SECONDS = 120.0


class App(Protocol):
    """What the handler needs of the server it runs in."""

    keys: KeyPolicy
    faults: FaultInjector
    hmac_key: str | None
    duplicate_style: str
    max_file_bytes: int
    drain_limit: int
    stopping: threading.Event

    @property
    def store(self) -> SampleStore: ...
    @property
    def studio(self) -> StudioApi: ...
    def track(self, conn: socket.socket, *, add: bool) -> None: ...
    def log_line(self, line: str) -> None: ...


class KeyPolicy:
    """Which ``x-api-key`` values are accepted: a fixed set, or any ``ei_...`` when None."""

    def __init__(self, keys: Iterable[str] | None) -> None:
        self.keys = None if keys is None else frozenset(k for k in keys if k)

    def accepts(self, key: str | None) -> bool:
        if not key:
            return False
        if self.keys is None:
            return key.startswith("ei_") and len(key) > 3
        return key in self.keys


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    app: App

    def __init__(self, address: tuple[str, int], app: App) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (40 ms on Linux) and every keep-alive request pays it.
    disable_nagle_algorithm = True
    server: HTTPServer
    timeout = IDLE_TIMEOUT_SECONDS

    # --- connection bookkeeping ------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as separate writes; without NODELAY, Nagle plus the
        # client's delayed ACK adds ~40 ms to every response.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.app.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.app.track(self.connection, add=False)

    def parse_request(self) -> bool:
        """The stdlib limits lines and header count but not total size; add a 16 KiB cap."""
        if not super().parse_request():
            return False
        total = sum(len(k) + len(v) + 4 for k, v in self.headers.items())
        if total > MAX_HEADER_BYTES:
            self._json(431, {"success": False, "error": "Request headers too large"}, close=True)
            self._linger_close()
            self._log_line(time.monotonic())
            return False
        return True

    # --- logging ---------------------------------------------------------------------

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        del code, size  # our own line, written once the response is complete

    def log_message(self, format: str, *args: Any) -> None:
        self.server.app.log_line(f"{self.client_address[0]} {format % args}")

    def _log_line(self, started: float) -> None:
        ms = (time.monotonic() - started) * 1000
        status = self._status or "drop"
        self.server.app.log_line(
            f"{self.client_address[0]} {self.command} {self.path} {status} {ms:.1f}ms"
        )

    # --- responses -------------------------------------------------------------------

    _status: int = 0

    _lose_reply: bool = False

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        *,
        close: bool = False,
        extra: dict[str, str] | None = None,
    ) -> None:
        if self._lose_reply:  # the injected fault: done, but the answer never leaves
            self._lose_reply = False
            self.close_connection = True
            return
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _json(self, status: int, doc: dict[str, Any], *, close: bool = False) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json", close=close)

    def _text(self, status: int, text: str, **kwargs: Any) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8", **kwargs)

    def _linger_close(self) -> None:
        """Half-close and discard what the client still sends, so it sees our response
        rather than a TCP reset caused by unread data."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.1)
            deadline = time.monotonic() + LINGER_SECONDS
            while time.monotonic() < deadline and self.connection.recv(65536):
                pass

    # --- body ------------------------------------------------------------------------

    def _body(self) -> BodyReader:
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                raise BodyError(f"unsupported Transfer-Encoding {encoding!r}")
            return ChunkedReader(self.rfile)
        length = self.headers.get("Content-Length", "0").strip() or "0"
        if not length.isdigit():
            raise BodyError(f"bad Content-Length {length!r}")
        return LengthReader(self.rfile, int(length))

    def _refuse(self, reader: BodyReader, status: int, doc: dict[str, Any]) -> None:
        """Answer a refusal after draining the body, or with a graceful close."""
        if drain(reader, self.server.app.drain_limit):
            self._json(status, doc)
        else:
            self._json(status, doc, close=True)
            self._linger_close()

    # --- dispatch --------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        started = time.monotonic()
        self._status = 0
        app = self.server.app
        path, _, query = self.path.partition("?")
        try:
            reader = self._body()
        except BodyError as exc:
            self._json(400, {"success": False, "error": str(exc)}, close=True)
            self._linger_close()
            self._log_line(started)
            return
        try:
            if path.startswith("/api/"):
                self._ingestion(app, path, reader)
            elif path.startswith("/v1/"):
                self._studio(app, path, query, reader)
            else:
                self._refuse(reader, 404, {"success": False, "error": f"Not found: {path}"})
        except BodyError as exc:
            if not self._status:
                with contextlib.suppress(OSError):
                    self._json(400, {"success": False, "error": str(exc)}, close=True)
            self._linger_close()
        except (OSError, TimeoutError):
            self.close_connection = True  # the client went away mid-request
        except Exception:
            # A bug here must still produce an answer, and the traceback, not a silent hang-up.
            traceback.print_exc(file=sys.stderr)
            if not self._status:
                with contextlib.suppress(OSError):
                    self._json(500, {"success": False, "error": "Internal error"}, close=True)
            self._linger_close()
        finally:
            self._log_line(started)

    def _studio(self, app: App, path: str, query: str, reader: BodyReader) -> None:
        if not app.keys.accepts(self.headers.get("x-api-key")):
            self._refuse(reader, 401, {"success": False, "error": "Invalid API key"})
            return
        body = bytearray()
        while len(body) <= MAX_STUDIO_BODY and (chunk := reader.read(65536)):
            body += chunk
        if len(body) > MAX_STUDIO_BODY:
            self._refuse(reader, 413, {"success": False, "error": "Request body too large"})
            return
        status, doc = app.studio.handle(self.command, path, query, bytes(body))
        self._json(status, doc)

    def _ingestion(self, app: App, path: str, reader: BodyReader) -> None:
        parts = path.strip("/").split("/")
        if self.command != "POST" or len(parts) != 3 or parts[2] not in ("files", "data"):
            self._refuse(reader, 404, {"success": False, "error": f"Not found: {path}"})
            return
        with app.faults.request() as decision:
            self._upload(app, parts, reader, decision)

    def _upload(self, app: App, parts: list[str], reader: BodyReader,
                decision: FaultDecision) -> None:  # fmt: skip
        if decision.latency_seconds:
            app.stopping.wait(decision.latency_seconds)
        if decision.action is FaultAction.DROP:
            drain(reader, app.drain_limit)
            self.close_connection = True  # no response at all
            return
        if decision.action in (FaultAction.FAIL, FaultAction.OVERLOAD):
            drained = drain(reader, app.drain_limit)
            extra = {"Retry-After": decision.retry_after} if decision.retry_after else None
            self._text(
                decision.status,
                "Service overloaded, try again later\n"
                if decision.action is FaultAction.OVERLOAD
                else "Internal server error (injected fault)\n",
                extra=extra,
                close=not drained,
            )
            if not drained:
                self._linger_close()
            return
        self._lose_reply = decision.action is FaultAction.LOSE
        if not app.keys.accepts(self.headers.get("x-api-key")):
            self._refuse(reader, 401, {"success": False, "error": "Invalid API key"})
            return
        category, kind = parts[1], parts[2]
        headers = ingest.request_headers(list(self.headers.items()))
        try:
            ctx = ingest.context_from_headers(kind, category, headers)
            if kind == "files":
                self._files(app, ctx, reader)
            else:
                self._data(app, ctx, reader)
        except ingest.UploadRefused as exc:
            self._refuse(reader, exc.status, {"success": False, "error": exc.error})
        except (PartTooLarge, TooManyParts) as exc:
            status = 413 if isinstance(exc, PartTooLarge) else 400
            self._refuse(reader, status, {"success": False, "error": str(exc)})

    def _files(self, app: App, ctx: ingest.UploadContext, reader: BodyReader) -> None:
        boundary = boundary_of(self.headers.get("Content-Type", ""))
        if boundary is None:
            raise ingest.UploadRefused(
                400, "Content-Type must be multipart/form-data with a boundary"
            )
        length = self.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > app.drain_limit:
            # Hopeless: answer now rather than read gigabytes first, then close gracefully.
            error = str(PartTooLarge(None, app.max_file_bytes))
            self._json(413, {"success": False, "error": error}, close=True)
            self._linger_close()
            return
        parser = MultipartParser(
            reader,
            boundary,
            app.store.tmp_dir,
            max_part_bytes=app.max_file_bytes,
            max_parts=ingest.MAX_FILES_PER_REQUEST + 10,
        )
        parts = parser.parse()
        try:
            status, doc = ingest.store_files(
                app.store, ctx, parts, hmac_key=app.hmac_key, duplicate_style=app.duplicate_style
            )
        finally:
            for part in parts:
                part.discard()
        self._json(status, doc)

    def _data(self, app: App, ctx: ingest.UploadContext, reader: BodyReader) -> None:
        if "x-file-name" not in ctx.headers:
            raise ingest.UploadRefused(421, "Missing x-file-name header")
        part: Part = spool(reader, app.store.tmp_dir, app.max_file_bytes)
        try:
            name = ingest.store_data(app.store, ctx, part, hmac_key=app.hmac_key)
        finally:
            part.discard()
        self._text(200, name)
