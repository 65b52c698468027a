"""The uploader: the only code that talks to the ingestion service.

One ``httpx.Client`` with keep-alive, shared by the worker threads; bodies are streamed
from the file, never read whole into memory (except files of at most ``SMALL_BODY_BYTES``,
sent in one write). ``classify`` maps what came back to an ``Outcome`` (the vocabulary of
``errors``), through the status table both services share (``remote.http``):

==================================  ===============  ==========================================
what came back                      outcome          queue
==================================  ===============  ==========================================
200, success, every file success    DELIVERED        delivered, sampleId kept
"An item with this hash already..." DUPLICATE        delivered (it already is at the service)
connect/read errors, timeouts,      RETRY            pending again after backoff (Retry-After
408, 425, 429, 5xx, 200 w/o JSON                     honoured)
401, 403, 3xx                       PAUSE            pending again; uploads pause: a wrong key or
                                                     URL must not burn the queue into dead letters
400, 404, 413, 421, 422, per-file   DEAD             dead, with the service's reason
errors, other 4xx
==================================  ===============  ==========================================

Wire format (see the project's ingestion reference): ``POST {url}/api/{category}/files``,
multipart with one part named ``data`` carrying the file under its own name; headers
``x-api-key``, ``x-label`` (percent-encoded like JavaScript's encodeURIComponent) or
``x-no-label: 1`` with an empty ``x-label``, ``x-disallow-duplicates: 1``, and
``x-metadata`` (compact ASCII JSON of strings).
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx

from ..clock import RETRY_AFTER_CAP_SECONDS, Clock, system_clock
from ..config import Config
from ..errors import Outcome, PermanentError, UrlError
from ..metadata import encode_metadata
from ..secrets import Secret
from .http import (
    AnswerTooSlow,
    clean,
    error_text,
    make_client,
    make_transport,
    parse_json,
    parse_retry_after,
    proxy_for,
    read_limited,
    status_error,
    transport_reason,
)
from .throttle import Throttle, pace_bodies

__all__ = ["Answer", "Outcome", "Sample", "Uploader", "build_uploader", "classify",
           "content_type", "encode_label", "make_client", "parse_retry_after"]  # fmt: skip

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 1024 * 1024
"""Answers are read up to this size; a longer 200 answer is not trusted (retried)."""
MAX_SAMPLE_ID = 2**63 - 1
"""A sample id is a positive 64-bit integer (what the queue's SQLite column holds)."""
MAX_FILE_BYTES = 100_000_000
"""The ingestion service's documented limit per file (100 MB)."""
SMALL_BODY_BYTES = 64 * 1024
"""Files up to this size are read once and sent in one write (hash and body from the same
bytes); larger files are streamed from disk, also inside a body shared with other files,
so the bytes held stay under ``max_request_bytes`` per request in flight.
Sending a small multipart body piece by piece costs a system call per piece on both ends:
about 15% of the CPU per file on a loopback bench."""
DUPLICATE_MARK = "already exists"

CONTENT_TYPES = {
    ".wav": "audio/wav", ".cbor": "application/cbor", ".json": "application/json",
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".csv": "text/csv",
    ".txt": "text/plain", ".mp4": "video/mp4", ".avi": "video/avi",
    ".parquet": "application/vnd.apache.parquet",
}  # fmt: skip


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    reason: str = ""
    sample_id: int | None = None
    retry_after: float | None = None
    status: int | None = None
    sha256: str | None = None
    bytes_sent: int = 0
    timed_out: bool = False
    alone: bool = False
    """The request held several files and was refused as a whole (which file the refusal
    is about is unknown): send this file again in a request of its own."""


@dataclass(frozen=True)
class Sample:
    """One upload: the file and how to tag it on the wire."""

    path: str | Path
    """The queue's path text as it is (no ``Path`` object per file on the hot path)."""
    file_name: str
    category: str
    label: str | None
    metadata: Mapping[str, str]
    allow_duplicates: bool = False
    extra_parts: tuple[tuple[str, bytes, str], ...] = ()
    """Extra multipart parts (file name, bytes, content type), e.g. bounding_boxes.labels."""
    expect_size: int | None = None
    expect_mtime_ns: int | None = None


def encode_label(label: str) -> str:
    """Percent-encode exactly like JavaScript's ``encodeURIComponent``."""
    return quote(label, safe="!~*'()")


def content_type(name: str) -> str:
    """By the name's suffix, as ``Path.suffix`` reads it (no ``Path`` per file sent)."""
    i = name.rfind(".")
    suffix = name[i:] if 0 < i < len(name) - 1 else ""
    return CONTENT_TYPES.get(suffix.lower(), "application/octet-stream")


def build_headers(sample: Sample, api_key: Secret) -> dict[str, str]:
    headers = {"x-api-key": api_key.reveal()}
    if sample.label == "":
        headers["x-label"] = ""
        headers["x-no-label"] = "1"
    elif sample.label is not None:
        headers["x-label"] = encode_label(sample.label)
    if not sample.allow_duplicates:
        headers["x-disallow-duplicates"] = "1"
    if sample.metadata:
        headers["x-metadata"] = encode_metadata(sample.metadata)
    return headers


def classify(status: int, headers: Mapping[str, str], body: bytes, now: float) -> Answer:
    """Map one HTTP response of the files endpoint to what happens next."""
    data: Any = parse_json(body)
    text = error_text(data, body, file_errors=True)
    if DUPLICATE_MARK in text and "hash" in text and status < 500:
        return Answer(Outcome.DUPLICATE, clean(text), status=status)
    if status == 200:
        return _classify_ok(data, text, status)
    error = status_error(status) or PermanentError  # a 2xx other than 200 is not a success
    if error is UrlError:
        where = headers.get("location", "")
        return Answer(Outcome.PAUSE, f"HTTP {status} redirect to {where!r}: check the URL",
                      status=status)  # fmt: skip
    reason = f"HTTP {status}: {clean(text)}" if text else f"HTTP {status}"
    if error.outcome is Outcome.RETRY:
        wait = parse_retry_after(headers.get("retry-after"), now)
        if wait is not None and wait > RETRY_AFTER_CAP_SECONDS:
            reason += (f" (Retry-After {wait:.0f} s: waiting {RETRY_AFTER_CAP_SECONDS:.0f} s,"
                       " the longest the agent waits)")  # fmt: skip
        return Answer(Outcome.RETRY, reason, status=status, retry_after=wait)
    return Answer(error.outcome, reason, status=status)


def classify_many(
    status: int, headers: Mapping[str, str], body: bytes, now: float, n: int
) -> list[Answer]:
    """``classify`` for a request of ``n`` files: one answer per file, in order. A refusal of
    the whole request (which file it is about is unknown) sends each file again alone."""
    if n == 1:
        return [classify(status, headers, body, now)]
    data: Any = parse_json(body)
    files = data.get("files") if status == 200 and isinstance(data, dict) else None
    if isinstance(files, list) and files:
        if len(files) != n:
            why = f"the service listed {len(files)} files for the {n} sent"
            return [Answer(Outcome.RETRY, why, status=status)] * n
        return [_one_file(f, status) for f in files]
    one = classify(status, headers, body, now)
    if one.outcome in (Outcome.DEAD, Outcome.DUPLICATE):
        return [replace(one, outcome=Outcome.RETRY, alone=True)] * n
    return [one] * n


def _one_file(entry: Any, status: int) -> Answer:
    """One ``files[i]`` of a request's answer."""
    if isinstance(entry, dict) and entry.get("success") is True:
        return Answer(Outcome.DELIVERED, sample_id=sample_id(entry), status=status)
    text = entry.get("error") if isinstance(entry, dict) else None
    text = text if isinstance(text, str) else ""
    if DUPLICATE_MARK in text and "hash" in text:
        return Answer(Outcome.DUPLICATE, clean(text), status=status)
    return Answer(Outcome.DEAD, clean(text or "the service refused the file"), status=status)


def sample_id(entry: dict[str, Any]) -> int | None:
    """``files[i].sampleId`` if it is a sample id (an integer from 1 to 2^63-1); None, with
    a warning, if the service sent something else (a string, 2^80, a float): the file is
    stored (the service said so) but its id is not trusted."""
    sid = entry.get("sampleId")
    if isinstance(sid, int) and not isinstance(sid, bool) and 0 < sid <= MAX_SAMPLE_ID:
        return sid
    if sid is not None:
        log.warning("the service stored %s but its sampleId %s is not a sample id (an integer"
                    " from 1 to 2^63-1): none kept", clean(str(entry.get("fileName", "a file"))),
                    clean(repr(sid))[:60])  # fmt: skip
    return None


def _classify_ok(data: Any, text: str, status: int) -> Answer:
    if not isinstance(data, dict):
        return Answer(Outcome.RETRY, "the service answered 200 without a JSON body",
                      status=status)  # fmt: skip
    files = data.get("files")
    all_ok = isinstance(files, list) and all(
        isinstance(f, dict) and f.get("success") is True for f in files
    )
    if data.get("success") is True and files and all_ok:
        return Answer(Outcome.DELIVERED, sample_id=sample_id(files[0]), status=status)
    if data.get("success") is True and not files:
        return Answer(Outcome.RETRY, "the service listed no files in its answer",
                      status=status)  # fmt: skip
    why = "the service answered 200 with success: false and no reason"
    return Answer(Outcome.DEAD, clean(text) if text else why, status=status)


HASH_CHUNK_BYTES = 64 * 1024


def file_sha256(handle: io.BufferedIOBase) -> str:
    """Read into one 64 KiB buffer, not a fresh megabyte per read: up to 32 requests in
    flight hash at once, and the C allocator keeps what they free."""
    digest = hashlib.sha256()
    buf = bytearray(HASH_CHUNK_BYTES)
    view = memoryview(buf)
    while n := handle.readinto(buf):
        digest.update(view[:n])
    handle.seek(0)
    return digest.hexdigest()


def build_uploader(
    config: Config, *, transport: httpx.BaseTransport | None = None, clock: Clock = system_clock,
    on_progress: Callable[[], None] | None = None,
) -> Uploader:  # fmt: skip
    """The uploader for ``config``; ``on_progress`` is called while request bodies stream
    (the health check's proof that a long upload is not hung)."""
    ing = config.ingestion
    if transport is None:
        transport = make_transport(url=ing.url, concurrency=ing.workers, ca_file=ing.ca_file)
    client = make_client(
        concurrency=ing.workers, timeout=ing.timeout_seconds,
        connect_timeout=ing.connect_timeout_seconds, ca_file=ing.ca_file, transport=transport,
        on_progress=on_progress,
    )  # fmt: skip
    uploader = Uploader(client, ing.url, ing.api_key.load(), clock=clock, transport=transport)
    if ing.link.max_bytes_per_second:
        uploader.throttle = Throttle(ing.link.max_bytes_per_second)
        pace_bodies(client, uploader.throttle)
    return uploader


class Uploader:
    """Sends one request of samples at a time; never raises for what the service or network
    did. ``transport``: the ``client``'s own, sent on directly (``make_transport``); without
    it requests go through ``client.send``."""

    def __init__(
        self, client: httpx.Client, url: str, api_key: Secret, *, clock: Any = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:  # fmt: skip
        self.client = client
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.clock = clock
        self.transport = transport
        self._headers = dict(client.headers)
        self._urls: dict[str, httpx.URL] = {}
        self.throttle: Throttle | None = None
        """The bandwidth cap on request bodies, if any."""
        self.proxy = proxy_for(self.url)
        """The proxy requests go through (named in network errors), or None."""

    def endpoint(self, category: str) -> str:
        return f"{self.url}/api/{category}/files"

    def close(self) -> None:
        if self.throttle is not None:
            self.throttle.close()
        self.client.close()

    def upload(self, sample: Sample) -> Answer:
        return self.upload_many([sample])[0]

    def upload_many(self, samples: Sequence[Sample]) -> list[Answer]:
        """Send ``samples`` in one request (they share category, label and metadata); one
        answer per sample, in order. A file that vanished or changed is answered without
        being sent; the others still go."""
        answers: list[Answer | None] = [None] * len(samples)
        opened: list[IO[bytes]] = []
        try:
            parts: list[tuple[int, IO[bytes] | bytes, str, int]] = []
            for i, sample in enumerate(samples):
                got = _open(sample)
                if isinstance(got, Answer):
                    answers[i] = got
                    continue
                fd, st = got
                size = st.st_size
                try:
                    body = _body(fd, st, opened)
                except OSError as exc:
                    answers[i] = _unreadable(exc)
                    continue
                if isinstance(body, Answer):
                    answers[i] = body
                    continue
                parts.append((i, *body, size))
            if parts:
                sent = self._send([samples[i] for i, *_ in parts], [c for _, c, _, _ in parts])
                for (i, _, sha, size), answer in zip(parts, sent, strict=True):
                    delivered = answer.outcome is Outcome.DELIVERED
                    answers[i] = replace(answer, sha256=sha, bytes_sent=size if delivered else 0)
        finally:
            for handle in opened:
                handle.close()
        return [a for a in answers if a is not None]

    def _send(
        self, samples: Sequence[Sample], contents: Sequence[IO[bytes] | bytes]
    ) -> list[Answer]:
        files: list[tuple[str, tuple[str, Any, str]]] = []
        for sample, content in zip(samples, contents, strict=True):
            files.append(("data", (sample.file_name, content, content_type(sample.file_name))))
            files.extend(("data", part) for part in sample.extra_parts)
        n = len(samples)
        try:
            request = self._request(samples[0], files)
            if all(isinstance(c, bytes) for c in contents):
                request.read()  # one write for the whole body, not one per multipart piece
            elif isinstance(request.stream, httpx.SyncByteStream):
                request.stream = _Coalesced(request.stream)  # a large file streams
            response = self._exchange(request)
            try:
                body, cut = read_limited(response, MAX_RESPONSE_BYTES,
                                         within=self.client.timeout.read)  # fmt: skip
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            why = str(exc) if isinstance(exc, AnswerTooSlow) else type(exc).__name__
            return [Answer(Outcome.RETRY, f"timed out: {why}", timed_out=True)] * n
        except httpx.TransportError as exc:
            via = f" (through the proxy {self.proxy})" if self.proxy else ""
            return [Answer(Outcome.RETRY, f"network error: {transport_reason(exc)}{via}")] * n
        except OSError as exc:
            return [_unreadable(exc)] * n
        if cut and response.status_code == 200:
            why = f"the service's answer was over {MAX_RESPONSE_BYTES // 1024} KiB: not read"
            return [Answer(Outcome.RETRY, why, status=200)] * n
        return classify_many(response.status_code, response.headers, body, self.clock(), n)

    def _request(
        self, first: Sample, files: list[tuple[str, tuple[str, Any, str]]]
    ) -> httpx.Request:
        """The request ``client.build_request`` would make, without re-parsing the URL and
        re-merging the client's cookies and settings for every file."""
        url = self._urls.get(first.category)
        if url is None:
            url = self._urls[first.category] = httpx.URL(self.endpoint(first.category))
        headers = {**self._headers, **build_headers(first, self.api_key)}
        return httpx.Request("POST", url, headers=headers, files=files,
                             extensions={"timeout": self.client.timeout.as_dict()})  # fmt: skip

    def _exchange(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the answer's body is left to stream. On the transport directly,
        the client's request hooks (progress, the bandwidth cap) are run here."""
        if self.transport is None:
            return self.client.send(request, stream=True)
        for hook in self.client.event_hooks["request"]:
            hook(request)
        return self.transport.handle_request(request)


COALESCE_BYTES = 16 * 1024
"""Pieces of a streamed body smaller than this are joined before they are written."""


class _Coalesced(httpx.SyncByteStream):
    """A streamed multipart body in few writes: httpx yields every part's headers, every
    small file and every boundary as a piece of its own (about 70 system calls, and as
    many reads at the service, for a request of 20 files); pieces below
    ``COALESCE_BYTES`` are joined, a large file's chunks pass as they are (no copy)."""

    def __init__(self, inner: httpx.SyncByteStream) -> None:
        self.inner = inner

    def __iter__(self) -> Iterator[bytes]:
        small: list[bytes] = []
        held = 0
        for chunk in self.inner:
            if len(chunk) >= COALESCE_BYTES:
                if small:
                    yield b"".join(small)
                    small, held = [], 0
                yield chunk
                continue
            small.append(chunk)
            held += len(chunk)
            if held >= COALESCE_BYTES:
                yield b"".join(small)
                small, held = [], 0
        if small:
            yield b"".join(small)

    def close(self) -> None:
        self.inner.close()


def _unreadable(exc: OSError) -> Answer:
    return Answer(Outcome.DEAD, f"cannot read the file: {exc.strerror or exc}")


def _body(
    fd: int, before: os.stat_result, opened: list[IO[bytes]]
) -> tuple[IO[bytes] | bytes, str] | Answer:
    """What is sent and its SHA-256: a small file's bytes, read once (and ``fd`` closed);
    a larger file's handle, streamed (hashed first, then rewound; added to ``opened``).

    Exactly the ``size`` bytes of the version that was checked are read, and the file
    must be unchanged after the read: a writer still appending or rewriting it is never
    sent half-done (its next version is queued when it is complete)."""
    size = before.st_size
    if size <= SMALL_BODY_BYTES:
        try:
            content = _read_exactly(fd, size)
            changed = _changed(before, os.fstat(fd)) or len(content) != size
        finally:
            os.close(fd)
        if changed:
            return Answer(Outcome.GONE, CHANGED_WHILE_READ)
        return content, hashlib.sha256(content).hexdigest()
    handle = os.fdopen(fd, "rb")
    opened.append(handle)
    sha = file_sha256(handle)
    if _changed(before, os.fstat(fd)):
        return Answer(Outcome.GONE, CHANGED_WHILE_READ)
    return handle, sha


CHANGED_WHILE_READ = "the file changed while it was read (its next version is queued)"


def _read_exactly(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left > 0 and (chunk := os.read(fd, left)):
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _changed(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns)


def _open(sample: Sample) -> tuple[int, os.stat_result] | Answer:
    """The file, open (a descriptor), and its status; or why it cannot be sent (it vanished
    or changed)."""
    try:
        # non-blocking and no symlinks: a FIFO or a link swapped in after the file was
        # queued must not hang a worker or send another file's bytes
        fd = os.open(sample.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return Answer(Outcome.GONE, "the file no longer exists")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return Answer(Outcome.GONE, "the file was replaced by a symbolic link")
        return _unreadable(exc)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return Answer(Outcome.GONE, "the file was replaced by something that is not a file")
    if sample.expect_size is not None and (st.st_size, st.st_mtime_ns) != (
        sample.expect_size, sample.expect_mtime_ns
    ):  # fmt: skip
        os.close(fd)
        return Answer(Outcome.GONE, "the file changed after it was queued")
    return fd, st
