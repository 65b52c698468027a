"""The Studio client at its seam (httpx.MockTransport): error classes, retries, validation."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import httpx
import pytest

from edge_uploader.errors import (
    AuthError,
    ConfigError,
    InputError,
    Outcome,
    PermanentError,
    TransientError,
    UrlError,
)
from edge_uploader.project.pool import bounded_map
from edge_uploader.remote.studio import (
    MAX_RESPONSE_BYTES,
    MetaFilter,
    ProjectNotFound,
    SampleNotFound,
    StudioClient,
)
from edge_uploader.secrets import Secret

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, *, project_id: int | None = 1, attempts: int = 3) -> StudioClient:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return StudioClient(
        http, "http://studio.test/v1", Secret("ei_k"), project_id=project_id,
        retry_attempts=attempts, retry_base_seconds=0.001, retry_max_seconds=0.002,
        rng=lambda: 1.0,
    )  # fmt: skip


def sample(sid: int, **meta: object) -> dict[str, object]:
    return {"id": sid, "filename": f"f{sid}.wav", "category": "training", "label": "idle",
            "metadata": meta, "sha256Hash": "ab" * 32}  # fmt: skip


def test_transient_failures_are_retried_with_retry_after() -> None:
    calls: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        if len(calls) == 1:
            return httpx.Response(503, headers={"retry-after": "0"}, text="busy")
        if len(calls) == 2:
            raise httpx.ConnectError("refused", request=req)
        return httpx.Response(200, json={"success": True, "sample": sample(5, a="1")})

    got = client(handler).get_sample(5)
    assert got.metadata == {"a": "1"} and len(calls) == 3
    assert calls[0].headers["x-api-key"] == "ei_k"
    assert calls[0].url.path == "/v1/api/1/raw-data/5"


def test_transient_failures_give_up_after_the_attempts() -> None:
    calls = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        return httpx.Response(429, text="slow down")

    with pytest.raises(TransientError, match="HTTP 429"):
        client(handler, attempts=4).get_sample(5)
    assert len(calls) == 4


def test_cancel_stops_the_retry_wait() -> None:
    cancel = threading.Event()
    cancel.set()
    c = client(lambda r: httpx.Response(500, text="x"))
    c.cancel = cancel
    with pytest.raises(TransientError):
        c.get_sample(1)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_is_an_auth_error_and_not_retried(status: int) -> None:
    calls = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        return httpx.Response(status, json={"success": False, "error": "Invalid API key"})

    with pytest.raises(AuthError, match="Invalid API key") as err:
        client(handler).delete_sample(3)
    assert len(calls) == 1
    assert "ei_k" not in str(err.value)


def test_success_false_is_mapped_with_the_service_text() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/7"):
            return httpx.Response(200, json={"success": False, "error": "Sample not found"})
        if req.url.path.endswith("/8"):
            return httpx.Response(200, json={"success": False, "error": "Project not found"})
        return httpx.Response(200, json={"success": False, "error": "Quota exceeded"})

    c = client(handler)
    with pytest.raises(SampleNotFound):
        c.get_sample(7)
    assert c.delete_sample(7) is False
    with pytest.raises(ProjectNotFound):
        c.get_sample(8)
    with pytest.raises(PermanentError, match="Quota exceeded"):
        c.get_sample(9)


def test_the_service_text_reaches_no_terminal_as_escape_sequences() -> None:
    """Studio error text is cleaned like the uploader's: one printable line, bounded."""
    evil = "Quota\x1b[2J\x1b]0;owned\x07 exceeded\n\rnext line" + "x" * 1000

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/1"):
            return httpx.Response(200, json={"success": False, "error": evil})
        return httpx.Response(500, content=evil.encode())

    for sid, kind in ((1, PermanentError), (2, TransientError)):
        with pytest.raises(kind) as err:
            client(handler, attempts=1).get_sample(sid)
        text = str(err.value)
        assert text.isprintable() and "\x1b" not in text and "\n" not in text
        assert "Quota" in text and len(text) < 400


def test_a_redirect_is_a_wrong_url_and_is_not_followed() -> None:
    calls: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        return httpx.Response(302, headers={"location": "https://elsewhere/login"})

    with pytest.raises(UrlError, match="redirect to 'https://elsewhere/login': check") as err:
        client(handler).get_sample(3)
    assert isinstance(err.value, AuthError) and err.value.outcome is Outcome.PAUSE
    assert len(calls) == 1


def test_responses_are_validated() -> None:
    bodies = {
        "/v1/api/1/raw-data/1": {"success": True, "sample": sample(1, n=5)},
        "/v1/api/1/raw-data/2": {"success": True, "sample": {"id": "2", "metadata": {}}},
        "/v1/api/1/raw-data/3": {"success": True, "sample": sample(4)},
        "/v1/api/1/raw-data/4": {"success": True, "sample": {"id": 4, "metadata": None}},
    }

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/5"):
            return httpx.Response(200, content=b"x" * (MAX_RESPONSE_BYTES + 10))
        if req.url.path.endswith("/6"):
            return httpx.Response(200, text="<html>login</html>")
        return httpx.Response(200, json=bodies[req.url.path])

    c = client(handler, attempts=1)
    with pytest.raises(PermanentError, match="value of 'n' is int, not a string"):
        c.get_sample(1)
    with pytest.raises(PermanentError, match="not a number"):
        c.get_sample(2)
    with pytest.raises(PermanentError, match="sent sample 4"):
        c.get_sample(3)
    assert c.get_sample(4).metadata == {}
    with pytest.raises(PermanentError, match="larger than"):
        c.get_sample(5)
    with pytest.raises(TransientError, match="without a JSON object"):
        c.get_sample(6)


def test_project_discovery() -> None:
    projects: list[dict[str, object]] = [{"id": 42, "name": "p"}]

    def handler(req: httpx.Request) -> httpx.Response:
        assert req.url.path == "/v1/api/projects"
        return httpx.Response(200, json={"success": True, "projects": projects})

    assert client(handler, project_id=None).project_id == 42
    projects.append({"id": 43, "name": "q"})
    with pytest.raises(ConfigError, match=r"2 projects \(42, 43\); set project_id"):
        _ = client(handler, project_id=None).project_id
    projects.clear()
    with pytest.raises(ConfigError, match="no project"):
        _ = client(handler, project_id=None).project_id


def test_unknown_project_is_a_config_error() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"success": False, "error": "Project not found"})

    with pytest.raises(ConfigError, match=r"studio\.project_id: project 1 is unknown"):
        client(handler).check_project()


def test_merge_reads_merges_and_writes_the_full_map() -> None:
    writes: list[dict[str, object]] = []
    current = {"device_id": "pi", "site": "old", "keep": "me"}

    def handler(req: httpx.Request) -> httpx.Response:
        if req.method == "POST":
            body = json.loads(req.content)
            writes.append(body)
            current.clear()
            current.update(body["metadata"])
            return httpx.Response(200, json={"success": True})
        return httpx.Response(200, json={"success": True, "sample": sample(3, **current)})

    c = client(handler)
    m = c.merge_metadata(3, {"site": "lab-a", "location": "desk"})
    assert m.written and m.changed == {"site": ("old", "lab-a"), "location": (None, "desk")}
    assert writes == [{"metadata": {"device_id": "pi", "site": "lab-a", "keep": "me",
                                    "location": "desk"}}]  # fmt: skip
    again = c.merge_metadata(3, {"site": "lab-a"})
    assert not again.written and not again.changed and len(writes) == 1


def test_set_metadata_refuses_values_that_are_not_strings_before_sending() -> None:
    sent = []
    c = client(lambda r: sent.append(r) or httpx.Response(200, json={"success": True}))
    with pytest.raises(InputError, match="must be strings"):
        c.set_metadata(3, {"n": 5})  # type: ignore[dict-item]
    assert sent == []


def test_listing_pages_and_filters() -> None:
    seen: list[httpx.QueryParams] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req.url.params)
        offset = int(req.url.params["offset"])
        ids = list(range(1, 251))[offset : offset + int(req.url.params["limit"])]
        return httpx.Response(200, json={"success": True, "totalCount": 250,
                                         "samples": [sample(i) for i in ids]})  # fmt: skip

    c = client(handler)
    got = [s.id for s in c.list_samples("training", labels=["idle"], filename="f1",
                                        metadata=[MetaFilter("site", "neq", ("a",))])]  # fmt: skip
    assert got == list(range(1, 251))
    assert [p["offset"] for p in seen] == ["0", "100", "200"]
    assert seen[0]["category"] == "training" and json.loads(seen[0]["labels"]) == ["idle"]
    assert json.loads(seen[0]["metadata"]) == [{"key": "site", "op": "neq", "values": ["a"]}]


def test_a_service_that_caps_limit_is_still_read_in_full() -> None:
    """A short page is not the end while totalCount says more: a service that allows
    fewer samples per page than asked must not cut an audit or a backfill short."""
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        offset = int(req.url.params["offset"])
        seen.append(req.url.params["offset"])
        ids = list(range(1, 131))[offset : offset + 50]  # caps at 50 whatever was asked
        return httpx.Response(200, json={"success": True, "totalCount": 130,
                                         "samples": [sample(i) for i in ids]})  # fmt: skip

    got = [s.id for s in client(handler).list_samples("testing", page_size=100)]
    assert got == list(range(1, 131))
    assert seen == ["0", "50", "100"]


def test_a_server_that_ignores_offset_does_not_list_forever() -> None:
    calls = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        limit = int(req.url.params["limit"])  # always the first page, no totalCount
        return httpx.Response(
            200, json={"success": True, "samples": [sample(i) for i in range(1, limit + 1)]}
        )

    c = client(handler)
    with pytest.raises(PermanentError, match="same page twice"):
        list(c.list_samples("training"))
    assert len(calls) == 2


def test_bounded_map_keeps_order_and_returns_errors() -> None:
    def fn(i: int) -> int:
        if i == 3:
            raise ValueError("three")
        return i * 2

    out = list(bounded_map(fn, range(6), 3))
    assert [i for i, _ in out] == list(range(6))
    assert isinstance(out[3][1], ValueError) and out[5][1] == 10
