"""Several files in one request: which rows may share one, what goes on the wire, and how
the answer is read file by file (``httpx.MockTransport`` at the seam)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_uploader.core.batching import requests
from edge_uploader.remote.ingestion import Outcome, Sample, Uploader, make_client
from edge_uploader.secrets import Secret
from edge_uploader.store.queue import Row, State
from tests.unit.multipart import read_parts

KEY = "ei_0123456789abcdef"
Reply = Callable[[httpx.Request], httpx.Response]


def row(i: int, size: int = 100, **over: Any) -> Row:
    fields: dict[str, Any] = {
        "id": i, "path": f"/d/{i}.wav", "size": size, "mtime_ns": 1, "state": State.UPLOADING,
        "source": "test", "label": "idle", "category": "training", "metadata": {"s": "1"},
        "upload_name": None, "extra": None, "after_upload": "keep", "move_to": None,
        "allow_duplicates": False, "batch": None, "attempts": 0, "next_attempt_at": 0.0,
        "last_error": None, "sha256": None, "sample_id": None, "enqueued_at": 0.0,
        "delivered_at": None,
    }  # fmt: skip
    fields.update(over)
    return Row(**fields)


def ids(grouped: list[list[Row]]) -> list[list[int]]:
    return [[r.id for r in g] for g in grouped]


def test_rows_that_agree_share_within_the_caps() -> None:
    rows = [row(i) for i in range(7)]
    assert ids(requests(rows, 3, 10_000)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert ids(requests(rows, 10, 250)) == [[0, 1], [2, 3], [4, 5], [6]]
    assert ids(requests(rows, 1, 10_000)) == [[i] for i in range(7)]


def test_rows_that_differ_do_not_share() -> None:
    rows = [row(0), row(1, label="walk"), row(2, metadata={"s": "2"}), row(3, category="testing"),
            row(4, allow_duplicates=True), row(5), row(6, label=None), row(7, label=None)]  # fmt: skip
    assert ids(requests(rows, 10, 10_000)) == [[0, 5], [1], [2], [3], [4], [6, 7]]


def test_side_parts_lone_rows_and_files_over_the_byte_limit_go_alone() -> None:
    rows = [row(0), row(1, size=2_000_000), row(2, extra={"parts": []}), row(3), row(4)]
    assert ids(requests(rows, 10, 1_000_000, alone={3})) == [[0, 4], [1], [2], [3]]


def test_large_files_share_up_to_the_byte_limit() -> None:
    """A large file is streamed inside the shared body: only the byte limit splits."""
    rows = [row(0), row(1, size=400_000), row(2, size=400_000), row(3, size=400_000), row(4)]
    assert ids(requests(rows, 10, 1_000_000)) == [[0, 1, 2], [3, 4]]


@pytest.fixture
def files(tmp_path: Path) -> list[Sample]:
    out = []
    for i in range(3):
        p = tmp_path / f"f{i}.wav"
        p.write_bytes(b"sample %d" % i)
        out.append(Sample(path=p, file_name=p.name, category="training", label="idle",
                          metadata={"s": "1"}))  # fmt: skip
    return out


def send(files: list[Sample], reply: Reply) -> tuple[list[Any], list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return reply(request)

    client = make_client(concurrency=1, timeout=5, connect_timeout=5,
                         transport=httpx.MockTransport(handler))  # fmt: skip
    with client:
        return Uploader(client, "http://ingest.test", Secret(KEY)).upload_many(files), seen


def test_one_request_carries_every_file_with_the_shared_headers(files: list[Sample]) -> None:
    ok = {"success": True, "files": [{"success": True, "sampleId": 10 + i} for i in range(3)]}
    answers, seen = send(files, lambda r: httpx.Response(200, json=ok))
    (request,) = seen
    assert request.headers["x-label"] == "idle" and request.headers["x-metadata"] == '{"s":"1"}'
    assert [(p.name, p.filename) for p in read_parts(request)] == [
        ("data", "f0.wav"), ("data", "f1.wav"), ("data", "f2.wav")]  # fmt: skip
    assert [a.outcome for a in answers] == [Outcome.DELIVERED] * 3
    assert [a.sample_id for a in answers] == [10, 11, 12]
    assert [a.sha256 for a in answers] == [
        hashlib.sha256(b"sample %d" % i).hexdigest() for i in range(3)]  # fmt: skip
    assert [a.bytes_sent for a in answers] == [8, 8, 8]


def test_each_file_gets_its_own_result(files: list[Sample]) -> None:
    body = {"success": False, "files": [
        {"success": True, "sampleId": 1},
        {"success": False, "error": "An item with this hash already exists (ids: 7)"},
        {"success": False, "error": "Could not parse this CSV file"},
    ]}  # fmt: skip
    answers, _ = send(files, lambda r: httpx.Response(200, json=body))
    assert [a.outcome for a in answers] == [Outcome.DELIVERED, Outcome.DUPLICATE, Outcome.DEAD]
    assert answers[2].reason == "Could not parse this CSV file"
    assert answers[1].bytes_sent == 0 and answers[1].sha256 is not None


def test_a_request_refused_as_a_whole_sends_each_file_alone(files: list[Sample]) -> None:
    answers, _ = send(files, lambda r: httpx.Response(400, json={"error": "bad request"}))
    assert all(a.outcome is Outcome.RETRY and a.alone for a in answers)


@pytest.mark.parametrize(
    ("status", "outcome"), [(401, Outcome.PAUSE), (503, Outcome.RETRY), (500, Outcome.RETRY)]
)
def test_a_service_answer_applies_to_every_file(files: list[Sample], status: int,
                                                outcome: Outcome) -> None:  # fmt: skip
    answers, _ = send(files, lambda r: httpx.Response(status, text="no"))
    assert [a.outcome for a in answers] == [outcome] * 3
    assert not any(a.alone for a in answers)


def test_a_miscounted_answer_is_retried(files: list[Sample]) -> None:
    body = {"success": True, "files": [{"success": True, "sampleId": 1}]}
    answers, _ = send(files, lambda r: httpx.Response(200, json=body))
    assert [a.outcome for a in answers] == [Outcome.RETRY] * 3
    assert "listed 1 files for the 3 sent" in answers[0].reason


def test_a_vanished_file_is_answered_and_the_rest_still_go(files: list[Sample]) -> None:
    files[1].path.unlink()
    ok = {"success": True, "files": [{"success": True, "sampleId": i} for i in (1, 2)]}
    answers, seen = send(files, lambda r: httpx.Response(200, json=ok))
    assert [a.outcome for a in answers] == [Outcome.DELIVERED, Outcome.GONE, Outcome.DELIVERED]
    assert [p.filename for p in read_parts(seen[0])] == ["f0.wav", "f2.wav"]


def test_a_timeout_is_back_pressure_for_every_file(files: list[Sample]) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    answers, _ = send(files, slow)
    assert all(a.outcome is Outcome.RETRY and a.timed_out for a in answers)


class _Writes(httpx.BaseTransport):
    """Records the body as the pieces a connection would write, then answers 200."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.writes = list(request.stream)  # type: ignore[arg-type]
        n = request.headers["content-length"]
        assert int(n) == sum(map(len, self.writes))
        ok = {"success": True, "files": [{"success": True, "sampleId": i + 1} for i in range(21)]}
        return httpx.Response(200, json=ok)


def test_a_streamed_body_goes_out_in_few_writes_and_whole(tmp_path: Path) -> None:
    """20 small files and one of 200 KiB: the large file streams from disk, and the small
    pieces around it (each part's headers, each small file, the boundaries) are joined,
    not written one system call each."""
    samples = []
    for i in range(21):
        p = tmp_path / f"f{i:02d}.wav"
        p.write_bytes(bytes([i]) * (200 * 1024 if i == 10 else 2000))
        samples.append(Sample(path=p, file_name=p.name, category="training", label="idle",
                              metadata={"s": "1"}))  # fmt: skip
    transport = _Writes()
    client = make_client(concurrency=1, timeout=5, connect_timeout=5, transport=transport)
    with client:
        uploader = Uploader(client, "http://ingest.test", Secret(KEY), transport=transport)
        answers = uploader.upload_many(samples)
    assert [a.outcome for a in answers] == [Outcome.DELIVERED] * 21
    assert len(transport.writes) <= 10  # was one per piece: over 80
    body = b"".join(transport.writes)
    boundary = body.split(b"\r\n", 1)[0][2:].decode()  # the body opens with --boundary
    kind = {"content-type": f"multipart/form-data; boundary={boundary}"}
    parts = read_parts(httpx.Request("POST", "http://ingest.test", content=body, headers=kind))
    assert [p.filename for p in parts] == [s.file_name for s in samples]
    assert [len(p.body) for p in parts] == [200 * 1024 if i == 10 else 2000 for i in range(21)]
