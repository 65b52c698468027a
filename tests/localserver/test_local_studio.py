"""The Studio API subset under /v1: projects, listing with filters, metadata, delete."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from edge_uploader.localserver import LocalIngestionServer

from .conftest import HMAC_KEY, upload


def _meta(d: dict[str, str]) -> dict[str, str]:
    return {"x-metadata": json.dumps(d)}


@pytest.fixture
def populated(client: httpx.Client) -> httpx.Client:
    """Five samples: ids 1-3 training, 4-5 testing, with a mix of labels and metadata."""
    upload(client, "idle.1.wav", b"1", headers=_meta({"site": "A", "session": "s1"}))
    upload(client, "idle.2.wav", b"2", headers=_meta({"site": "B", "session": "s1"}))
    upload(client, "wave.1.wav", b"3", headers=_meta({"site": "A"}))
    upload(client, "wave.2.wav", b"4", category="testing")
    upload(client, "idle.3.wav", b"5", category="testing", headers=_meta({"site": "C"}))
    return client


def _ids(client: httpx.Client, **params: Any) -> list[int]:
    r = client.get("/v1/api/1/raw-data", params=params)
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True, body
    return [s["id"] for s in body["samples"]]


def test_projects_project_and_hmac(client: httpx.Client) -> None:
    project = {"id": 1, "name": "local", "owner": "edge-uploader"}
    assert client.get("/v1/api/projects").json() == {"success": True, "projects": [project]}
    assert client.get("/v1/api/1").json() == {"success": True, "project": project}
    assert client.get("/v1/api/1/devkeys/hmac").json() == {"success": True, "hmacKey": HMAC_KEY}
    r = client.get("/v1/api/2")
    assert r.status_code == 200
    assert r.json() == {"success": False, "error": "Project not found"}
    assert client.get("/v1/api/1/nothing-here").status_code == 404


def test_listing_shape_and_category(populated: httpx.Client) -> None:
    body = populated.get("/v1/api/1/raw-data", params={"category": "training"}).json()
    assert body["totalCount"] == 3
    sample = body["samples"][0]
    for key in (
        "id", "filename", "category", "label", "metadata", "sha256Hash", "deviceName",
        "deviceType", "intervalMs", "signatureValidate", "added", "created", "isDisabled",
    ):  # fmt: skip
        assert key in sample
    assert sample["metadata"] == {"site": "A", "session": "s1"}
    assert sample["isDisabled"] is False
    assert _ids(populated, category="testing") == [4, 5]
    assert _ids(populated, category="all") == [1, 2, 3, 4, 5]
    missing = populated.get("/v1/api/1/raw-data").json()
    assert missing["success"] is False and "category" in missing["error"]
    assert populated.get("/v1/api/1/raw-data", params={"category": "x"}).json()["success"] is False


def test_listing_filters(populated: httpx.Client) -> None:
    assert _ids(populated, category="all", labels='["wave"]') == [3, 4]
    assert _ids(populated, category="all", filename="idle.") == [1, 2, 5]
    assert _ids(populated, category="all", search="WAVE") == [3, 4]
    assert _ids(populated, category="all", minId=2, maxId=4) == [2, 3, 4]
    eq_a = [{"key": "site", "op": "eq", "values": ["A"]}]
    assert _ids(populated, category="all", metadata=json.dumps(eq_a)) == [1, 3]
    neq_a = [{"key": "site", "op": "neq", "values": ["A"]}]
    assert _ids(populated, category="all", metadata=json.dumps(neq_a)) == [2, 4, 5]
    has_session = [{"key": "session", "op": "eq"}]
    assert _ids(populated, category="all", metadata=json.dumps(has_session)) == [1, 2]
    none = [{"no_metadata": True}]
    assert _ids(populated, category="all", metadata=json.dumps(none)) == [4]
    either = [
        {"key": "site", "op": "eq", "values": ["C"]},
        {"no_metadata": True},
        {"filters_combinator": "or"},
    ]
    assert _ids(populated, category="all", metadata=json.dumps(either)) == [4, 5]
    bad = populated.get("/v1/api/1/raw-data", params={"category": "all", "labels": "[oops"})
    assert bad.status_code == 200 and bad.json()["success"] is False


def test_paging_and_count(populated: httpx.Client) -> None:
    r = populated.get("/v1/api/1/raw-data", params={"category": "all", "limit": 2, "offset": 1})
    body = r.json()
    assert [s["id"] for s in body["samples"]] == [2, 3]
    assert body["totalCount"] == 5
    assert _ids(populated, category="all", limit=2, offset=4) == [5]
    count = populated.get("/v1/api/1/raw-data/count", params={"category": "training"})
    assert count.json() == {"success": True, "count": 3}
    bad = populated.get("/v1/api/1/raw-data", params={"category": "all", "limit": "x"})
    assert bad.json()["success"] is False


def test_get_and_set_metadata_replaces(populated: httpx.Client) -> None:
    assert populated.get("/v1/api/1/raw-data/1").json()["sample"]["label"] == "idle"
    r = populated.post("/v1/api/1/raw-data/1/metadata", json={"metadata": {"site": "Z"}})
    assert r.json() == {"success": True}
    sample = populated.get("/v1/api/1/raw-data/1").json()["sample"]
    assert sample["metadata"] == {"site": "Z"}  # replaced, not merged: "session" is gone
    r = populated.post("/v1/api/1/raw-data/1/metadata", json={"metadata": {"n": 1}})
    assert r.status_code == 200
    assert r.json()["success"] is False and "strings" in r.json()["error"]
    r = populated.post("/v1/api/1/raw-data/99/metadata", json={"metadata": {}})
    assert r.json() == {"success": False, "error": "Sample not found"}
    unknown = populated.get("/v1/api/1/raw-data/99")
    assert unknown.status_code == 200
    assert unknown.json() == {"success": False, "error": "Sample not found"}


def test_delete_removes_from_listing_and_duplicate_checks(
    populated: httpx.Client, server: LocalIngestionServer
) -> None:
    assert populated.delete("/v1/api/1/raw-data/1").json() == {"success": True}
    assert _ids(populated, category="all") == [2, 3, 4, 5]
    assert populated.get("/v1/api/1/raw-data/1").json()["success"] is False
    assert populated.delete("/v1/api/1/raw-data/1").json()["success"] is False
    r = upload(populated, "idle.1.wav", b"1", headers={"x-disallow-duplicates": "1"})
    assert r.json()["files"][0] == {
        "success": True,
        "sampleId": 6,
        "projectId": 1,
        "fileName": "idle.1.wav",
    }
    changes = (server.data_dir / "changes.jsonl").read_text().splitlines()
    assert json.loads(changes[-1])["op"] == "delete"


def test_seeded_samples_page_like_uploaded_ones(
    populated: httpx.Client, server: LocalIngestionServer
) -> None:
    """The seeding path (large projects for the audit's tests and bench) gives samples
    that list, count and page by category like uploads, deletes included."""
    from edge_uploader.localserver import SeedSample

    seeded = [
        SeedSample("testing" if i % 3 == 0 else "training", f"s{i}.csv", "idle", {"n": str(i)})
        for i in range(250)
    ]
    assert server.store.seed(seeded) == 250
    assert populated.delete("/v1/api/1/raw-data/9").json() == {"success": True}  # s3, testing
    testing = [s for i, s in enumerate(seeded) if s.category == "testing" and i != 3]
    body = populated.get(
        "/v1/api/1/raw-data", params={"category": "testing", "limit": 10, "offset": 80}
    ).json()
    assert body["totalCount"] == 2 + len(testing)
    assert [s["filename"] for s in body["samples"]] == [s.filename for s in testing[78:88]]
    listed: list[int] = []
    while len(listed) < body["totalCount"]:
        listed += _ids(populated, category="testing", limit=37, offset=len(listed))
    assert listed == sorted(set(listed)) and 9 not in listed and len(listed) == 2 + len(testing)
    one = populated.get(f"/v1/api/1/raw-data/{listed[-1]}").json()["sample"]
    assert one["metadata"] == {"n": "249"} and one["category"] == "testing"
    count = populated.get("/v1/api/1/raw-data/count", params={"category": "all"}).json()
    assert count["count"] == 5 + 250 - 1
