"""The uploader's wire format and ``classify``, through ``httpx.MockTransport``."""

from __future__ import annotations

import hashlib
import json
import os
import ssl
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_uploader import __version__
from edge_uploader.remote.ingestion import (
    Answer,
    Outcome,
    Sample,
    Uploader,
    classify,
    content_type,
    encode_label,
    make_client,
    parse_retry_after,
)
from edge_uploader.secrets import Secret
from tests.fakes import FakeClock
from tests.unit.multipart import read_parts

KEY = "ei_0123456789abcdef"
NOW = 1_700_000_000.0
OK = {"success": True, "files": [{"success": True, "sampleId": 4242, "projectId": 1,
                                  "fileName": "idle.01.wav"}]}  # fmt: skip


class Recorder:
    """A MockTransport handler that records requests and answers from a script."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answer: Callable[[httpx.Request], httpx.Response] = lambda r: httpx.Response(
            200, json=OK
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.answer(request)


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def uploader(rec: Recorder, clock: FakeClock) -> Iterator[Uploader]:
    client = make_client(concurrency=2, timeout=5, connect_timeout=5,
                         transport=httpx.MockTransport(rec))  # fmt: skip
    yield Uploader(client, "http://ingest.test:4810/", Secret(KEY), clock=clock)
    client.close()


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    path = tmp_path / "sess-1" / "idle.01.wav"
    path.parent.mkdir()
    path.write_bytes(b"RIFF" + bytes(range(256)) * 40)
    return path


def sample(path: Path, **over: Any) -> Sample:
    fields: dict[str, Any] = {"path": path, "file_name": path.name, "category": "training",
                              "label": "idle", "metadata": {"site": "north"}}  # fmt: skip
    fields.update(over)
    return Sample(**fields)


# -- the request --------------------------------------------------------------------------


def test_exact_request(uploader: Uploader, rec: Recorder, wav: Path) -> None:
    answer = uploader.upload(sample(wav, category="testing", label="wave é/ü",
                                    metadata={"site": "Zürich", "a": "1"}))  # fmt: skip
    (req,) = rec.requests
    assert req.method == "POST"
    assert str(req.url) == "http://ingest.test:4810/api/testing/files"
    assert req.headers["x-api-key"] == KEY
    assert req.headers["x-label"] == "wave%20%C3%A9%2F%C3%BC"
    assert "x-no-label" not in req.headers
    assert req.headers["x-disallow-duplicates"] == "1"
    assert req.headers["x-metadata"] == '{"a":"1","site":"Z\\u00fcrich"}'
    assert req.headers["user-agent"] == f"edge-uploader/{__version__}"
    (part,) = read_parts(req)
    assert part.name == "data"
    assert part.filename == "idle.01.wav"
    assert part.content_type == "audio/wav"
    assert part.body == wav.read_bytes()
    assert answer == Answer(Outcome.DELIVERED, "", sample_id=4242, status=200,
                            sha256=hashlib.sha256(wav.read_bytes()).hexdigest(),
                            bytes_sent=wav.stat().st_size)  # fmt: skip


def test_headers_are_plain_ascii_bytes(uploader: Uploader, rec: Recorder, wav: Path) -> None:
    uploader.upload(sample(wav, label="ünïcode ☃", metadata={"k": "☃"}))
    raw = dict(rec.requests[0].headers.raw)
    assert raw[b"x-label"] == b"%C3%BCn%C3%AFcode%20%E2%98%83"
    assert raw[b"x-metadata"] == b'{"k":"\\u2603"}'


def test_unlabeled_sends_no_label_and_an_empty_label(
    uploader: Uploader, rec: Recorder, wav: Path
) -> None:
    uploader.upload(sample(wav, label=""))
    h = rec.requests[0].headers
    assert h["x-no-label"] == "1"
    assert h["x-label"] == ""
    assert dict(h.raw)[b"x-label"] == b""


def test_infer_sends_no_label_header(uploader: Uploader, rec: Recorder, wav: Path) -> None:
    uploader.upload(sample(wav, label=None))
    h = rec.requests[0].headers
    assert "x-label" not in h
    assert "x-no-label" not in h


def test_allow_duplicates_drops_the_header(uploader: Uploader, rec: Recorder, wav: Path) -> None:
    uploader.upload(sample(wav, allow_duplicates=True))
    assert "x-disallow-duplicates" not in rec.requests[0].headers


def test_no_metadata_no_header(uploader: Uploader, rec: Recorder, wav: Path) -> None:
    uploader.upload(sample(wav, metadata={}))
    assert "x-metadata" not in rec.requests[0].headers


def test_upload_name_and_extra_parts(uploader: Uploader, rec: Recorder, wav: Path) -> None:
    boxes = b'{"version":1,"type":"bounding-box-labels","boundingBoxes":{}}'
    uploader.upload(sample(wav, file_name="renamed.wav",
                           extra_parts=(("bounding_boxes.labels", boxes, "application/json"),)))  # fmt: skip
    first, second = read_parts(rec.requests[0])
    assert (first.name, first.filename) == ("data", "renamed.wav")
    assert (second.name, second.filename, second.content_type, second.body) == (
        "data",
        "bounding_boxes.labels",
        "application/json",
        boxes,
    )


@pytest.mark.parametrize(
    ("name", "ctype"),
    [
        ("a.wav", "audio/wav"), ("a.cbor", "application/cbor"), ("a.json", "application/json"),
        ("a.jpg", "image/jpeg"), ("a.JPEG", "image/jpeg"), ("a.png", "image/png"),
        ("a.csv", "text/csv"), ("a.txt", "text/plain"), ("a.mp4", "video/mp4"),
        ("a.avi", "video/avi"), ("a.parquet", "application/vnd.apache.parquet"),
        ("a.bin", "application/octet-stream"), ("noext", "application/octet-stream"),
    ],
)  # fmt: skip
def test_content_type_by_extension(name: str, ctype: str) -> None:
    assert content_type(name) == ctype


@pytest.mark.parametrize("name", [".wav", "a.", "a..wav", "a.tar.wav", "..", ".a.wav", "wav"])
def test_content_type_reads_the_suffix_as_pathlib_does(name: str) -> None:
    """A dot file has no suffix, the last dot counts, a trailing dot gives none."""
    expected = {".wav": "audio/wav"}.get(Path(name).suffix, "application/octet-stream")
    assert content_type(name) == expected


def test_content_type_on_the_wire(uploader: Uploader, rec: Recorder, tmp_path: Path) -> None:
    img = tmp_path / "frame.PNG"
    img.write_bytes(b"\x89PNG....")
    uploader.upload(sample(img))
    (part,) = read_parts(rec.requests[0])
    assert (part.filename, part.content_type) == ("frame.PNG", "image/png")


@pytest.mark.parametrize(
    ("label", "encoded"),
    [
        ("wave é/ü", "wave%20%C3%A9%2F%C3%BC"),
        ("idle", "idle"),
        ("a+b&c=d?e#f", "a%2Bb%26c%3Dd%3Fe%23f"),
        ("keep-_.!~*'()", "keep-_.!~*'()"),  # encodeURIComponent leaves these alone
        ("100%", "100%25"),
        ("日本", "%E6%97%A5%E6%9C%AC"),
    ],
)
def test_label_encoding_matches_encode_uri_component(label: str, encoded: str) -> None:
    assert encode_label(label) == encoded


# -- classify -----------------------------------------------------------------------------


def body(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_success_keeps_the_sample_id() -> None:
    a = classify(200, {}, body(OK), NOW)
    assert (a.outcome, a.sample_id, a.status) == (Outcome.DELIVERED, 4242, 200)


def test_success_without_a_numeric_sample_id() -> None:
    ok = {"success": True, "files": [{"success": True, "sampleId": True}]}
    a = classify(200, {}, body(ok), NOW)
    assert (a.outcome, a.sample_id) == (Outcome.DELIVERED, None)


def test_200_with_a_per_file_failure_is_dead() -> None:
    refused = {"success": True, "files": [{"success": False,
                                           "error": "Could not parse this CSV file"}]}  # fmt: skip
    a = classify(200, {}, body(refused), NOW)
    assert (a.outcome, a.reason) == (Outcome.DEAD, "Could not parse this CSV file")


def test_200_with_success_false() -> None:
    a = classify(200, {}, body({"success": False, "error": "Unknown error"}), NOW)
    assert (a.outcome, a.reason) == (Outcome.DEAD, "Unknown error")


@pytest.mark.parametrize("top", [True, False])
def test_duplicate_in_a_200_answer(top: bool) -> None:
    dup = {"success": top, "files": [{"success": False, "error":
           "An item with this hash already exists (ids: 17)"}]}  # fmt: skip
    a = classify(200, {}, body(dup), NOW)
    assert (a.outcome, a.reason) == (
        Outcome.DUPLICATE,
        "An item with this hash already exists (ids: 17)",
    )


def test_duplicate_in_a_400_answer() -> None:
    dup = {"success": False, "error": "An item with this hash already exists"}
    a = classify(400, {}, body(dup), NOW)
    assert (a.outcome, a.status) == (Outcome.DUPLICATE, 400)


def test_duplicate_as_plain_text() -> None:
    a = classify(409, {}, b"An item with this hash already exists", NOW)
    assert a.outcome is Outcome.DUPLICATE


@pytest.mark.parametrize("raw", [b"OK", b"", b"<html>proxy</html>", b"[1,2]", b'"ok"'])
def test_200_without_a_json_object_is_retried(raw: bytes) -> None:
    a = classify(200, {}, raw, NOW)
    assert (a.outcome, a.reason) == (Outcome.RETRY, "the service answered 200 without a JSON body")


def test_200_listing_no_files_is_retried() -> None:
    a = classify(200, {}, body({"success": True, "files": []}), NOW)
    assert (a.outcome, a.reason) == (Outcome.RETRY, "the service listed no files in its answer")


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_pause(status: int) -> None:
    a = classify(status, {}, body({"success": False, "error": "Invalid API key"}), NOW)
    assert (a.outcome, a.reason, a.status) == (
        Outcome.PAUSE,
        f"HTTP {status}: Invalid API key",
        status,
    )
    assert classify(status, {}, b"Invalid API key", NOW).reason == f"HTTP {status}: Invalid API key"
    assert classify(status, {}, b"", NOW).reason == f"HTTP {status}"


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_pause(status: int) -> None:
    a = classify(status, {"location": "https://elsewhere/api"}, b"", NOW)
    assert a.outcome is Outcome.PAUSE
    assert a.reason == f"HTTP {status} redirect to 'https://elsewhere/api': check the URL"


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_transient_statuses_retry(status: int) -> None:
    a = classify(status, {}, b"busy", NOW)
    assert (a.outcome, a.reason, a.retry_after) == (Outcome.RETRY, f"HTTP {status}: busy", None)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        (format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True), 90.0),
        ("Tue, 14 Nov 2023 22:14:50 GMT", 90.0),
        ("Tue, 14 Nov 2023 22:00:00 GMT", 0.0),  # in the past
        ("soon", None),
        ("-5", None),
        ("", None),
    ],
)
def test_retry_after(value: str, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds
    a = classify(503, {"retry-after": value}, b"", NOW)
    assert (a.outcome, a.retry_after) == (Outcome.RETRY, seconds)


@pytest.mark.parametrize("status", [400, 404, 413, 421, 422, 418])
def test_permanent_statuses_are_dead(status: int) -> None:
    a = classify(status, {}, body({"success": False, "error": "nope"}), NOW)
    assert (a.outcome, a.reason, a.status) == (Outcome.DEAD, f"HTTP {status}: nope", status)


def test_reasons_are_short_and_one_line() -> None:
    a = classify(400, {}, ("line\n" * 200).encode(), NOW)
    assert a.reason == "HTTP 400: " + " ".join(["line"] * 60)
    long = classify(400, {}, body({"success": False, "error": "e" * 1000}), NOW)
    assert long.reason == "HTTP 400: " + "e" * 299 + "…"


def test_reasons_carry_no_control_characters() -> None:
    """The service's text reaches terminals (progress line, dead list, logs): escape
    sequences in it must not drive the operator's terminal."""
    a = classify(400, {}, body({"error": "bad\x1b[2J\x1b]0;owned\x07 file\x00"}), NOW)
    assert a.reason.isprintable() and "owned" in a.reason
    plain = classify(502, {}, b"gateway \x1b[31mred\x1b[0m", NOW)
    assert plain.reason.isprintable()


# -- through the client -------------------------------------------------------------------


def test_retry_after_date_through_the_client(uploader: Uploader, rec: Recorder, wav: Path,
                                             clock: FakeClock) -> None:  # fmt: skip
    when = format_datetime(datetime.fromtimestamp(clock() + 300, UTC), usegmt=True)
    rec.answer = lambda r: httpx.Response(503, headers={"Retry-After": when}, text="down")
    a = uploader.upload(sample(wav))
    assert (a.outcome, a.retry_after, a.reason, a.bytes_sent) == (
        Outcome.RETRY,
        300.0,
        "HTTP 503: down",
        0,
    )
    assert a.sha256 == hashlib.sha256(wav.read_bytes()).hexdigest()


def test_401_through_the_client(uploader: Uploader, rec: Recorder, wav: Path) -> None:
    rec.answer = lambda r: httpx.Response(401, json={"success": False, "error": "Invalid API key"})
    a = uploader.upload(sample(wav))
    assert (a.outcome, a.reason) == (Outcome.PAUSE, "HTTP 401: Invalid API key")


def test_redirect_is_not_followed(uploader: Uploader, rec: Recorder, wav: Path) -> None:
    rec.answer = lambda r: httpx.Response(302, headers={"Location": "http://ingest.test/login"})
    a = uploader.upload(sample(wav))
    assert a.outcome is Outcome.PAUSE
    assert len(rec.requests) == 1


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"),
         "network error: ConnectError: [Errno 111] Connection refused"),
        (httpx.RemoteProtocolError("Server disconnected"),
         "network error: RemoteProtocolError: Server disconnected"),
        (httpx.ReadError(""), "network error: ReadError: ReadError"),
        (httpx.ReadTimeout("timed out"), "timed out: ReadTimeout"),
        (httpx.ConnectTimeout("timed out"), "timed out: ConnectTimeout"),
        (httpx.WriteTimeout("timed out"), "timed out: WriteTimeout"),
    ],
)  # fmt: skip
def test_transport_errors_and_timeouts_retry(
    uploader: Uploader, rec: Recorder, wav: Path, exc: Exception, reason: str
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc

    rec.answer = fail
    a = uploader.upload(sample(wav))
    assert (a.outcome, a.reason, a.retry_after, a.status) == (Outcome.RETRY, reason, None, None)


def test_file_vanished(uploader: Uploader, rec: Recorder, tmp_path: Path) -> None:
    a = uploader.upload(sample(tmp_path / "gone.wav"))
    assert (a.outcome, a.reason) == (Outcome.GONE, "the file no longer exists")
    assert rec.requests == []


def test_file_changed_since_queued(uploader: Uploader, rec: Recorder, wav: Path) -> None:
    st = wav.stat()
    same = uploader.upload(sample(wav, expect_size=st.st_size, expect_mtime_ns=st.st_mtime_ns))
    assert same.outcome is Outcome.DELIVERED
    grown = uploader.upload(sample(wav, expect_size=st.st_size - 1, expect_mtime_ns=st.st_mtime_ns))
    touched = uploader.upload(
        sample(wav, expect_size=st.st_size, expect_mtime_ns=st.st_mtime_ns + 1)
    )
    for a in (grown, touched):
        assert (a.outcome, a.reason) == (Outcome.GONE, "the file changed after it was queued")
    assert len(rec.requests) == 1


def test_a_folder_in_place_of_the_file_is_gone(
    uploader: Uploader, rec: Recorder, tmp_path: Path
) -> None:
    a = uploader.upload(sample(tmp_path))
    assert (a.outcome, a.reason) == (
        Outcome.GONE,
        "the file was replaced by something that is not a file",
    )
    assert rec.requests == []


def test_a_fifo_in_place_of_the_file_does_not_hang(
    uploader: Uploader, rec: Recorder, tmp_path: Path
) -> None:
    fifo = tmp_path / "swapped.wav"
    os.mkfifo(fifo)  # opening it for reading without O_NONBLOCK would wait for a writer
    a = uploader.upload(sample(fifo))
    assert a.outcome is Outcome.GONE
    assert rec.requests == []


def test_a_symlink_in_place_of_the_file_is_not_followed(
    uploader: Uploader, rec: Recorder, wav: Path, tmp_path: Path
) -> None:
    link = tmp_path / "link.wav"
    link.symlink_to(wav)
    a = uploader.upload(sample(link))
    assert (a.outcome, a.reason) == (Outcome.GONE, "the file was replaced by a symbolic link")
    assert rec.requests == []


def test_unreadable_file_is_dead(
    uploader: Uploader, rec: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def deny(*args: object, **kw: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("edge_uploader.remote.ingestion.os.open", deny)  # root may read anything
    a = uploader.upload(sample(tmp_path / "x.wav"))
    monkeypatch.undo()
    assert (a.outcome, a.reason) == (Outcome.DEAD, "cannot read the file: Permission denied")
    assert rec.requests == []


def test_large_error_bodies_are_cut(uploader: Uploader, rec: Recorder, wav: Path) -> None:
    rec.answer = lambda r: httpx.Response(500, content=b"x" * (3 * 1024 * 1024))
    a = uploader.upload(sample(wav))
    assert a.outcome is Outcome.RETRY
    assert len(a.reason) < 400


def test_duplicate_text_in_a_server_error_is_retried() -> None:
    a = classify(503, {}, b"An item with this hash already exists (cache miss)", NOW)
    assert a.outcome is Outcome.RETRY


def test_retry_after_date_without_zone_is_gmt() -> None:
    when = datetime.fromtimestamp(NOW + 30, UTC).strftime("%a, %d %b %Y %H:%M:%S")
    a = classify(503, {"retry-after": when}, b"", NOW)
    assert a.retry_after == pytest.approx(30, abs=1)


def test_a_link_without_tls_loads_no_certificate_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading the default store is a good part of a start-up: an http:// service, direct
    or through an http:// proxy, never needs it; https:// anywhere on the link does."""
    from edge_uploader.remote.http import make_transport, tls_verify

    bare = tls_verify(None, needed=False)
    assert isinstance(bare, ssl.SSLContext)
    assert bare.verify_mode is ssl.CERT_REQUIRED and bare.check_hostname
    assert bare.cert_store_stats()["x509_ca"] == 0  # a TLS handshake could only fail
    assert tls_verify(None) is True
    seen: list[object] = []
    monkeypatch.setattr(httpx, "HTTPTransport", lambda **kw: seen.append(kw["verify"]))
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(key, raising=False)
        monkeypatch.delenv(key.lower(), raising=False)
    make_transport(url="http://127.0.0.1:4810", concurrency=4)
    make_transport(url="https://ingestion.example", concurrency=4)
    monkeypatch.setenv("HTTP_PROXY", "https://proxy.example:3128")
    make_transport(url="http://10.0.0.5:4810", concurrency=4)
    assert [v if v is True else "bare" for v in seen] == ["bare", True, True]
