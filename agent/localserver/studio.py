"""The small part of the Studio API (``/v1``) that the CLI and our own tests call.

Error behaviour (reference §11; the Studio API answers failures as data, not statuses):

- a bad ``x-api-key`` is HTTP 401 ``{"success":false,"error":"Invalid API key"}``
  (checked by the HTTP layer before this module runs);
- every other failure, including an unknown project id (``Project not found``) and an
  unknown or deleted sample (``Sample not found``), is HTTP 200
  ``{"success":false,"error":...}``, because Studio clients branch on ``success``;
- a path that is not one of these routes is HTTP 404 ``{"success":false,"error":...}``.

``POST .../raw-data/{id}/metadata`` **replaces** the whole map. Whether the real service
merges or replaces is uncertain, so clients should read, merge, then write the full map.
Listings are in ascending id order; ``sortBy`` and the date filters are ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from .store import PROJECT_ID, SampleRecord, SampleStore

PROJECT = {"id": PROJECT_ID, "name": "local", "owner": "edge-uploader"}
LIST_CATEGORIES = frozenset(
    {"training", "testing", "validation", "post-processing", "anomaly", "all"}
)

Response = tuple[int, dict[str, Any]]


class StudioError(Exception):
    """A request Studio answers with HTTP 200 ``success:false``."""


def _fail(error: str) -> Response:
    return 200, {"success": False, "error": error}


def sample_json(record: SampleRecord) -> dict[str, Any]:
    """The Studio ``Sample`` shape (the fields our clients read, plus a few useful extras)."""
    details = record.details
    interval = details.get("intervalMs")
    return {
        "id": record.id,
        "filename": record.filename,
        "category": record.category,
        "label": record.label,
        "metadata": record.metadata,
        "sha256Hash": record.sha256,
        "deviceName": details.get("deviceName"),
        "deviceType": details.get("deviceType"),
        "intervalMs": interval if interval is not None else 0,
        "frequency": 1000.0 / interval if interval else 0,
        "signatureValidate": details.get("signatureValidate"),
        "signatureMethod": details.get("signatureMethod"),
        "sensors": details.get("sensors", []),
        "boundingBoxes": details.get("boundingBoxes", []),
        "added": record.added,
        "created": record.added,
        "lastModified": record.added,
        "isDisabled": False,
        "projectId": record.project_id,
        "originalFileName": record.original_filename,
        "size": record.size,
    }


def _json_param(value: str, name: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise StudioError(f"Invalid JSON in parameter {name!r}") from None


def _int_param(query: dict[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise StudioError(f"Parameter {name!r} must be an integer") from None
    if value < 0:
        raise StudioError(f"Parameter {name!r} must not be negative")
    return value


Predicate = Callable[[SampleRecord], bool]


def _metadata_predicate(items: Any) -> Predicate | None:
    """``metadata=[{key, op, values?}, {no_metadata}, {filters_combinator}]``.

    ``eq``: the key is present, with one of ``values`` when given. ``neq``: the opposite
    (a sample without the key matches). Conditions are joined by the combinator
    (default ``and``).
    """
    if not isinstance(items, list):
        raise StudioError("Parameter 'metadata' must be a JSON list")
    conditions: list[Predicate] = []
    combinator = "and"
    for item in items:
        if not isinstance(item, dict):
            raise StudioError("Each metadata filter must be an object")
        if "filters_combinator" in item:
            combinator = item["filters_combinator"]
            if combinator not in ("and", "or"):
                raise StudioError("filters_combinator must be 'and' or 'or'")
        elif "no_metadata" in item:
            conditions.append(_no_metadata_condition(bool(item["no_metadata"])))
        elif "key" in item:
            conditions.append(_key_condition(item))
        else:
            raise StudioError(f"Unknown metadata filter {json.dumps(item)[:80]}")
    if not conditions:
        return None
    joiner = all if combinator == "and" else any
    return lambda r: joiner(cond(r) for cond in conditions)


def _no_metadata_condition(wanted: bool) -> Predicate:
    def check(record: SampleRecord) -> bool:
        return (not record.metadata) == wanted

    return check


def _key_condition(item: dict[str, Any]) -> Predicate:
    key, op, values = item["key"], item.get("op", "eq"), item.get("values")
    if not isinstance(key, str) or op not in ("eq", "neq"):
        raise StudioError("A metadata filter needs a string 'key' and op 'eq' or 'neq'")
    if values is not None and (
        not isinstance(values, list) or not all(isinstance(v, str) for v in values)
    ):
        raise StudioError("Metadata filter 'values' must be a list of strings")

    def matches(record: SampleRecord) -> bool:
        if key not in record.metadata:
            return False
        return values is None or record.metadata[key] in values

    if op == "eq":
        return matches
    return lambda r: not matches(r)


@dataclass(frozen=True)
class SampleQuery:
    """The raw-data listing filters, validated once."""

    category: str
    predicates: tuple[Predicate, ...]
    limit: int | None
    offset: int

    @classmethod
    def parse(cls, query: dict[str, str]) -> SampleQuery:
        category = query.get("category")
        if not category:
            raise StudioError("Missing parameter 'category'")
        if category not in LIST_CATEGORIES:
            raise StudioError(f"Invalid category {category!r}")
        preds: list[Predicate] = []
        if query.get("labels"):
            labels = _json_param(query["labels"], "labels")
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise StudioError("Parameter 'labels' must be a JSON list of strings")
            preds.append(lambda r: r.label in labels)
        if query.get("filename"):
            needle = query["filename"].lower()
            preds.append(lambda r: needle in r.filename.lower())
        if query.get("search"):
            term = query["search"].lower()
            preds.append(lambda r: term in r.filename.lower() or term in (r.label or "").lower())
        min_id, max_id = _int_param(query, "minId"), _int_param(query, "maxId")
        if min_id is not None:
            preds.append(lambda r: r.id >= min_id)
        if max_id is not None:
            preds.append(lambda r: r.id <= max_id)
        if query.get("metadata"):
            meta = _metadata_predicate(_json_param(query["metadata"], "metadata"))
            if meta is not None:
                preds.append(meta)
        return cls(
            category, tuple(preds), _int_param(query, "limit"), _int_param(query, "offset") or 0
        )

    def run(self, store: SampleStore) -> list[SampleRecord]:
        """Matching live samples, before paging."""
        records = store.samples(None if self.category == "all" else self.category)
        return [r for r in records if all(p(r) for p in self.predicates)]

    def page(self, store: SampleStore) -> tuple[int, list[SampleRecord]]:
        """(how many match, the requested page). Without filters SQLite pages, so listing
        100,000 samples a page at a time does not decode the whole project per page."""
        category = None if self.category == "all" else self.category
        if not self.predicates:
            return store.count(category), store.page(category, self.offset, self.limit)
        found = self.run(store)
        end = None if self.limit is None else self.offset + self.limit
        return len(found), found[self.offset : end]


_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"/v1/api/projects"), "projects"),
    ("GET", re.compile(r"/v1/api/(?P<pid>[^/]+)"), "project"),
    ("GET", re.compile(r"/v1/api/(?P<pid>[^/]+)/devkeys/hmac"), "hmac"),
    ("GET", re.compile(r"/v1/api/(?P<pid>[^/]+)/raw-data"), "list"),
    ("GET", re.compile(r"/v1/api/(?P<pid>[^/]+)/raw-data/count"), "count"),
    ("GET", re.compile(r"/v1/api/(?P<pid>[^/]+)/raw-data/(?P<sid>[^/]+)"), "get"),
    ("POST", re.compile(r"/v1/api/(?P<pid>[^/]+)/raw-data/(?P<sid>[^/]+)/metadata"), "metadata"),
    ("DELETE", re.compile(r"/v1/api/(?P<pid>[^/]+)/raw-data/(?P<sid>[^/]+)"), "delete"),
]


class StudioApi:
    """Routes ``/v1`` requests to the store; every method returns (status, JSON body)."""

    def __init__(self, store: SampleStore, hmac_key: str | None) -> None:
        self._store = store
        self._hmac_key = hmac_key

    def handle(self, method: str, path: str, query_string: str, body: bytes) -> Response:
        """Answer one authenticated Studio request."""
        query = {k: v[-1] for k, v in parse_qs(query_string, keep_blank_values=True).items()}
        for route_method, pattern, name in _ROUTES:
            match = pattern.fullmatch(path.rstrip("/"))
            if match is None or route_method != method:
                continue
            params = match.groupdict()
            if "pid" in params and params["pid"] != str(PROJECT_ID):
                return _fail("Project not found")
            try:
                return self._call(name, params, query, body)
            except StudioError as exc:
                return _fail(str(exc))
        return 404, {"success": False, "error": f"Unknown API route {method} {path}"}

    def _call(
        self, name: str, params: dict[str, str], query: dict[str, str], body: bytes
    ) -> Response:
        if name == "projects":
            return 200, {"success": True, "projects": [PROJECT]}
        if name == "project":
            return 200, {"success": True, "project": PROJECT}
        if name == "hmac":
            if self._hmac_key is None:
                return _fail("No development HMAC key configured (see --hmac-key-file)")
            return 200, {"success": True, "hmacKey": self._hmac_key}
        if name in ("list", "count"):
            spec = SampleQuery.parse(query)
            total, page = spec.page(self._store)
            if name == "count":
                return 200, {"success": True, "count": total}
            return 200, {
                "success": True,
                "samples": [sample_json(r) for r in page],
                "totalCount": total,
            }
        sample_id = self._sample_id(params["sid"])
        if name == "get":
            record = self._store.get(sample_id)
            if record is None:
                return _fail("Sample not found")
            return 200, {"success": True, "sample": sample_json(record)}
        if name == "metadata":
            metadata = self._metadata_body(body)
            if not self._store.set_metadata(sample_id, metadata):
                return _fail("Sample not found")
            return 200, {"success": True}
        if not self._store.delete(sample_id):
            return _fail("Sample not found")
        return 200, {"success": True}

    @staticmethod
    def _sample_id(raw: str) -> int:
        if not raw.isdigit():
            raise StudioError("Sample not found")
        return int(raw)

    @staticmethod
    def _metadata_body(body: bytes) -> dict[str, str]:
        try:
            doc = json.loads(body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise StudioError("Body is not valid JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
            raise StudioError('Body must be {"metadata": {key: value}}')
        metadata: dict[str, Any] = doc["metadata"]
        bad = sorted(k for k, v in metadata.items() if not isinstance(v, str))
        if bad:
            raise StudioError(f"Metadata values must be strings (key {bad[0]!r})")
        return metadata
