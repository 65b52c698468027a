"""``project audit`` against the real local server's Studio routes: leakage (exit 1), a
clean split (exit 0), samples without a group value, ``--by`` counts, the ``--json``
document, paging across many pages, and exit statuses for what stops an audit."""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

import httpx
import pytest

from edge_uploader.cli import main

from .conftest import API_KEY, Env


def upload(env: Env, name: str, category: str, metadata: dict[str, str]) -> int:
    """One sample through the real ingestion route, with its category and metadata."""
    with httpx.Client(base_url=env.server.url, headers={"x-api-key": API_KEY}) as client:
        r = client.post(f"/api/{category}/files", files={"data": (name, name.encode())},
                        headers={"x-metadata": json.dumps(metadata)})  # fmt: skip
    sample_id: int = r.json()["files"][0]["sampleId"]
    return sample_id


def audit(env: Env, *extra: str, code: int) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        got = main(["project", "audit", "--config", str(env.config_path), *extra])
    assert got == code, out.getvalue() + err.getvalue()
    return out.getvalue() + err.getvalue()


def audit_json(env: Env, *extra: str, code: int) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(audit(env, "--json", *extra, code=code))
    return doc


def seed_split(env: Env) -> dict[str, int]:
    """Three sessions on two sites: s1 only training, s2 only testing, s3 on both sides
    (2 training, 1 testing); one training sample with no session and one with an empty one."""
    ids = {}
    for name, cat, meta in [
        ("a1", "training", {"session": "s1", "site": "north"}),
        ("a2", "training", {"session": "s1", "site": "north"}),
        ("b1", "testing", {"session": "s2", "site": "south"}),
        ("c1", "training", {"session": "s3", "site": "north"}),
        ("c2", "training", {"session": "s3", "site": "south"}),
        ("c3", "testing", {"session": "s3", "site": "south"}),
        ("n1", "training", {"site": "north"}),
        ("n2", "training", {"session": "", "site": "east"}),
        ("v1", "validation", {"session": "s4"}),
    ]:
        ids[name] = upload(env, f"{name}.csv", cat, meta)
    return ids


def test_leakage_is_found_and_listed_with_counts(env: Env) -> None:
    seed_split(env)
    out = audit(env, code=1)
    assert "project 1: 9 sample(s) (training 6, testing 2, validation 1)" in out
    assert 'group key "session": 4 group(s)' in out
    assert "LEAKAGE: 1 group(s) have samples in both training and testing (3 sample(s))" in out
    row = next(line.split() for line in out.splitlines() if line.startswith("  s3 "))
    assert row == ["s3", "2", "1"]
    assert not any(line.startswith(("  s1 ", "  s2 ")) for line in out.splitlines())
    assert "result: LEAKAGE in 1 group(s)" in out


def test_a_clean_split_exits_0(env: Env) -> None:
    ids = seed_split(env)
    env.server.store.delete(ids["c3"])  # s3 is now training only
    out = audit(env, code=0)
    assert "LEAKAGE" not in out
    assert "result: the split is safe" in out


def test_samples_without_a_group_value_are_counted(env: Env) -> None:
    ids = seed_split(env)
    out = audit(env, code=1)
    assert "without a group value ('session' missing or empty): 2 sample(s) (training 2)" in out
    assert f"e.g. sample {ids['n1']}, {ids['n2']}" in out
    doc = audit_json(env, code=1)
    assert doc["ungrouped"]["samples"] == 2
    assert doc["ungrouped"]["sample_ids"] == [ids["n1"], ids["n2"]]


def test_group_key_option_and_the_configured_key(env: Env) -> None:
    """--group-key wins; without it the config's [ingestion] group_key is the key."""
    seed_split(env)
    by_site = audit_json(env, "--group-key", "site", code=1)
    assert by_site["group_key"] == "site" and by_site["groups"] == 3
    assert [g["group"] for g in by_site["leaking_groups"]] == ["south"]  # north: training only
    assert by_site["ungrouped"]["samples"] == 1  # v1 has no site
    text = env.config_path.read_text().replace(
        "concurrency = 4", 'concurrency = 4\ngroup_key = "site"'
    )
    env.config_path.write_text(text)
    assert audit_json(env, code=1)["group_key"] == "site"
    bad = audit(env, "--group-key", " bad", code=78)
    assert "--group-key" in bad


def test_by_counts_per_category_for_each_value(env: Env) -> None:
    seed_split(env)
    out = audit(env, "--by", "site", code=1)
    table = out[out.index("by site:") :].splitlines()
    assert table[1].split() == ["site", "training", "testing", "validation", "total"]
    rows = {line.split()[0]: line.split()[1:] for line in table[2:6]}
    assert rows == {"north": ["4", "0", "0", "4"], "south": ["1", "2", "0", "3"],
                    "east": ["1", "0", "0", "1"], "(unset)": ["0", "0", "1", "1"]}  # fmt: skip
    doc = audit_json(env, "--by", "site", code=1)
    assert doc["by"][-1] == {"value": None, "categories": {
        "training": 0, "testing": 0, "validation": 1, "post-processing": 0, "anomaly": 0}}  # fmt: skip


def test_json_schema(env: Env) -> None:
    seed_split(env)
    doc = audit_json(env, "--by", "site", code=1)
    assert set(doc) == {"project_id", "group_key", "by_key", "samples", "categories", "groups",
                        "leak", "leaking_groups", "ungrouped", "by", "skipped_categories",
                        "warnings"}  # fmt: skip
    assert doc["project_id"] == 1 and doc["by_key"] == "site" and doc["leak"] is True
    assert doc["samples"] == 9 and doc["groups"] == 4
    assert doc["categories"] == {"training": 6, "testing": 2, "validation": 1,
                                 "post-processing": 0, "anomaly": 0}  # fmt: skip
    assert doc["leaking_groups"] == [{"group": "s3", "categories": {
        "training": 2, "testing": 1, "validation": 0, "post-processing": 0, "anomaly": 0}}]  # fmt: skip
    assert set(doc["ungrouped"]) == {"samples", "categories", "sample_ids"}
    assert doc["skipped_categories"] == {} and doc["warnings"] == []
    clean = audit_json(env, "--group-key", "nothing", code=0)
    assert clean["by"] is None and clean["groups"] == 0 and clean["leaking_groups"] == []
    assert clean["ungrouped"]["samples"] == 9


def test_pages_through_many_pages(env: Env) -> None:
    """230 samples in pages of 7: every sample counted once, one request per page."""
    from edge_uploader.localserver import SeedSample

    env.server.store.seed(
        SeedSample("testing" if i % 10 == 9 else "training", f"f{i}.csv", None,
                   {"session": f"s{i // 10}", "site": f"site{i % 3}"})
        for i in range(230)
    )  # fmt: skip
    env.log.clear()
    doc = audit_json(env, "--page-size", "7", "--by", "site", code=1)
    assert doc["categories"]["training"] == 207 and doc["categories"]["testing"] == 23
    assert doc["groups"] == 23 and len(doc["leaking_groups"]) == 23
    assert all(g["categories"]["training"] == 9 for g in doc["leaking_groups"])
    assert sum(sum(b["categories"].values()) for b in doc["by"]) == 230
    lists = [p for m, p in env.log.requests() if m == "GET" and "/raw-data?" in p]
    training = [p for p in lists if "category=training" in p]
    assert len(training) == 30  # ceil(207 / 7)
    assert any("offset=203" in p and "limit=7" in p for p in training)
    text = audit(env, "--page-size", "7", code=1)
    assert "... and 3 more" in text  # 23 leaking groups, 20 shown


def test_a_refused_key_or_an_unreachable_service_is_not_a_clean_audit(env: Env) -> None:
    seed_split(env)
    (env.root / "key").write_text("ei_wrong\n")
    out = audit(env, code=69)
    assert "could not finish" in out and "refused the API key" in out
    assert "result:" not in out
    port = env.server.port
    env.server.stop()
    (env.root / "key").write_text(API_KEY + "\n")
    assert f"{port}" in env.config_path.read_text()
    out = audit(env, code=69)
    assert "could not finish" in out


@pytest.mark.parametrize("size", ["0", "1001", "x"])
def test_a_bad_page_size_is_a_usage_error(env: Env, size: str) -> None:
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(io.StringIO()):
        main(["project", "audit", "--config", str(env.config_path), "--page-size", size])
    assert exc.value.code == 2


def test_a_refused_extra_category_is_skipped_and_a_changing_project_warned() -> None:
    """At the client seam: a service that refuses to list ``validation`` (the audit needs
    only training and testing) and counts more training samples than it listed."""
    from edge_uploader.errors import PermanentError
    from edge_uploader.project.audit import run_audit

    from .test_studio_client import client, sample

    def handler(req: httpx.Request) -> httpx.Response:
        category = req.url.params.get("category")
        if req.url.path.endswith("/count"):
            return httpx.Response(
                200, json={"success": True, "count": 3 if category == "training" else 1}
            )
        if not req.url.path.endswith("/raw-data"):
            return httpx.Response(200, json={"success": True, "project": {"id": 1}})
        if category in ("validation", refused):
            return httpx.Response(200, json={"success": False, "error": "Invalid category"})
        ids = {"training": [1, 2], "testing": [3]}.get(category or "", [])
        page = [sample(i, session="s1") for i in ids] if req.url.params["offset"] == "0" else []
        return httpx.Response(200, json={"success": True, "samples": page, "totalCount": len(ids)})

    refused = "none"
    found = run_audit(client(handler), "session")
    assert found.leak and found.totals["training"] == 2 and found.totals["testing"] == 1
    assert (
        list(found.skipped) == ["validation"] and "Invalid category" in found.skipped["validation"]
    )
    assert len(found.warnings) == 1 and found.warnings[0].startswith("training: 2 sample(s) listed")
    refused = "testing"
    with pytest.raises(PermanentError, match="Invalid category"):
        run_audit(client(handler), "session")


def test_memory_follows_the_groups_not_the_samples() -> None:
    """30,000 samples in 8 groups: the audit's peak allocation stays near one page (the
    samples themselves would take well over 10 MB)."""
    import tracemalloc

    from edge_uploader.project.audit import run_audit

    from .test_studio_client import client

    total, page_size = 30_000, 500

    def handler(req: httpx.Request) -> httpx.Response:
        if not req.url.path.endswith("/raw-data"):
            n = total if req.url.params.get("category") == "training" else 0
            return httpx.Response(200, json={"success": True, "count": n, "project": {"id": 1}})
        if req.url.params["category"] != "training":
            return httpx.Response(200, json={"success": True, "samples": [], "totalCount": 0})
        offset = int(req.url.params["offset"])
        page = [
            {
                "id": i + 1,
                "filename": f"f{i}.csv",
                "metadata": {"session": f"s{i % 8}", "site": f"x{i}"},
            }
            for i in range(offset, min(offset + page_size, total))
        ]
        return httpx.Response(200, json={"success": True, "samples": page, "totalCount": total})

    studio = client(handler)
    tracemalloc.start()
    try:
        found = run_audit(studio, "session", page_size=page_size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found.totals["training"] == total and found.groups == 8
    assert peak < 3_000_000, f"peak {peak} bytes"
