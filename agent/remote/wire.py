"""HTTP/1.1 on plain sockets, for the one request the agent sends thousands of times.

Why not httpx for it: on a loopback bench httpx, httpcore and h11 spend about 0.4 ms of CPU
on a small upload, ten times what this module takes, and with many requests in flight
that CPU, held under one interpreter lock, is the daemon's ceiling. This module does only
what the ingestion upload needs and nothing it does not: one origin (``http`` or
``https``, no proxy: a proxied link keeps httpx), keep-alive connections reused when the
answer was read whole and the server keeps them open, TLS verified as ``remote.http``
verifies it, a timeout per connect and per read plus a deadline for the whole answer, and
answers read up to a limit (``framing`` reads them). A small request goes in one write; on
a plain socket the timeouts are the kernel's (``SO_RCVTIMEO``/``SO_SNDTIMEO``), so a send
or a receive is one system call, not a poll and the call: each is a moment the worker
threads hand the interpreter lock to one another.

Errors are ``WireError``s named like httpx's (``ConnectError``, ``ReadTimeout``,
``RemoteProtocolError``...), so a reason in ``status`` reads the same whichever path sent
the request.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING

from .. import __version__
from .framing import AnswerTooSlow as AnswerTooSlow
from .framing import Conn, Reply, read_reply
from .framing import ConnectError as ConnectError
from .framing import ConnectTimeout as ConnectTimeout
from .framing import LocalProtocolError as LocalProtocolError
from .framing import ReadError as ReadError
from .framing import ReadTimeout as ReadTimeout
from .framing import RemoteProtocolError as RemoteProtocolError
from .framing import SourceError as SourceError
from .framing import WireError as WireError
from .framing import WriteError as WriteError
from .framing import WriteTimeout as WriteTimeout

if TYPE_CHECKING:
    import ssl

USER_AGENT = f"edge-uploader/{__version__}"
CHUNK_BYTES = 64 * 1024
"""A streamed file is read and sent in pieces of this size."""

Piece = bytes | tuple[IO[bytes], int]
"""A piece of a request body: bytes, or an open file and exactly how many bytes of it."""
CHECK_IDLE_AFTER_SECONDS = 1.0
"""A connection idle this long is checked before it is reused (has the server closed it?).
Servers close idle keep-alive connections after 2 s at the soonest (gunicorn; Node.js and
uvicorn 5 s, nginx 75 s); one back sooner goes as it is, without a system call."""


class Wire:
    """A pool of keep-alive connections to one origin, shared by the worker threads."""

    def __init__(
        self, url: str, *, timeout: float, connect_timeout: float,
        tls: Callable[[], ssl.SSLContext] | None = None, max_idle: int = 32,
        on_body: Callable[[int], None] | None = None, piece_bytes: int = CHUNK_BYTES,
    ) -> None:  # fmt: skip
        """``tls``: the context an ``https`` origin is verified with, made on first use;
        ``on_body(n)``: called before each ``n`` bytes of a body go, in pieces of at most
        ``piece_bytes`` (the bandwidth cap waits in it, the health check counts it as
        progress)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        shown = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.https else 80
        self.authority = shown if self.port == default else f"{shown}:{self.port}"
        self.base_path = parts.path.rstrip("/")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.on_body = on_body
        self.piece_bytes = piece_bytes
        self._tls = tls
        self._context: ssl.SSLContext | None = None
        self._idle: list[Conn] = []
        self._lock = threading.Lock()
        self._closed = False

    # --- the pool ---------------------------------------------------------------------

    def _checkout(self) -> tuple[Conn, bool]:
        """A connection and whether it was reused."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect(), False
            if time.monotonic() - conn.used_at < CHECK_IDLE_AFTER_SECONDS or not _stale(conn):
                return conn, True
            conn.close()

    def _checkin(self, conn: Conn) -> None:
        conn.used_at = time.monotonic()
        with self._lock:
            if not self._closed and len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def _connect(self) -> Conn:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except TimeoutError as exc:
            raise ConnectTimeout(str(exc) or "timed out") from None
        except OSError as exc:
            raise ConnectError(str(exc)) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.https:
                sock = self._context_for_tls().wrap_socket(sock, server_hostname=self.host)
        except TimeoutError as exc:
            sock.close()
            raise ConnectTimeout(str(exc) or "timed out") from None
        except (OSError, ValueError) as exc:  # an ssl.SSLError is an OSError
            sock.close()
            raise ConnectError(str(exc)) from None
        if self.https:
            sock.settimeout(self.timeout)
        else:  # the kernel's timeouts: one system call per send or receive, not a poll too
            sock.settimeout(None)
            seconds = int(self.timeout)
            tv = struct.pack("ll", seconds, int((self.timeout - seconds) * 1e6))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        return Conn(sock)

    def _context_for_tls(self) -> ssl.SSLContext:
        with self._lock:
            if self._context is None:
                if self._tls is None:
                    import ssl  # only a TLS link pays for the module (a few ms of a start)

                    self._context = ssl.create_default_context()
                else:
                    self._context = self._tls()
            return self._context

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # --- one exchange -----------------------------------------------------------------

    def post(
        self, path: str, headers: Sequence[tuple[str, str]], body: Sequence[Piece], *,
        limit: int, within: float | None = None,
    ) -> Reply:  # fmt: skip
        """POST ``body`` (its pieces in order) to ``path`` under the origin's base path;
        the answer, its body read up to ``limit`` bytes within ``within`` seconds.

        A reused connection that the server turns out to have closed while it was idle
        (nothing of an answer, the connection closed or reset) is replaced by a new one
        and the request sent again, once: the server did not read it. Anything else is
        the caller's to retry."""
        head = self._head(path, headers, body)
        starts = [(p[0], p[0].tell()) for p in body if not isinstance(p, bytes)]
        conn, reused = self._checkout()
        try:
            return self._exchange(conn, head, body, limit, within)
        except WireError as exc:
            if not (reused and exc.unanswered):
                raise
        for handle, at in starts:
            handle.seek(at)
        return self._exchange(self._connect(), head, body, limit, within)

    def _exchange(
        self, conn: Conn, head: bytes, body: Sequence[Piece], limit: int, within: float | None
    ) -> Reply:
        keep = False
        try:
            try:
                self._send(conn, head, body)
            except WriteError:
                # a server may answer (413, 401) and close before reading a whole body
                reply, keep = read_reply(conn, limit, within, after_write_error=True)
                return reply
            reply, keep = read_reply(conn, limit, within)
            return reply
        finally:
            if keep:
                self._checkin(conn)
            else:
                conn.close()

    def _head(self, path: str, headers: Sequence[tuple[str, str]], body: Sequence[Piece]) -> bytes:
        length = sum(len(p) if isinstance(p, bytes) else p[1] for p in body)
        lines = [f"POST {self.base_path}{path} HTTP/1.1", f"Host: {self.authority}"]
        for name, value in headers:
            if "\r" in value or "\n" in value or "\0" in value:
                raise LocalProtocolError(f"the {name} header holds a line break or NUL")
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {length}")
        try:
            return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
        except UnicodeEncodeError:
            raise LocalProtocolError("a header holds a character that is not ASCII") from None

    def _send(self, conn: Conn, head: bytes, body: Sequence[Piece]) -> None:
        sock = conn.sock
        try:
            if all(isinstance(p, bytes) for p in body):
                data = head + b"".join(body)  # type: ignore[arg-type]
                if self.on_body is None or len(data) - len(head) <= self.piece_bytes:
                    if self.on_body is not None:
                        self.on_body(len(data) - len(head))
                    sock.sendall(data)  # one write for a small request
                    return
            sock.sendall(head)
            for piece in body:
                if isinstance(piece, bytes):
                    self._paced(sock, piece)
                else:
                    self._stream(sock, *piece)
        except (TimeoutError, BlockingIOError):  # BlockingIOError: SO_SNDTIMEO expired
            raise WriteTimeout("timed out") from None
        except OSError as exc:
            raise WriteError(str(exc)) from None

    def _paced(self, sock: socket.socket, data: bytes) -> None:
        if self.on_body is None:
            sock.sendall(data)
            return
        view = memoryview(data)
        for at in range(0, len(data), self.piece_bytes):
            piece = view[at : at + self.piece_bytes]
            self.on_body(len(piece))
            sock.sendall(piece)

    def _stream(self, sock: socket.socket, handle: IO[bytes], size: int) -> None:
        buf = bytearray(min(self.piece_bytes, max(size, 1)))
        view = memoryview(buf)
        left = size
        while left > 0:
            try:
                n = handle.readinto(view[: min(left, len(buf))])  # type: ignore[attr-defined]
            except OSError as exc:
                raise SourceError(exc) from None
            if not n:
                raise LocalProtocolError("the file got shorter while it was sent")
            if self.on_body is not None:
                self.on_body(n)
            sock.sendall(view[:n])
            left -= n


def _stale(conn: Conn) -> bool:
    """An idle connection the server closed (or wrote to unasked) since its last answer:
    readable while idle means it cannot carry a new request."""
    if conn.buf:
        return True
    poller = select.poll()
    try:
        poller.register(conn.sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True
