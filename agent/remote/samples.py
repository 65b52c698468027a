"""The files of a request: what one sample is, how it is opened and checked (a file that
vanished, changed or was swapped for a link is answered without being sent), read or
streamed, hashed, and framed as the ``multipart/form-data`` body the service reads."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import Outcome
from .outcomes import Answer
from .wire import Piece

MAX_FILE_BYTES = 100_000_000
"""The ingestion service's documented limit per file (100 MB)."""
SMALL_BODY_BYTES = 64 * 1024
"""Files up to this size are read once and sent in one write (hash and body from the same
bytes); larger files are streamed from disk, also inside a body shared with other files,
so the bytes held stay under ``max_request_bytes`` per request in flight.
Sending a small multipart body piece by piece costs a system call per piece on both ends:
about 15% of the CPU per file on a loopback bench."""

CONTENT_TYPES = {
    ".wav": "audio/wav", ".cbor": "application/cbor", ".json": "application/json",
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".csv": "text/csv",
    ".txt": "text/plain", ".mp4": "video/mp4", ".avi": "video/avi",
    ".parquet": "application/vnd.apache.parquet",
}  # fmt: skip


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


def content_type(name: str) -> str:
    """By the name's suffix, as ``Path.suffix`` reads it (no ``Path`` per file sent)."""
    i = name.rfind(".")
    suffix = name[i:] if 0 < i < len(name) - 1 else ""
    return CONTENT_TYPES.get(suffix.lower(), "application/octet-stream")


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


def multipart(
    samples: Sequence[Sample], contents: Sequence[tuple[IO[bytes] | bytes, int]], boundary: bytes
) -> list[Piece]:
    """The ``multipart/form-data`` body httpx would send for these files (one part named
    ``data`` per file and per extra part), in as few pieces as the files allow: the bytes
    between two streamed files are one piece."""
    pieces: list[Piece] = []
    held: list[bytes] = []
    start = b"--" + boundary + b'\r\nContent-Disposition: form-data; name="data"; filename="'
    for sample, (content, size) in zip(samples, contents, strict=True):
        parts: list[tuple[str, IO[bytes] | bytes, str]] = [
            (sample.file_name, content, content_type(sample.file_name)),
            *sample.extra_parts,
        ]
        for name, data, ctype in parts:
            held.append(start + form_param(name) + b'"\r\nContent-Type: ' + ctype.encode()
                        + b"\r\n\r\n")  # fmt: skip
            if isinstance(data, bytes):
                held.append(data)
            else:
                pieces.append(b"".join(held))
                held = []
                pieces.append((data, size))
            held.append(b"\r\n")
    held.append(b"--" + boundary + b"--\r\n")
    pieces.append(b"".join(held))
    return pieces


_FORM_ESCAPES = {'"': "%22", "\\": "\\\\", **{chr(c): f"%{c:02X}" for c in range(32) if c != 0x1B}}


def form_param(value: str) -> bytes:
    """A file name as a multipart header quotes it (the HTML5 form encoding, as httpx
    writes it): quote and control characters escaped, UTF-8."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return value.encode()
    return "".join(_FORM_ESCAPES.get(c, c) for c in value).encode()


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
