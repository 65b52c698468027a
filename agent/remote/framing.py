"""Reading one HTTP/1.1 answer off a connection, for ``Wire``: the errors it can end in,
the connection's own receive buffer, and the framing of RFC 9112.

The buffer is the connection's, not a ``BufferedReader``'s: a small answer usually comes
in one ``recv``, and its status line and headers are split in one pass instead of a
``readline`` each; and on a plain socket the read timeout is the kernel's
(``SO_RCVTIMEO``), which a ``BufferedReader`` would report as a closed connection.
Limits: the status line and headers within ``MAX_HEAD_BYTES`` and ``MAX_HEADERS``, a
chunk-size line within ``MAX_LINE_BYTES``, the body within the caller's limit (after
decoding ``gzip``/``deflate``) and its deadline. A body ends by ``Content-Length``, by
``chunked``, or when the server closes; ``1xx`` answers are skipped.
"""

from __future__ import annotations

import re
import socket
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_HEAD_BYTES = 64 * 1024
MAX_LINE_BYTES = 64 * 1024
MAX_HEADERS = 100
RECV_BYTES = 64 * 1024
NO_ANSWER = "Server disconnected without sending a response."
_HEAD_END = re.compile(rb"\r?\n\r?\n")


class WireError(Exception):
    """A request that got no usable answer. ``name`` is httpx's name for the same failure."""

    name = "NetworkError"
    timeout = False
    unanswered = False
    """Nothing of an answer came and the server closed or reset the connection: on a
    reused connection, the server had closed it while it was idle."""

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


class Conn:
    """One connection and what was received on it but not yet read."""

    __slots__ = ("buf", "sock", "used_at")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.used_at = time.monotonic()

    def fill(self) -> bool:
        """Receive more; False when the server has closed. A plain socket's timeout is
        the kernel's: its expiry is ``BlockingIOError``, made a ``TimeoutError`` here."""
        try:
            data = self.sock.recv(RECV_BYTES)
        except BlockingIOError:
            raise TimeoutError("timed out") from None
        if not data:
            return False
        self.buf = self.buf + data if self.buf else data
        return True

    def some(self, n: int) -> bytes:
        """Up to ``n`` bytes, what is buffered first; b"" when the server has closed."""
        if not self.buf and not self.fill():
            return b""
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def line(self) -> bytes:
        """One line with its end; at a close, what is left (b"" if nothing)."""
        while (i := self.buf.find(b"\n")) < 0:
            if len(self.buf) > MAX_LINE_BYTES:
                raise RemoteProtocolError(f"a line of the answer is over {MAX_LINE_BYTES} bytes")
            if not self.fill():
                line, self.buf = self.buf, b""
                return line
        line, self.buf = self.buf[: i + 1], self.buf[i + 1 :]
        return line

    def close(self) -> None:
        self.sock.close()


def read_reply(
    conn: Conn, limit: int, within: float | None, *, after_write_error: bool = False
) -> tuple[Reply, bool]:
    """The answer and whether the connection may carry another request. ``within``: the
    body must arrive whole in that many seconds after the headers."""
    try:
        while True:
            version, status, headers = _head(conn, after_write_error)
            if not 100 <= status < 200 or status == 101:
                break  # 100 Continue, 103 Early Hints: the answer follows
        body, cut, whole = _body(conn, status, headers, _Sink(limit, headers, within))
    except TimeoutError:
        raise ReadTimeout("timed out") from None
    except OSError as exc:
        raise ReadError(str(exc)) from None
    connection = headers.get("connection", "").lower()
    # HTTP/1.1 keeps a connection open unless it says close; HTTP/1.0 only if it asks
    persistent = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    keep = whole and not cut and persistent and not after_write_error and not conn.buf
    return Reply(status, headers, body, cut), keep


def _head(conn: Conn, after_write_error: bool) -> tuple[str, int, dict[str, str]]:
    """The status line and headers, split from the buffer in one pass."""
    while True:
        conn.buf = conn.buf.lstrip(b"\r\n")  # a stray line break before an answer is allowed
        end = _HEAD_END.search(conn.buf)
        if (end.start() if end else len(conn.buf)) > MAX_HEAD_BYTES:
            raise RemoteProtocolError(f"the answer's headers are over {MAX_HEAD_BYTES} bytes")
        if end is not None:
            head, conn.buf = conn.buf[: end.start()], conn.buf[end.end() :]
            break
        try:
            more = conn.fill()
        except ConnectionError as exc:
            if conn.buf:
                raise
            raise _unanswered(WriteError if after_write_error else ReadError, str(exc)) from None
        if more:
            continue
        if conn.buf:
            raise RemoteProtocolError("the server closed the connection inside the headers")
        if after_write_error:
            raise _unanswered(WriteError, "the server closed the connection while the request"
                              " was sent")  # fmt: skip
        raise _unanswered(RemoteProtocolError, NO_ANSWER)
    lines = head.split(b"\n")
    first = lines[0].rstrip(b"\r")
    parts = first.split(b" ", 2)
    version = parts[0].decode("ascii", "replace")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(parts) < 2 or not _is_status(parts[1]):
        raise RemoteProtocolError(f"not an HTTP/1.1 status line: {first[:60]!r}")
    if len(lines) > MAX_HEADERS + 1:
        raise RemoteProtocolError(f"the answer has more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        name, colon, value = raw.decode("latin-1").partition(":")
        name = name.lower()
        if not colon or not name or name != name.strip() or " " in name:
            raise RemoteProtocolError(f"not a header line: {raw[:60]!r}")
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return version, int(parts[1]), headers


def _unanswered(kind: type[WireError], text: str) -> WireError:
    exc = kind(text)
    exc.unanswered = True
    return exc


def _is_status(text: bytes) -> bool:
    return len(text) == 3 and text.isdigit()


def _body(
    conn: Conn, status: int, headers: Mapping[str, str], sink: _Sink
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


def _sized(conn: Conn, length: int, sink: _Sink) -> tuple[bytes, bool, bool]:
    left = length
    while left > 0:
        chunk = conn.some(min(left, RECV_BYTES))
        if not chunk:
            raise RemoteProtocolError("the server closed the connection inside the answer")
        left -= len(chunk)
        if not sink.add(chunk):
            return sink.value(), True, False
    return sink.value(), sink.cut, not sink.cut


def _chunked(conn: Conn, sink: _Sink) -> tuple[bytes, bool, bool]:
    while True:
        line = conn.line()
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise RemoteProtocolError(f"a bad chunk size: {line[:40]!r}") from None
        if size < 0:
            raise RemoteProtocolError(f"a bad chunk size: {line[:40]!r}")
        if size == 0:
            for _ in range(MAX_HEADERS + 1):  # trailers, up to the blank line
                if (trailer := conn.line()) in (b"\r\n", b"\n"):
                    return sink.value(), sink.cut, not sink.cut
                if not trailer:  # closed after the last chunk: whole, but not reusable
                    return sink.value(), sink.cut, False
            raise RemoteProtocolError(f"the answer has more than {MAX_HEADERS} trailers")
        left = size
        while left > 0:
            chunk = conn.some(min(left, RECV_BYTES))
            if not chunk:
                raise RemoteProtocolError("the server closed the connection inside the answer")
            left -= len(chunk)
            if not sink.add(chunk):
                return sink.value(), True, False
        if conn.line() not in (b"\r\n", b"\n"):
            raise RemoteProtocolError("a chunk did not end with a line break")


def _until_close(conn: Conn, sink: _Sink) -> tuple[bytes, bool, bool]:
    while chunk := conn.some(RECV_BYTES):
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
        return self.chunks[0][: self.limit] if len(self.chunks) == 1 else (
            b"".join(self.chunks)[: self.limit])  # fmt: skip
