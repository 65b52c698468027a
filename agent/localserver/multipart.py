"""Streaming request bodies and a streaming multipart/form-data parser.

Why our own parser: an upload can be 100 MB, so a part must go straight to a temp file
while it is hashed, and the parser must tolerate what real clients send, e.g. the Python
SDK labels a file part ``multipart/form-data`` with no boundary (``cgi`` chokes on that).
Only the outer ``Content-Type`` boundary matters here; part types are recorded, not obeyed.

Body readers give the parser one interface, ``read(n) -> bytes`` (``b""`` at the end),
over a Content-Length body or a ``Transfer-Encoding: chunked`` one.
"""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote

READ_SIZE = 64 * 1024
MAX_PART_HEADER_BYTES = 16 * 1024
MAX_CHUNK_LINE = 1024


class BodyError(Exception):
    """The request body is malformed; the connection cannot be trusted afterwards."""


class PartTooLarge(Exception):
    """A part exceeded the per-file limit; the caller drains the rest and answers 413."""

    def __init__(self, filename: str | None, limit: int) -> None:
        self.filename = filename
        self.limit = limit
        what = f"file {filename!r}" if filename else "upload"
        super().__init__(f"File too large: {what} exceeds the limit of {limit} bytes")


class TooManyParts(Exception):
    """More parts than the per-request limit."""


class BodyReader(Protocol):
    """What the parser reads from."""

    def read(self, n: int) -> bytes: ...


class LengthReader:
    """A body of known Content-Length; never reads past it (keep-alive depends on that)."""

    def __init__(self, stream: io.BufferedIOBase, length: int) -> None:
        self._stream = stream
        self.remaining = length

    def read(self, n: int) -> bytes:
        if self.remaining <= 0:
            return b""
        data = self._stream.read(min(n, self.remaining))
        if not data:
            raise BodyError("connection closed before the body was complete")
        self.remaining -= len(data)
        return data


class ChunkedReader:
    """A ``Transfer-Encoding: chunked`` body; consumes the trailer so the next request parses."""

    def __init__(self, stream: io.BufferedIOBase) -> None:
        self._stream = stream
        self._left = 0
        self._done = False

    def _line(self) -> bytes:
        line = self._stream.readline(MAX_CHUNK_LINE + 1)
        if len(line) > MAX_CHUNK_LINE:
            raise BodyError("chunk header line too long")
        if not line:
            raise BodyError("connection closed inside a chunked body")
        return line

    def read(self, n: int) -> bytes:
        if self._done:
            return b""
        if self._left == 0:
            size_text = self._line().split(b";", 1)[0].strip()
            try:
                self._left = int(size_text, 16)
            except ValueError:
                raise BodyError(f"bad chunk size {size_text!r}") from None
            if self._left < 0:
                raise BodyError("negative chunk size")
            if self._left == 0:
                while self._line() not in (b"\r\n", b"\n"):
                    pass  # trailer fields: read and ignore
                self._done = True
                return b""
        data = self._stream.read(min(n, self._left))
        if not data:
            raise BodyError("connection closed inside a chunk")
        self._left -= len(data)
        if self._left == 0 and self._line() not in (b"\r\n", b"\n"):
            raise BodyError("chunk not followed by CRLF")
        return data


def drain(reader: BodyReader, limit: int) -> bool:
    """Read and discard up to ``limit`` bytes; True when the body ended within the limit."""
    seen = 0
    while seen <= limit:
        data = reader.read(READ_SIZE)
        if not data:
            return True
        seen += len(data)
    return False


@dataclass
class Part:
    """One multipart part, its bytes already in ``path`` (a temp file the caller owns)."""

    name: str | None
    filename: str | None
    content_type: str | None
    headers: dict[str, str]
    path: Path
    size: int = 0
    sha256: str = ""

    def discard(self) -> None:
        """Remove the temp file (idempotent)."""
        self.path.unlink(missing_ok=True)


def boundary_of(content_type: str) -> str | None:
    """The boundary of a ``multipart/form-data`` Content-Type, or None."""
    kind, params = _split_header_value(content_type)
    if kind != "multipart/form-data":
        return None
    boundary = params.get("boundary")
    if not boundary or len(boundary) > 200:
        return None
    return boundary


_PARAM_RE = re.compile(
    r';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+\*?)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', re.DOTALL
)
_HTML5_ESCAPE_RE = re.compile(r"%(22|0[0-9A-Fa-f]|1[0-9A-Fa-f])")


def _split_header_value(value: str) -> tuple[str, dict[str, str]]:
    """Split ``type; a=1; b="x"`` into a lower-case main value and its parameters."""
    head, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM_RE.finditer(";" + rest):
        key, raw = match.group(1).lower(), match.group(2).strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[key] = raw
    return head.strip().lower(), params


def _decode_filename(params: dict[str, str]) -> str | None:
    """Filename from ``filename*=UTF-8''..`` (RFC 5987) or ``filename=`` (HTML5 escapes)."""
    star = params.get("filename*")
    if star and "''" in star:
        charset, _, encoded = star.partition("''")
        try:
            return unquote(encoded, encoding=charset or "utf-8", errors="strict")
        except (LookupError, UnicodeDecodeError):
            pass
    plain = params.get("filename")
    if plain is None:
        return None
    # Browsers, undici and httpx escape '"' and control characters as %XX.
    return _HTML5_ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), plain)


def _decode_header_bytes(raw: bytes) -> str:
    """Part headers are UTF-8 in practice (undici, httpx, requests); fall back to Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class MultipartParser:
    """Parses a multipart body from a reader into parts written under ``tmp_dir``.

    Each part's bytes are streamed to a temp file and hashed as they arrive; at most one
    read buffer plus a boundary's worth of bytes is held in memory.
    """

    def __init__(
        self,
        reader: BodyReader,
        boundary: str,
        tmp_dir: Path,
        *,
        max_part_bytes: int,
        max_parts: int,
    ) -> None:
        self._reader = reader
        self._delim = b"\r\n--" + boundary.encode("latin-1")
        self._tmp_dir = tmp_dir
        self._max_part_bytes = max_part_bytes
        self._max_parts = max_parts
        # Pretend a CRLF came first so the opening boundary looks like every other one.
        self._buf = bytearray(b"\r\n")
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        data = self._reader.read(READ_SIZE)
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def _skip_preamble(self) -> None:
        while True:
            at = self._buf.find(self._delim)
            if at >= 0:
                del self._buf[: at + len(self._delim)]
                return
            keep = len(self._delim) - 1
            if len(self._buf) > keep:
                del self._buf[:-keep]
            if not self._fill():
                raise BodyError("multipart body has no opening boundary")

    def _after_boundary(self) -> bool:
        """Consume what follows a boundary; False when it was the closing one."""
        while len(self._buf) < 2 and self._fill():
            pass
        if self._buf[:2] == b"--":
            return False
        while True:  # optional transport padding, then CRLF
            end = self._buf.find(b"\r\n")
            if end >= 0:
                if self._buf[:end].strip(b" \t"):
                    raise BodyError("garbage after multipart boundary")
                del self._buf[: end + 2]
                return True
            if len(self._buf) > 1024 or not self._fill():
                raise BodyError("multipart boundary not followed by CRLF")

    def _read_part_headers(self) -> dict[str, str]:
        while len(self._buf) < 2 and self._fill():
            pass
        if self._buf.startswith(b"\r\n"):  # a part with no headers at all
            del self._buf[:2]
            return {}
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                raw = bytes(self._buf[:end])
                del self._buf[: end + 4]
                break
            if len(self._buf) > MAX_PART_HEADER_BYTES:
                raise BodyError("multipart part headers too large")
            if not self._fill():
                raise BodyError("body ended inside part headers")
        headers: dict[str, str] = {}
        for line in _decode_header_bytes(raw).split("\r\n"):
            name, sep, value = line.partition(":")
            if not sep:
                raise BodyError(f"bad part header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        return headers

    def _stream_body(self, out: BinaryIO, part: Part) -> None:
        """Copy part bytes up to the next delimiter into ``out``, hashing them on the way."""
        digest = hashlib.sha256()
        keep = len(self._delim) - 1
        while True:
            at = self._buf.find(self._delim)
            if at >= 0:
                chunk, cut = self._buf[:at], at + len(self._delim)
            else:
                cut = max(0, len(self._buf) - keep)
                chunk = self._buf[:cut]
            if chunk:
                part.size += len(chunk)
                _check_size(part, self._max_part_bytes)
                digest.update(chunk)
                out.write(chunk)
            del self._buf[:cut]
            if at >= 0:
                part.sha256 = digest.hexdigest()
                return
            if not self._fill():
                raise BodyError("body ended inside a part (no closing boundary)")

    def _check_count(self, count: int) -> None:
        if count >= self._max_parts:
            raise TooManyParts(f"more than {self._max_parts} parts in one request")

    def parse(self) -> list[Part]:
        """All parts; on any error every temp file already written is removed."""
        parts: list[Part] = []
        try:
            self._skip_preamble()
            while self._after_boundary():
                self._check_count(len(parts))
                headers = self._read_part_headers()
                _, disposition = _split_header_value(headers.get("content-disposition", ""))
                part = Part(
                    name=disposition.get("name"),
                    filename=_decode_filename(disposition),
                    content_type=headers.get("content-type"),
                    headers=headers,
                    path=self._tmp_dir / f"upload-{uuid.uuid4().hex}.part",
                )
                parts.append(part)
                with open(part.path, "wb") as out:
                    self._stream_body(out, part)
            # Anything after the closing boundary (epilogue) is read and ignored.
            while self._fill():
                self._buf.clear()
        except BaseException:
            for part in parts:
                part.discard()
            raise
        return parts


def make_tmp_dir(data_dir: Path) -> Path:
    """The temp directory lives in the data dir so the final rename stays on one file system."""
    tmp = data_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    for leftover in tmp.glob("upload-*.part"):
        # A crash mid-upload leaves these behind; no other process owns them.
        leftover.unlink(missing_ok=True)
    return tmp


def spool(reader: BodyReader, tmp_dir: Path, max_bytes: int) -> Part:
    """A whole raw body (legacy ``/data``) to one temp file, hashed, size-capped."""
    part = Part(
        name=None,
        filename=None,
        content_type=None,
        headers={},
        path=tmp_dir / f"upload-{uuid.uuid4().hex}.part",
    )
    digest = hashlib.sha256()
    try:
        with open(part.path, "wb") as out:
            while chunk := reader.read(READ_SIZE):
                part.size += len(chunk)
                _check_size(part, max_bytes)
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        part.discard()
        raise
    part.sha256 = digest.hexdigest()
    return part


def _check_size(part: Part, max_bytes: int) -> None:
    if part.size > max_bytes:
        raise PartTooLarge(part.filename, max_bytes)
