"""HTTP/1.1 on plain sockets, for the one request the agent sends thousands of times.

Why not httpx for it: on a loopback bench httpx, httpcore and h11 spend about 0.4 ms of CPU
on a small upload, ten times what this module takes, and with many requests in flight
that CPU, held under one interpreter lock, is the daemon's ceiling. This module does only
what the ingestion upload needs and nothing it does not: one origin (``http`` or
``https``, no proxy: a proxied link keeps httpx), keep-alive connections reused when the
answer was read whole and the server keeps them open, TLS verified as ``remote.http``
verifies it, a timeout per connect and per read plus a deadline for the whole answer, and
answers read up to a limit. Framing follows RFC 9112: ``Content-Length``, ``chunked``, or
until the server closes; ``1xx`` answers are skipped; ``gzip``/``deflate`` bodies are
decoded within the limit.

Errors are ``WireError``s named like httpx's (``ConnectError``, ``ReadTimeout``,
``RemoteProtocolError``...), so a reason in ``status`` reads the same whichever path sent
the request.
"""

from __future__ import annotations

import io
import select
import socket
import ssl
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, cast

from .. import __version__

USER_AGENT = f"edge-uploader/{__version__}"
MAX_LINE_BYTES = 64 * 1024
"""A status line, header line or chunk-size line longer than this is not HTTP we trust."""
MAX_HEADERS = 100
CHUNK_BYTES = 64 * 1024
"""A streamed file is read and sent in pieces of this size."""

Piece = bytes | tuple[IO[bytes], int]
"""A piece of a request body: bytes, or an open file and exactly how many bytes of it."""


class WireError(Exception):
    """A request that got no usable answer. ``name`` is httpx's name for the same failure."""

    name = "NetworkError"
    timeout = False

    def __str__(self) -> str:
        return super().__str__() or self.name


class ConnectError(WireError):
    name = "ConnectError"


class ConnectTimeout(WireError):
    name = "ConnectTimeout"
    timeout = True


class WriteError(WireError):
    name = "WriteError"


class WriteTimeout(WireError):
    name = "WriteTimeout"
    timeout = True


class ReadError(WireError):
    name = "ReadError"


class ReadTimeout(WireError):
    name = "ReadTimeout"
    timeout = True


class AnswerTooSlow(ReadTimeout):
    """The answer's body did not arrive whole within its deadline."""


class SourceError(WireError):
    """The file being sent could not be read (``error``): the request is abandoned."""

    name = "SourceError"

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class RemoteProtocolError(WireError):
    name = "RemoteProtocolError"


class LocalProtocolError(WireError):
    """The request itself cannot be sent (a header value with a line break)."""

    name = "LocalProtocolError"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    """Names in lower case; a repeated header's values joined with ``", "``."""
    body: bytes
    cut: bool
    """The body was longer than the limit: only its start is in ``body``."""


class _Conn:
    __slots__ = ("rfile", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.rfile = cast(io.BufferedReader, sock.makefile("rb", buffering=CHUNK_BYTES))

    def close(self) -> None:
        try:
            self.rfile.close()
        finally:
            self.sock.close()

    def stale(self) -> bool:
        """An idle connection the server closed (or wrote to unasked) since its last
        answer: readable while idle means it cannot carry a new request."""
        poller = select.poll()
        try:
            poller.register(self.sock, select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True


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
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()
        self._closed = False

    # --- the pool ---------------------------------------------------------------------

    def _checkout(self) -> tuple[_Conn, bool]:
        """A connection and whether it was reused."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect(), False
            if not conn.stale():
                return conn, True
            conn.close()

    def _checkin(self, conn: _Conn) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def _connect(self) -> _Conn:
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
        except (OSError, ssl.SSLError, ValueError) as exc:
            sock.close()
            raise ConnectError(str(exc)) from None
        sock.settimeout(self.timeout)
        return _Conn(sock)

    def _context_for_tls(self) -> ssl.SSLContext:
        with self._lock:
            if self._context is None:
                self._context = self._tls() if self._tls else ssl.create_default_context()
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
        the answer, its body read up to ``limit`` bytes within ``within`` seconds."""
        head = self._head(path, headers, body)
        conn, reused = self._checkout()
        keep = False
        try:
            try:
                self._send(conn, head, body)
            except WriteError:
                # a server may answer (413, 401) and close before reading a whole body
                reply, keep = _read_reply(conn, limit, within, after_write_error=True)
                return reply
            try:
                reply, keep = _read_reply(conn, limit, within)
            except RemoteProtocolError as exc:
                if reused and exc.args and exc.args[0] == NO_ANSWER:
                    exc.args = (f"{NO_ANSWER} (on a reused connection)",)
                raise
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

    def _send(self, conn: _Conn, head: bytes, body: Sequence[Piece]) -> None:
        try:
            if self.on_body is None and all(isinstance(p, bytes) for p in body):
                conn.sock.sendall(head + b"".join(body))  # type: ignore[arg-type]
                return
            conn.sock.sendall(head)
            for piece in body:
                if isinstance(piece, bytes):
                    self._paced(conn.sock, piece)
                else:
                    self._stream(conn.sock, *piece)
        except TimeoutError:
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


NO_ANSWER = "Server disconnected without sending a response."


def _read_reply(
    conn: _Conn, limit: int, within: float | None, *, after_write_error: bool = False
) -> tuple[Reply, bool]:
    """The answer and whether the connection may carry another request."""
    try:
        while True:
            version, status = _status_line(conn, after_write_error)
            headers = _headers(conn)
            if 100 <= status < 200 and status != 101:
                continue  # 100 Continue, 103 Early Hints: the answer follows
            break
        body, cut, whole = _body(conn, status, headers, _Sink(limit, headers, within))
    except TimeoutError:
        raise ReadTimeout("timed out") from None
    except OSError as exc:
        raise ReadError(str(exc)) from None
    connection = headers.get("connection", "").lower()
    # HTTP/1.1 keeps a connection open unless it says close; HTTP/1.0 only if it asks
    persistent = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    keep = whole and not cut and persistent and not after_write_error
    return Reply(status, headers, body, cut), keep


def _line(conn: _Conn) -> bytes:
    line = conn.rfile.readline(MAX_LINE_BYTES + 1)
    if len(line) > MAX_LINE_BYTES:
        raise RemoteProtocolError(f"a line of the answer is over {MAX_LINE_BYTES} bytes")
    return line


def _status_line(conn: _Conn, after_write_error: bool) -> tuple[str, int]:
    try:
        line = _line(conn)
    except (ConnectionError, ssl.SSLError) as exc:
        if after_write_error:
            raise WriteError(str(exc)) from None
        raise
    if not line:
        if after_write_error:
            raise WriteError("the server closed the connection while the request was sent")
        raise RemoteProtocolError(NO_ANSWER)
    parts = line.rstrip(b"\r\n").split(b" ", 2)
    version = parts[0].decode("ascii", "replace")
    if len(parts) < 2 or version not in ("HTTP/1.1", "HTTP/1.0") or not _is_status(parts[1]):
        raise RemoteProtocolError(f"not an HTTP/1.1 status line: {line[:60]!r}")
    return version, int(parts[1])


def _is_status(text: bytes) -> bool:
    return len(text) == 3 and text.isdigit()


def _headers(conn: _Conn) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = _line(conn)
        if line in (b"\r\n", b"\n"):
            return headers
        if not line:
            raise RemoteProtocolError("the server closed the connection inside the headers")
        name, colon, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if not colon or not name or " " in name:
            raise RemoteProtocolError(f"not a header line: {line[:60]!r}")
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    raise RemoteProtocolError(f"the answer has more than {MAX_HEADERS} headers")


def _body(
    conn: _Conn, status: int, headers: Mapping[str, str], sink: _Sink
) -> tuple[bytes, bool, bool]:
    """The body (at most the sink's limit, after decoding), whether it was cut, and whether
    it was read whole by its framing (so the connection may be reused)."""
    coding = headers.get("transfer-encoding", "").lower()
    if status in (204, 304):
        return b"", False, True
    if coding:
        if coding.rsplit(",", 1)[-1].strip() != "chunked":
            return _until_close(conn, sink)
        return _chunked(conn, sink)
    if "content-length" in headers:
        values = {v.strip() for v in headers["content-length"].split(",")}
        if len(values) != 1 or not (text := values.pop()).isdigit():
            raise RemoteProtocolError(f"a bad Content-Length: {headers['content-length'][:40]!r}")
        return _sized(conn, int(text), sink)
    return _until_close(conn, sink)


def _sized(conn: _Conn, length: int, sink: _Sink) -> tuple[bytes, bool, bool]:
    left = length
    while left > 0:
        chunk = conn.rfile.read1(min(left, CHUNK_BYTES))
        if not chunk:
            raise RemoteProtocolError("the server closed the connection inside the answer")
        left -= len(chunk)
        if not sink.add(chunk):
            return sink.value(), True, False
    return sink.value(), sink.cut, not sink.cut


def _chunked(conn: _Conn, sink: _Sink) -> tuple[bytes, bool, bool]:
    while True:
        line = _line(conn)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise RemoteProtocolError(f"a bad chunk size: {line[:40]!r}") from None
        if size < 0:
            raise RemoteProtocolError(f"a bad chunk size: {line[:40]!r}")
        if size == 0:
            for _ in range(MAX_HEADERS + 1):  # trailers, up to the blank line
                if _line(conn) in (b"\r\n", b"\n", b""):
                    return sink.value(), sink.cut, not sink.cut
            raise RemoteProtocolError(f"the answer has more than {MAX_HEADERS} trailers")
        left = size
        while left > 0:
            chunk = conn.rfile.read1(min(left, CHUNK_BYTES))
            if not chunk:
                raise RemoteProtocolError("the server closed the connection inside the answer")
            left -= len(chunk)
            if not sink.add(chunk):
                return sink.value(), True, False
        if _line(conn) not in (b"\r\n", b"\n"):
            raise RemoteProtocolError("a chunk did not end with a line break")


def _until_close(conn: _Conn, sink: _Sink) -> tuple[bytes, bool, bool]:
    while chunk := conn.rfile.read1(CHUNK_BYTES):
        if not sink.add(chunk):
            return sink.value(), True, False
    return sink.value(), sink.cut, False


class _Sink:
    """Collects a body up to a limit (after decoding), whole within ``within`` seconds of
    its headers (the per-read timeout alone lets a byte a second go on for ever)."""

    def __init__(self, limit: int, headers: Mapping[str, str], within: float | None) -> None:
        self.limit = limit
        self.within = within
        self.deadline = None if within is None else time.monotonic() + within
        self.chunks: list[bytes] = []
        self.total = 0
        self.cut = False
        encoding = headers.get("content-encoding", "").strip().lower()
        self._decoder: Any = None
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()

    def add(self, chunk: bytes) -> bool:
        """Take ``chunk``; False once the limit is passed (stop reading)."""
        if self._decoder is not None:
            try:
                chunk = self._decoder.decompress(chunk, self.limit + 1 - self.total)
            except zlib.error as exc:
                raise RemoteProtocolError(f"the answer's encoding is broken: {exc}") from None
            if self._decoder.unconsumed_tail:
                self.cut = True
        self.chunks.append(chunk)
        self.total += len(chunk)
        if self.total > self.limit:
            self.cut = True
        if self.cut:
            return False
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise AnswerTooSlow(f"the answer did not arrive whole within {self.within:g} s")
        return True

    def value(self) -> bytes:
        return b"".join(self.chunks)[: self.limit]
