"""Ingestion endpoints: bodies, labels, metadata, duplicates, limits, signatures."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from edge_uploader.localserver import LocalIngestionServer

from .conftest import API_KEY, acquisition, make_client, upload


def test_success_body_and_index_line(client: httpx.Client, server: LocalIngestionServer) -> None:
    r = upload(client, headers={"x-label": "idle", "x-upload-source": "TEST"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "success": True,
        "files": [{"success": True, "sampleId": 1, "projectId": 1, "fileName": "idle.01.wav"}],
    }
    [line] = server.index_lines()
    assert line["sampleId"] == 1
    assert line["projectId"] == 1
    assert line["category"] == "training"
    assert line["fileName"] == line["originalFileName"] == "idle.01.wav"
    assert line["label"] == "idle"
    assert line["metadata"] == {}
    assert line["size"] == len(b"RIFF....WAVE")
    assert line["added"].endswith("Z")
    assert line["headers"]["x-api-key"] == "<redacted>"
    assert line["headers"]["x-upload-source"] == "TEST"
    assert API_KEY not in json.dumps(line)
    stored = server.data_dir / "files" / "1" / "idle.01.wav"
    assert stored.read_bytes() == b"RIFF....WAVE"
    assert upload(client, "b.wav", b"other").json()["files"][0]["sampleId"] == 2


def test_label_percent_decoding_round_trip(
    client: httpx.Client, server: LocalIngestionServer
) -> None:
    r = upload(client, headers={"x-label": "wave%20%C3%A9%2F%C3%BC"})
    assert r.json()["success"] is True
    [sample] = server.samples()
    assert sample.label == "wave é/ü"
    assert server.index_lines()[0]["headers"]["x-label"] == "wave%20%C3%A9%2F%C3%BC"


def test_no_label_and_inferred_label(client: httpx.Client, server: LocalIngestionServer) -> None:
    upload(client, "noise.7.wav", b"a", headers={"x-label": "", "x-no-label": "1"})
    upload(client, "noise.8.wav", b"b")
    upload(client, "my car_2-x.final.png", b"c")
    upload(client, "é.png", b"d")
    labels = [s.label for s in server.samples()]
    assert labels == [None, "noise", "my car_2-x", None]


def test_metadata_valid_and_unicode_forms(
    client: httpx.Client, server: LocalIngestionServer
) -> None:
    escaped = json.dumps({"site": "Zürich", "n": "1"}, ensure_ascii=True)
    assert upload(client, "a.wav", b"1", headers={"x-metadata": escaped}).status_code == 200
    latin1 = '{"site":"Zürich"}'.encode("latin-1")  # what the CLI (undici) puts on the wire
    assert upload(client, "b.wav", b"2", headers={"x-metadata": latin1}).status_code == 200
    utf8 = '{"site":"Zürich"}'.encode()
    assert upload(client, "c.wav", b"3", headers={"x-metadata": utf8}).status_code == 200
    metas = [s.metadata for s in server.samples()]
    assert metas == [{"site": "Zürich", "n": "1"}, {"site": "Zürich"}, {"site": "Zürich"}]


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('["a"]', "must be a JSON object"),
        ('{"count": 3}', "must be strings"),
        ('{"a": null}', "must be strings"),
    ],
)
def test_metadata_refused(
    client: httpx.Client, server: LocalIngestionServer, header: str, fragment: str
) -> None:
    r = upload(client, headers={"x-metadata": header})
    assert r.status_code == 400
    assert r.json()["success"] is False
    assert fragment in r.json()["error"]
    assert server.samples() == []
    assert upload(client).status_code == 200  # the connection is still usable


def test_oversized_headers_refused(client: httpx.Client) -> None:
    big = json.dumps({"k": "x" * 17000})
    r = upload(client, headers={"x-metadata": big})
    assert r.status_code == 431


def test_duplicates_refused_with_200_style(
    client: httpx.Client, server: LocalIngestionServer
) -> None:
    dup = {"x-disallow-duplicates": "1"}
    assert upload(client, headers=dup).json()["success"] is True
    r = upload(client, "renamed.wav", headers=dup)
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is False
    assert body["files"][0]["success"] is False
    assert body["files"][0]["error"].startswith("An item with this hash already exists")
    assert upload(client).json()["success"] is True  # without the header it is stored
    assert len(server.samples()) == 2


def test_duplicates_refused_with_400_style(data_dir: Path) -> None:
    with (
        LocalIngestionServer(data_dir, duplicate_style="400", quiet=True) as srv,
        make_client(srv.url, "ei_any") as c,
    ):
        dup = {"x-disallow-duplicates": "1"}
        assert upload(c, headers=dup).status_code == 200
        r = upload(c, headers=dup)
        assert r.status_code == 400
        assert r.json()["success"] is False
        assert r.json()["error"].startswith("An item with this hash already exists")
        assert len(srv.samples()) == 1


def test_unknown_category_and_route(client: httpx.Client) -> None:
    r = upload(client, category="bogus")
    assert r.status_code == 400
    assert r.json()["success"] is False
    assert client.post("/api/training/other").status_code == 404
    not_multipart = client.post("/api/training/files", json={"a": 1})
    assert not_multipart.status_code == 400 and "multipart" in not_multipart.json()["error"]
    assert client.get("/nothing").status_code == 404


@pytest.mark.parametrize("key", [None, "", "ei_wrong"])
def test_bad_api_key_is_401(server: LocalIngestionServer, key: str | None) -> None:
    with make_client(server.url, key) as c:
        r = upload(c)
        assert r.status_code == 401
        assert r.json() == {"success": False, "error": "Invalid API key"}
        assert c.get("/v1/api/projects").status_code == 401
    assert server.samples() == []


def test_oversize_file_is_413_and_connection_survives(
    client: httpx.Client, server: LocalIngestionServer
) -> None:
    r = upload(client, "big.bin", b"x" * (64 * 1024 + 1))
    assert r.status_code == 413
    assert r.json()["success"] is False
    assert upload(client, "small.bin", b"x" * (64 * 1024)).status_code == 200
    assert [s.filename for s in server.samples()] == ["small.bin"]
    assert list((server.data_dir / "tmp").iterdir()) == []


def test_hopelessly_large_body_gets_413_not_a_reset(client: httpx.Client) -> None:
    r = upload(client, "huge.bin", b"x" * (3 * 1024 * 1024))
    assert r.status_code == 413
    assert r.headers["connection"] == "close"
    assert upload(client).status_code == 200  # httpx reconnects


def test_bounding_boxes_part(client: httpx.Client, server: LocalIngestionServer) -> None:
    boxes = [{"label": "car", "x": 1, "y": 2, "width": 30, "height": 40}]
    labels = {"version": 1, "type": "bounding-box-labels", "boundingBoxes": {"car.1.jpg": boxes}}
    r = upload(
        client,
        "car.1.jpg",
        b"\xff\xd8jpeg",
        extra_parts=[("bounding_boxes.labels", json.dumps(labels).encode())],
    )
    assert r.json()["files"][0]["success"] is True
    assert len(r.json()["files"]) == 1
    assert server.index_lines()[0]["boundingBoxes"] == boxes
    bad = {"version": 1, "boundingBoxes": {"car.1.jpg": [{"label": "car"}]}}
    r = upload(
        client,
        "car.2.jpg",
        b"j2",
        extra_parts=[("bounding_boxes.labels", json.dumps(bad).encode())],
    )
    assert r.status_code == 400


def test_structured_labels_must_be_gap_free(client: httpx.Client) -> None:
    def part(ranges: list[tuple[int, int]]) -> list[tuple[str, bytes]]:
        labels = [
            {"label": f"l{i}", "startIndex": a, "endIndex": b} for i, (a, b) in enumerate(ranges)
        ]
        doc = {"version": 1, "type": "structured-labels", "structuredLabels": {"s.csv": labels}}
        return [("structured_labels.labels", json.dumps(doc).encode())]

    assert upload(client, "s.csv", b"1", extra_parts=part([(0, 4), (5, 9)])).status_code == 200
    assert upload(client, "s.csv", b"2", extra_parts=part([(0, 4), (6, 9)])).status_code == 400


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (acquisition("hmac-secret"), True),
        (acquisition("hmac-secret", tamper=True), False),
        (acquisition("wrong-key"), False),
        (acquisition(None, alg="none"), False),
    ],
)
def test_signature_verdict_is_stored(
    client: httpx.Client, server: LocalIngestionServer, body: bytes, expected: bool
) -> None:
    assert upload(client, "accel.json", body, content_type="application/json").status_code == 200
    [line] = server.index_lines()
    assert line["signatureValidate"] is expected
    assert line["intervalMs"] == 10
    assert line["deviceName"] == "aa:bb:cc:dd:ee:ff"
    assert line["sensors"] == [{"name": "accX", "units": "m/s2"}]


def test_signature_unchecked_without_hmac_key(data_dir: Path) -> None:
    with (
        LocalIngestionServer(data_dir, quiet=True) as srv,
        make_client(srv.url, "ei_x") as c,
    ):
        upload(c, "a.json", acquisition("hmac-secret"))
        assert srv.index_lines()[0]["signatureValidate"] is None


@pytest.mark.parametrize(
    "name",
    ["../../evil.wav", "..\\..\\evil.wav", "/etc/passwd", "..", "a\x00b.wav", "x" * 400 + ".wav"],
)
def test_client_file_names_stay_inside_data_dir(
    client: httpx.Client, server: LocalIngestionServer, name: str
) -> None:
    r = upload(client, name, b"payload")
    assert r.status_code == 200
    stored = r.json()["files"][0]["fileName"]
    assert "/" not in stored and "\\" not in stored and "\x00" not in stored
    assert stored not in ("", ".", "..") and len(stored.encode()) <= 200
    [sample] = server.samples()
    files_dir = (server.data_dir / "files").resolve()
    assert sample.path.resolve().parent == files_dir / "1"
    assert sample.path.read_bytes() == b"payload"
    assert not (server.data_dir.parent / "evil.wav").exists()


def test_chunked_upload(client: httpx.Client, server: LocalIngestionServer) -> None:
    boundary = "chunky-boundary"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="data"; filename="chunk.1.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
        "a,b\r\n1,2\r\n"
        f"\r\n--{boundary}--\r\n"
    ).encode()

    def pieces() -> object:
        for i in range(0, len(body), 7):
            yield body[i : i + 7]

    r = client.post(
        "/api/testing/files",
        content=pieces(),  # type: ignore[arg-type]
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 200, r.text
    [line] = server.index_lines()
    assert line["headers"]["transfer-encoding"] == "chunked"
    assert server.samples()[0].path.read_bytes() == b"a,b\r\n1,2\r\n"
    assert upload(client).status_code == 200  # keep-alive after a chunked body


def test_python_sdk_part_content_type_and_add_date_id(
    client: httpx.Client, server: LocalIngestionServer
) -> None:
    r = upload(client, "cat.png", b"png", content_type="multipart/form-data")
    assert r.status_code == 200
    r = upload(client, "cat.png", b"png2", headers={"x-add-date-id": "1"})
    name = r.json()["files"][0]["fileName"]
    assert name.startswith("cat.") and name.endswith(".png") and name != "cat.png"
    assert server.index_lines()[0]["contentType"] == "multipart/form-data"


def test_split_is_deterministic_by_hash(client: httpx.Client, server: LocalIngestionServer) -> None:
    for i in range(20):
        assert (
            upload(client, f"s.{i}.wav", f"sample {i}".encode(), category="split").status_code
            == 200
        )
    records = server.samples()
    assert {r.category for r in records} == {"training", "testing"}
    for r in records:
        assert r.requested_category == "split"
        assert r.category == ("testing" if int(r.sha256[:8], 16) % 5 == 0 else "training")


def test_legacy_data_endpoint(client: httpx.Client, server: LocalIngestionServer) -> None:
    body = acquisition("hmac-secret")
    headers = {"Content-Type": "application/json", "x-label": "wave"}
    r = client.post("/api/training/data", content=body, headers=headers)
    assert r.status_code == 421
    r = client.post(
        "/api/training/data", content=body, headers={**headers, "x-file-name": "wave%201.json"}
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text == "wave 1.json"
    [line] = server.index_lines()
    assert line["label"] == "wave"
    assert line["signatureValidate"] is True
    assert client.post("/api/validation/data", content=b"{}").status_code == 400


def test_concurrent_duplicates_store_exactly_one(server: LocalIngestionServer) -> None:
    def send(i: int) -> httpx.Response:
        with make_client(server.url) as c:
            return upload(c, f"same.{i}.wav", b"identical", headers={"x-disallow-duplicates": "1"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = [r.json() for r in pool.map(send, range(16))]
    assert sum(r["success"] for r in results) == 1
    assert len(server.samples()) == 1


def test_malformed_multipart_is_400(client: httpx.Client, server: LocalIngestionServer) -> None:
    r = client.post(
        "/api/training/files",
        content=b'--zz\r\nContent-Disposition: form-data; name="data"\r\n\r\nno end',
        headers={"Content-Type": "multipart/form-data; boundary=zz"},
    )
    assert r.status_code == 400
    assert r.json()["success"] is False
    assert upload(client).status_code == 200
    assert list((server.data_dir / "tmp").iterdir()) == []


def test_python_sdk_bounding_boxes_header(
    client: httpx.Client, server: LocalIngestionServer
) -> None:
    boxes = [{"label": "dog", "x": 0, "y": 0, "width": 5, "height": 5}]
    r = upload(client, "dog.jpg", b"j", headers={"x-bounding-boxes": json.dumps(boxes)})
    assert r.status_code == 200
    assert server.index_lines()[0]["boundingBoxes"] == boxes
    assert upload(client, "d2.jpg", b"k", headers={"x-bounding-boxes": "{"}).status_code == 400


def test_attachment_parts_are_not_samples(
    client: httpx.Client, server: LocalIngestionServer
) -> None:
    doc = {
        "version": 1,
        "type": "attachments",
        "attachments": {"a.jpg": [{"filename": "b.png"}, 7]},
    }
    r = upload(
        client,
        "a.jpg",
        b"main",
        extra_parts=[("attachments.labels", json.dumps(doc).encode()), ("b.png", b"extra")],
    )
    assert r.status_code == 200
    assert [f["fileName"] for f in r.json()["files"]] == ["a.jpg"]
    assert [s.filename for s in server.samples()] == ["a.jpg"]
