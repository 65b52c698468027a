"""``Wire``, the lean HTTP/1.1 link, against a scripted server on a real socket: the bytes
it sends are the request httpx sends, its framing reads every way an answer may end, a
connection is reused only when that is safe, and every failure is an ``Answer`` that names
it."""

from __future__ import annotations

import gzip
import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edge_uploader.remote.ingestion import Outcome, Sample, Uploader, make_client, multipart
from edge_uploader.remote.wire import LocalProtocolError, Wire
from edge_uploader.secrets import Secret

KEY = "ei_wire_test_key_0123456789"
OK = json.dumps({"success": True, "files": [{"success": True, "sampleId": 9}]}).encode()


def answer(body: bytes = OK, *, status: str = "200 OK", extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body  # fmt: skip


@dataclass
class Seen:
    head: bytes
    body: bytes
    connection: int


@dataclass
class Script:
    """Answers by request number: bytes to send, then whether to close the connection."""

    replies: list[tuple[bytes, bool]]
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    hung_up: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    """Released each time the server closes a connection."""


class RawServer:
    """Reads each request (head and ``Content-Length`` body) and sends the scripted bytes."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.script.lock:
                self.script.connections += 1
                number = self.script.connections
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        rfile = conn.makefile("rb")
        try:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = rfile.readline()
                    if not line:
                        return
                    head += line
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
                body = rfile.read(length)
                with self.script.lock:
                    self.script.seen.append(Seen(head, body, number))
                    index = len(self.script.seen) - 1
                    data, close = self.script.replies[min(index, len(self.script.replies) - 1)]
                conn.sendall(data)
                if close:
                    return
        except OSError:
            return
        finally:
            rfile.close()
            conn.close()
            self.script.hung_up.release()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(*replies: bytes | tuple[bytes, bool]) -> RawServer:
        script = Script([r if isinstance(r, tuple) else (r, False) for r in replies])
        servers.append(RawServer(script))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    path = tmp_path / "idle.01.wav"
    path.write_bytes(b"RIFF" + bytes(range(256)) * 8)
    return path


def sample(path: Path, **over: Any) -> Sample:
    fields: dict[str, Any] = {"path": str(path), "file_name": path.name, "category": "training",
                              "label": "idle", "metadata": {"site": "north"}}  # fmt: skip
    fields.update(over)
    return Sample(**fields)


def wire_uploader(url: str, **kw: Any) -> Uploader:
    return Uploader(None, url, Secret(KEY), wire=Wire(url, timeout=2, connect_timeout=2, **kw))


def parsed(seen: Seen) -> tuple[dict[str, str], list[tuple[bytes, bytes]]]:
    """A request's headers (boundary and length aside) and its parts (headers, bytes)."""
    lines = seen.head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    boundary = headers.pop("content-type").split("boundary=")[1].encode()
    headers.pop("content-length")
    chunks = seen.body.split(b"--" + boundary)
    assert chunks[0] == b"" and chunks[-1] == b"--\r\n"
    parts = [(h, b) for h, _, b in (c[2:-2].partition(b"\r\n\r\n") for c in chunks[1:-1])]
    return {"request-line": lines[0], **headers}, parts


def test_the_request_is_the_one_httpx_sends(serve: Callable[..., RawServer], wav: Path,
                                            tmp_path: Path) -> None:  # fmt: skip
    big = tmp_path / 'a "big" one\\.wav'
    big.write_bytes(bytes(range(256)) * 400)  # over SMALL_BODY_BYTES: streamed
    boxes = ("bounding_boxes.labels", b'{"version":1}', "application/json")
    files = [sample(wav, label="café / 1", extra_parts=(boxes,)),
             sample(big, label="café / 1", file_name=big.name)]  # fmt: skip
    srv = serve(answer(json.dumps({"success": True, "files": [{"success": True}] * 2}).encode()))
    client = make_client(concurrency=1, timeout=2, connect_timeout=2)
    via_httpx = Uploader(client, srv.url, Secret(KEY)).upload_many(files)
    client.close()
    via_wire = wire_uploader(srv.url).upload_many(files)
    assert [a.outcome for a in via_httpx + via_wire] == [Outcome.DELIVERED] * 4
    one, two = srv.script.seen
    assert parsed(one) == parsed(two)
    assert len(one.body) == len(two.body)
    headers, parts = parsed(two)
    assert headers["x-label"] == "caf%C3%A9%20%2F%201" and headers["x-api-key"] == KEY
    assert [p[1] for p in parts] == [wav.read_bytes(), b'{"version":1}', big.read_bytes()]
    assert b'filename="a %22big%22 one\\\\.wav"' in parts[2][0]


def test_a_link_without_tls_makes_no_certificate_context(
    serve: Callable[..., RawServer], wav: Path
) -> None:
    """Reading a certificate store costs tens of milliseconds of a start-up: only the
    first TLS connection asks for the context."""
    asked: list[int] = []

    def context() -> Any:
        asked.append(1)
        raise AssertionError("an http:// link asked for a TLS context")

    url = serve(answer()).url
    up = Uploader(None, url, Secret(KEY), wire=Wire(url, timeout=2, connect_timeout=2,
                                                     tls=context))  # fmt: skip
    assert up.upload(sample(wav)).outcome is Outcome.DELIVERED and asked == []


def test_a_connection_is_kept_and_reused(serve: Callable[..., RawServer], wav: Path) -> None:
    srv = serve(answer())
    up = wire_uploader(srv.url)
    answers = [up.upload(sample(wav)) for _ in range(3)]
    assert [a.outcome for a in answers] == [Outcome.DELIVERED] * 3
    assert srv.script.connections == 1


@pytest.mark.parametrize("closing", [
    answer(extra="Connection: close\r\n"),
    b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + OK,  # ends at close
])  # fmt: skip
def test_an_answer_that_ends_the_connection_is_not_reused(
    serve: Callable[..., RawServer], wav: Path, closing: bytes
) -> None:
    srv = serve((closing, True))
    up = wire_uploader(srv.url)
    assert [up.upload(sample(wav)).outcome for _ in range(2)] == [Outcome.DELIVERED] * 2
    assert srv.script.connections == 2


def test_an_idle_connection_the_server_closed_is_not_used(
    serve: Callable[..., RawServer], wav: Path
) -> None:
    """A keep-alive answer, then the server hangs up while the connection is idle: the
    next upload goes on a new connection instead of failing on the dead one."""
    srv = serve((answer(), True))
    up = wire_uploader(srv.url)
    assert up.upload(sample(wav)).outcome is Outcome.DELIVERED
    assert srv.script.hung_up.acquire(timeout=5)
    second = up.upload(sample(wav))
    assert second.outcome is Outcome.DELIVERED, second.reason
    assert srv.script.connections == 2


def test_a_reused_connection_without_an_answer_is_tried_again_once(
    serve: Callable[..., RawServer], wav: Path
) -> None:
    """The server read the request and hung up without a word: sent once more on a new
    connection (a stale keep-alive connection looks the same), and no more than that."""
    srv = serve(answer(), (b"", True))
    up = wire_uploader(srv.url)
    assert up.upload(sample(wav)).outcome is Outcome.DELIVERED
    got = up.upload(sample(wav))
    assert (got.outcome, got.reason) == (
        Outcome.RETRY,
        "network error: RemoteProtocolError: Server disconnected without sending a response.",
    )
    assert (len(srv.script.seen), srv.script.connections) == (3, 2)


@pytest.mark.parametrize(("reply", "sample_id"), [
    (b"HTTP/1.1 100 Continue\r\n\r\n" + answer(), 9),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"".join(b"%x;ext=1\r\n%s\r\n" % (len(OK[i:i + 7]), OK[i:i + 7])
                for i in range(0, len(OK), 7)) + b"0\r\nX-Trailer: 1\r\n\r\n", 9),
    (answer(gzip.compress(OK), extra="Content-Encoding: gzip\r\n"), 9),
])  # fmt: skip
def test_every_framing_of_an_answer_is_read(
    serve: Callable[..., RawServer], wav: Path, reply: bytes, sample_id: int
) -> None:
    srv = serve(reply)
    up = wire_uploader(srv.url)
    got = [up.upload(sample(wav)) for _ in range(2)]
    assert [(a.outcome, a.sample_id) for a in got] == [(Outcome.DELIVERED, sample_id)] * 2
    assert srv.script.connections == 1  # read whole by its framing: reused


def test_an_answer_over_the_limit_is_cut_and_its_connection_dropped(
    serve: Callable[..., RawServer], wav: Path
) -> None:
    srv = serve(answer(b"x" * (2 * 1024 * 1024)))
    up = wire_uploader(srv.url)
    got = [up.upload(sample(wav)) for _ in range(2)]
    assert [a.reason for a in got] == ["the service's answer was over 1024 KiB: not read"] * 2
    assert srv.script.connections == 2


@pytest.mark.parametrize(("reply", "reason"), [
    ((b"", True), "network error: RemoteProtocolError: Server disconnected without sending"
                  " a response."),
    (b"HTTP/2 200\r\n\r\n", "network error: RemoteProtocolError: not an HTTP/1.1 status line:"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "network error: RemoteProtocolError: not a"
                                                 " header line:"),
    ((b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{", True),
     "network error: RemoteProtocolError: the server closed the connection inside the answer"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n", "network error: RemoteProtocolError:"
                                                        " a bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "network error:"
     " RemoteProtocolError: a bad chunk size"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", "network error: RemoteProtocolError:"
                                                        " the answer has more than 100 headers"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000 + b"\r\n\r\n", "network error:"
     " RemoteProtocolError: the answer's headers are over 65536 bytes"),
])  # fmt: skip
def test_a_broken_answer_is_retried_and_named(
    serve: Callable[..., RawServer], wav: Path, reply: bytes | tuple[bytes, bool], reason: str
) -> None:
    answer_ = wire_uploader(serve(reply).url).upload(sample(wav))
    assert answer_.outcome is Outcome.RETRY and answer_.sample_id is None
    assert answer_.reason.startswith(reason), answer_.reason


def test_a_refused_connection_is_retried_and_named(wav: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    got = wire_uploader(url).upload(sample(wav))
    assert got.outcome is Outcome.RETRY
    assert got.reason == "network error: ConnectError: [Errno 111] Connection refused"


def test_a_silent_server_times_out(wav: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        up = Uploader(None, url, Secret(KEY), wire=Wire(url, timeout=0.2, connect_timeout=2))
        got = up.upload(sample(wav))
    assert (got.outcome, got.reason, got.timed_out) == (Outcome.RETRY, "timed out: ReadTimeout",
                                                        True)  # fmt: skip


def test_a_key_with_a_line_break_is_not_sent_and_not_shown(
    serve: Callable[..., RawServer], wav: Path
) -> None:
    srv = serve(answer())
    wire = Wire(srv.url, timeout=2, connect_timeout=2)
    got = Uploader(None, srv.url, Secret("ei_k\r\nX-Evil: 1"), wire=wire).upload(sample(wav))
    assert got.outcome is Outcome.RETRY and "ei_k" not in got.reason and "Evil" not in got.reason
    assert got.reason == ("network error: LocalProtocolError: the x-api-key header holds a line"
                          " break or NUL")  # fmt: skip
    assert srv.script.seen == []


def test_a_file_shorter_than_announced_is_not_sent_short(
    serve: Callable[..., RawServer], tmp_path: Path
) -> None:
    """The length is announced before the body: a file that shrank after it was checked
    must end the request, not leave the server waiting for bytes that never come."""
    srv = serve(answer())
    wire = Wire(srv.url, timeout=2, connect_timeout=2)
    with pytest.raises(LocalProtocolError, match="got shorter"):
        wire.post("/api/training/files", [], [b"head", (io.BytesIO(b"abc"), 10)], limit=1024)
    assert srv.script.hung_up.acquire(timeout=5)  # that connection is given up
    assert wire.post("/api/training/files", [], [b"ok"], limit=1024).status == 200
    assert [s.body for s in srv.script.seen] == [b"headabc", b"ok"]  # the first cut short
    assert srv.script.connections == 2


def test_every_body_byte_passes_the_hook_in_bounded_pieces(
    serve: Callable[..., RawServer], tmp_path: Path
) -> None:
    """The bandwidth cap and the progress tick see the whole body, small files too."""
    srv = serve(answer())
    pieces: list[int] = []
    wire = Wire(srv.url, timeout=2, connect_timeout=2, on_body=pieces.append, piece_bytes=1000)
    body = [b"a" * 2500, (io.BytesIO(b"b" * 1500), 1500), b"c" * 10]
    assert wire.post("/x", [], body, limit=1024).status == 200
    assert sum(pieces) == 4010 and max(pieces) <= 1000
    assert srv.script.seen[0].body == b"a" * 2500 + b"b" * 1500 + b"c" * 10


def test_the_host_header_names_the_origin() -> None:
    assert Wire("http://[::1]:8080/base/", timeout=1, connect_timeout=1).authority == "[::1]:8080"
    assert Wire("https://ingestion.example", timeout=1, connect_timeout=1).authority == (
        "ingestion.example"
    )
    with pytest.raises(ValueError, match="not an http"):
        Wire("ftp://x", timeout=1, connect_timeout=1)


def test_the_multipart_body_joins_what_lies_between_streamed_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.write_bytes(b"1")
    b.write_bytes(b"2")
    with open(b, "rb") as handle:
        pieces = multipart([sample(a), sample(b), sample(a)],
                           [(b"1", 1), (handle, 1), (b"1", 1)], b"XX")  # fmt: skip
    assert [type(p).__name__ for p in pieces] == ["bytes", "tuple", "bytes"]
