"""The streaming multipart parser and body readers, fed byte by byte."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from edge_uploader.localserver.multipart import (
    BodyError,
    ChunkedReader,
    LengthReader,
    MultipartParser,
    PartTooLarge,
    TooManyParts,
    boundary_of,
)

BOUNDARY = "b0undary"


class Trickle:
    """A reader that returns at most ``step`` bytes per read, to split every boundary."""

    def __init__(self, data: bytes, step: int = 1) -> None:
        self._data = data
        self._step = step

    def read(self, n: int) -> bytes:
        out, self._data = self._data[: min(n, self._step)], self._data[min(n, self._step) :]
        return out


def _body(*parts: tuple[str, bytes], preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    out = preamble
    for headers, data in parts:
        out += f"--{BOUNDARY}\r\n{headers}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode() + epilogue


def _parse(data: bytes, tmp_path: Path, step: int = 1, **kw: int) -> list:  # type: ignore[type-arg]
    limits = {"max_part_bytes": 1000, "max_parts": 10, **kw}
    return MultipartParser(Trickle(data, step), BOUNDARY, tmp_path, **limits).parse()


@pytest.mark.parametrize("step", [1, 3, 64 * 1024])
def test_parts_survive_any_read_split(tmp_path: Path, step: int) -> None:
    tricky = b"line\r\n--b0undar not quite, x--b0undary is data without CRLF\r\n-"
    body = _body(
        ('Content-Disposition: form-data; name="data"; filename="a \\"q\\".wav"', tricky),
        (
            'Content-Disposition: form-data; name="data"; filename="x%22y.labels"\r\n'
            "Content-Type: multipart/form-data",
            b"{}",
        ),
        preamble=b"ignored preamble\r\n",
        epilogue=b"ignored epilogue",
    )
    parts = _parse(body, tmp_path, step)
    assert [p.filename for p in parts] == ['a "q".wav', 'x"y.labels']
    assert parts[0].path.read_bytes() == tricky
    assert parts[0].sha256 == hashlib.sha256(tricky).hexdigest()
    assert parts[0].size == len(tricky)
    assert parts[1].content_type == "multipart/form-data"


def test_rfc5987_filename_and_headerless_part(tmp_path: Path) -> None:
    body = _body(
        ("Content-Disposition: form-data; name=data; filename*=UTF-8''%C3%A9t%C3%A9.wav", b"x"),
    )
    assert _parse(body, tmp_path)[0].filename == "été.wav"
    raw = f"--{BOUNDARY}\r\n\r\nno headers\r\n--{BOUNDARY}--".encode()
    [part] = _parse(raw, tmp_path)
    assert part.name is None and part.path.read_bytes() == b"no headers"


def test_errors_clean_up_temp_files(tmp_path: Path) -> None:
    with pytest.raises(PartTooLarge):
        _parse(
            _body(('Content-Disposition: form-data; name="data"; filename="a"', b"x" * 1001)),
            tmp_path,
            100,
        )
    with pytest.raises(TooManyParts):
        _parse(
            _body(*[('Content-Disposition: form-data; name="data"', b"x")] * 3),
            tmp_path,
            max_parts=2,
        )
    with pytest.raises(BodyError):
        _parse(_body(('Content-Disposition: form-data; name="data"', b"x"))[:-12], tmp_path, 5)
    with pytest.raises(BodyError):
        _parse(b"no boundary at all", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_boundary_of() -> None:
    assert boundary_of('multipart/form-data; boundary="abc def"') == "abc def"
    assert boundary_of("Multipart/Form-Data; charset=utf-8; boundary=xyz") == "xyz"
    assert boundary_of("multipart/form-data") is None
    assert boundary_of("application/json") is None


def test_chunked_reader_with_extensions_and_trailers() -> None:
    stream = io.BytesIO(b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT")
    reader = ChunkedReader(stream)
    data = b""
    while chunk := reader.read(3):
        data += chunk
    assert data == b"Wikipedia"
    assert stream.read() == b"NEXT"  # the next request on the connection is untouched
    with pytest.raises(BodyError):
        ChunkedReader(io.BytesIO(b"zz\r\n")).read(10)


def test_length_reader_stops_at_length() -> None:
    stream = io.BytesIO(b"abcdefNEXT")
    reader = LengthReader(stream, 6)
    assert reader.read(100) == b"abcdef" and reader.read(100) == b""
    assert stream.read() == b"NEXT"
    short = LengthReader(io.BytesIO(b"ab"), 5)
    assert short.read(10) == b"ab"
    with pytest.raises(BodyError):
        short.read(10)
