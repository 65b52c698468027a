"""A small client of the Studio API: list, get, set metadata and delete samples.

Used by ``metadata backfill``, ``sync`` and the deletion-sync component; the uploader stays
the only code that talks to the *ingestion* service. Endpoints (ingestion reference §11),
under ``[studio] url`` (default ``https://studio.edgeimpulse.com/v1``), header ``x-api-key``:

- ``GET /api/projects``                                   find the project of a project key
- ``GET /api/{project}``                                  check the project exists
- ``GET /api/{project}/raw-data?category=&limit=&offset=&labels=&filename=&metadata=``
- ``GET /api/{project}/raw-data/{sample}``
- ``POST /api/{project}/raw-data/{sample}/metadata``       body ``{"metadata": {...}}``
- ``DELETE /api/{project}/raw-data/{sample}``

Errors are the branches of ``errors.RemoteError``, decided by the status table both
services share (``remote.http.status_error``) and, for Studio's own answers, ``_classify``:

==========================================  ==============================================
what came back                              raised
==========================================  ==============================================
connect/read errors, timeouts, 408, 425,    ``TransientError`` after ``retry_attempts``
429, 5xx, 200 without a JSON object         tries with backoff (``Retry-After`` honoured)
401, 403                                    ``AuthError`` (never retried)
3xx                                         ``UrlError`` (an ``AuthError``: check the URL)
200 ``{"success": false, "error": ...}``    ``SampleNotFound`` / ``ProjectNotFound`` when the
(Studio's usual way to fail), 404           text says so, else ``PermanentError`` with it
other 4xx, an invalid body                  ``PermanentError``
==========================================  ==============================================

Responses are read up to ``MAX_RESPONSE_BYTES`` and validated: sample ids are positive
integers and metadata is an object of strings, so nothing the service sends can smuggle
other types into a metadata map we write back. Whether ``POST .../metadata`` merges or
replaces is not documented, so ``merge_metadata`` reads, merges and writes the full map.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ..clock import Clock, retry_delay, system_clock
from ..config import Config
from ..errors import AuthError, ConfigError, PermanentError, TransientError, UrlError
from ..metadata import check_metadata
from ..secrets import Secret
from .categories import LIST_CATEGORIES as LIST_CATEGORIES
from .categories import PAGE_SIZE as PAGE_SIZE
from .http import (
    clean,
    error_text,
    make_client,
    parse_json,
    parse_retry_after,
    read_limited,
    status_error,
    transport_reason,
)

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
MAX_REMOTE_KEYS = 1000


class SampleNotFound(PermanentError):
    """The sample does not exist (any more) in the project."""


class ProjectNotFound(PermanentError):
    """The project id is unknown, or the key has no access to it."""


@dataclass(frozen=True)
class RemoteSample:
    """The fields of a Studio ``Sample`` that we use, validated."""

    id: int
    filename: str
    category: str | None
    label: str | None
    metadata: dict[str, str]
    sha256: str | None = None


@dataclass(frozen=True)
class MetaFilter:
    """A ``metadata`` listing filter: ``key`` is (``eq``) or is not (``neq``) one of ``values``."""

    key: str
    op: str = "eq"
    values: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "op": self.op}
        if self.values:
            out["values"] = list(self.values)
        return out

    def matches(self, metadata: Mapping[str, str]) -> bool:
        """The same test the service applies, for selections made on our side."""
        hit = self.key in metadata and (not self.values or metadata[self.key] in self.values)
        return hit if self.op == "eq" else not hit


@dataclass(frozen=True)
class Merge:
    """What ``merge_metadata`` found and did."""

    sample: RemoteSample
    after: dict[str, str]
    changed: dict[str, tuple[str | None, str]]
    """key -> (old value or None, new value), only for keys whose value changes."""
    written: bool


def parse_sample(data: object, where: str = "sample") -> RemoteSample:
    """Validate one ``Sample`` object from the service; ``PermanentError`` if unusable."""
    if not isinstance(data, dict):
        raise PermanentError(f"{where}: expected an object from the Studio API")
    sid = data.get("id")
    if isinstance(sid, bool) or not isinstance(sid, int) or sid < 1:
        raise PermanentError(f"{where}: the Studio API sent a sample id that is not a number")
    where = f"sample {sid}"
    name = data.get("filename")
    name = name if isinstance(name, str) else ""
    label = data.get("label")
    category = data.get("category")
    sha = data.get("sha256Hash")
    raw = data.get("metadata")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PermanentError(f"{where}: metadata is not an object")
    if len(raw) > MAX_REMOTE_KEYS:
        raise PermanentError(f"{where}: more than {MAX_REMOTE_KEYS} metadata keys")
    for key, value in raw.items():
        if not isinstance(value, str):
            raise PermanentError(
                f"{where}: metadata value of {key!r} is {type(value).__name__}, not a string"
            )
    return RemoteSample(
        id=sid,
        filename=name[:1024],
        category=category if isinstance(category, str) else None,
        label=label if isinstance(label, str) else None,
        metadata=dict(raw),
        sha256=sha if isinstance(sha, str) else None,
    )


def _classify(
    status: int, headers: Mapping[str, str], body: bytes, now: float, what: str,
    *, sample_scope: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Turn one response into its JSON object, or raise the error class that fits.

    ``sample_scope``: the request names one sample, so "not found" means that sample
    (unless the text names the project) and a bare 404 does too.
    """
    data: Any = parse_json(body)
    text = clean(error_text(data, body))
    if status == 200:
        if not isinstance(data, dict):
            raise TransientError(f"{what}: the Studio API answered 200 without a JSON object",
                                 status=status)  # fmt: skip
        if data.get("success") is not False:
            return data
        raise _refusal(status, text, what, sample_scope)
    error = status_error(status) or PermanentError  # a 2xx other than 200 is not a success
    if error is UrlError:
        where = headers.get("location", "")
        raise UrlError(f"{what}: HTTP {status} redirect to {where!r}: check [studio] url",
                       status=status)  # fmt: skip
    if error is AuthError:
        raise AuthError(f"{what}: the Studio API refused the API key (HTTP {status}"
                        + (f": {text}" if text else "") + "); check the key and [studio]"
                        " project_id", status=status)  # fmt: skip
    if error is TransientError:
        raise TransientError(f"{what}: HTTP {status}" + (f": {text}" if text else ""),
                             status=status, retry_after=parse_retry_after(
                                 headers.get("retry-after"), now))  # fmt: skip
    raise _refusal(status, text, what, sample_scope)


def _refusal(status: int, text: str, what: str, sample_scope: bool) -> PermanentError:
    """A 4xx, or Studio's usual way to fail (200 with ``success: false``)."""
    low = text.lower()
    if "project" in low and ("not found" in low or "no such" in low or "unknown" in low):
        return ProjectNotFound(f"{what}: {text}", status=status)
    if sample_scope and ("not found" in low or "no such" in low or status == 404):
        return SampleNotFound(f"{what}: {text or 'not found'}", status=status)
    if status == 200:
        return PermanentError(f"{what}: {text or 'refused'}", status=status)
    return PermanentError(f"{what}: HTTP {status}" + (f": {text}" if text else ""),
                          status=status)  # fmt: skip


class StudioClient:
    """One project's samples. Thread-safe (one shared ``httpx.Client``)."""

    def __init__(
        self,
        http: httpx.Client,
        url: str,
        api_key: Secret,
        *,
        project_id: int | None = None,
        retry_attempts: int = 5,
        retry_base_seconds: float = 1.0,
        retry_max_seconds: float = 60.0,
        cancel: threading.Event | None = None,
        clock: Clock = system_clock,
        rng: Callable[[], float] = random.random,
        source: str = "config",
    ) -> None:
        self.http = http
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.retry_attempts = retry_attempts
        self.retry_base = retry_base_seconds
        self.retry_max = retry_max_seconds
        self.cancel = cancel or threading.Event()
        self.clock = clock
        self.rng = rng
        self.source = source
        self._project_id = project_id
        self._checked = False
        self._lock = threading.Lock()

    @classmethod
    def from_config(
        cls, config: Config, *, transport: httpx.BaseTransport | None = None,
        cancel: threading.Event | None = None, clock: Clock = system_clock,
    ) -> StudioClient:  # fmt: skip
        s = config.studio
        http = make_client(
            concurrency=s.concurrency, timeout=s.timeout_seconds,
            connect_timeout=s.connect_timeout_seconds, ca_file=config.ingestion.ca_file,
            transport=transport,
        )  # fmt: skip
        return cls(
            http, s.url, config.ingestion.api_key.load(), project_id=s.project_id,
            retry_attempts=s.retry_attempts, retry_base_seconds=s.retry_base_seconds,
            retry_max_seconds=s.retry_max_seconds, cancel=cancel, clock=clock,
            source=config.source,
        )  # fmt: skip

    def close(self) -> None:
        self.http.close()

    # -- plumbing ------------------------------------------------------------------------
    def _request(
        self, method: str, path: str, what: str, *, params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None, sample_scope: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._once(method, path, what, params, body, sample_scope)
            except TransientError as exc:
                if attempt >= self.retry_attempts or self.cancel.is_set():
                    raise
                delay = retry_delay(attempt, self.retry_base, self.retry_max, exc.retry_after,
                                    self.rng)  # fmt: skip
                if self.cancel.wait(delay):
                    raise

    def _once(
        self, method: str, path: str, what: str, params: Mapping[str, str] | None,
        body: Mapping[str, Any] | None, sample_scope: bool,
    ) -> dict[str, Any]:  # fmt: skip
        headers = {"x-api-key": self.api_key.reveal(), "accept": "application/json"}
        content = None
        if body is not None:
            headers["content-type"] = "application/json"
            content = json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode()
        try:
            with self.http.stream(method, self.url + path, params=params, headers=headers,
                                  content=content) as response:  # fmt: skip
                raw, more = read_limited(response, MAX_RESPONSE_BYTES)
        except httpx.TimeoutException as exc:
            raise TransientError(f"{what}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise TransientError(f"{what}: network error: {transport_reason(exc)}") from None
        if more:
            raise PermanentError(f"{what}: the answer is larger than {MAX_RESPONSE_BYTES} bytes")
        return _classify(response.status_code, response.headers, raw, self.clock(), what,
                         sample_scope=sample_scope)  # fmt: skip

    # -- the project ---------------------------------------------------------------------
    @property
    def project_id(self) -> int:
        """The configured project, or the only one this key can see (``GET /api/projects``)."""
        with self._lock:
            if self._project_id is None:
                self._project_id = self._discover()
            return self._project_id

    def _discover(self) -> int:
        data = self._request("GET", "/api/projects", "list projects")
        projects = data.get("projects")
        if not isinstance(projects, list):
            raise PermanentError("list projects: the Studio API sent no 'projects' list")
        ids: list[int] = []
        for p in projects[:1000]:
            pid = p.get("id") if isinstance(p, dict) else None
            if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
                ids.append(pid)
        if len(ids) == 1:
            return ids[0]
        if not ids:
            raise ConfigError(self.source, "studio.project_id",
                              "the API key gives access to no project")  # fmt: skip
        shown = ", ".join(str(i) for i in ids[:10])
        raise ConfigError(
            self.source, "studio.project_id",
            f"the API key gives access to {len(ids)} projects ({shown}); set project_id",
        )  # fmt: skip

    def check_project(self) -> int:
        """Make sure the project exists for this key before changing anything; its id.

        An unknown project is a ``ConfigError`` naming ``[studio] project_id``.
        """
        pid = self.project_id
        if self._checked:
            return pid
        try:
            self._request("GET", f"/api/{pid}", f"project {pid}")
        except ProjectNotFound as exc:
            raise ConfigError(
                self.source,
                "studio.project_id",
                f"project {pid} is unknown to the Studio API ({exc})",
            ) from None
        except PermanentError as exc:
            if exc.status == 404:
                raise ConfigError(
                    self.source,
                    "studio.url",
                    f"{self.url} answered 404 for project {pid}: check the URL ({exc})",
                ) from None
            raise
        self._checked = True
        return pid

    # -- samples -------------------------------------------------------------------------
    def _raw(self, sample_id: int) -> str:
        return f"/api/{self.project_id}/raw-data/{int(sample_id)}"

    def list_samples(
        self, category: str = "all", *, labels: Sequence[str] = (), filename: str | None = None,
        metadata: Sequence[MetaFilter] = (), page_size: int = PAGE_SIZE,
    ) -> Iterator[RemoteSample]:  # fmt: skip
        """Every sample matching the filters, a page at a time (memory stays flat).

        With ``totalCount`` in the answers, paging goes on until that many were read or a
        page is empty, so a service that caps ``limit`` below ``page_size`` is read in full.
        Offsets shift if the listing changes while it is read; callers that change what
        they list (a backfill) collect the ids first and change afterwards.
        """
        if category not in LIST_CATEGORIES:
            raise PermanentError(f"unknown category {category!r}")
        params = self._filters(category, labels, filename, metadata)
        offset = 0
        seen_total: int | None = None
        previous: list[int] = []
        while True:
            page_params = {**params, "limit": str(page_size), "offset": str(offset)}
            data = self._request("GET", f"/api/{self.project_id}/raw-data",
                                 f"list samples (offset {offset})", params=page_params)  # fmt: skip
            samples = data.get("samples")
            if not isinstance(samples, list):
                raise PermanentError("list samples: the Studio API sent no 'samples' list")
            total = data.get("totalCount")
            if isinstance(total, int) and not isinstance(total, bool):
                seen_total = total
            page = [parse_sample(item, f"list samples (offset {offset})") for item in samples]
            ids = [s.id for s in page]
            if ids and ids == previous:
                raise PermanentError(
                    "list samples: the Studio API sent the same page twice (it ignores"
                    " 'offset'); stopping instead of listing forever"
                )
            previous = ids
            yield from page
            offset += len(samples)
            if not samples or (seen_total is not None and offset >= seen_total):
                return
            if seen_total is None and len(samples) < page_size:
                return  # a short page ends the listing only when no total says otherwise

    def count(
        self, category: str = "all", *, labels: Sequence[str] = (), filename: str | None = None,
        metadata: Sequence[MetaFilter] = (),
    ) -> int:  # fmt: skip
        params = self._filters(category, labels, filename, metadata)
        data = self._request("GET", f"/api/{self.project_id}/raw-data/count", "count samples",
                             params=params)  # fmt: skip
        n = data.get("count")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise PermanentError("count samples: the Studio API sent no count")
        return n

    @staticmethod
    def _filters(
        category: str, labels: Sequence[str], filename: str | None,
        metadata: Sequence[MetaFilter],
    ) -> dict[str, str]:  # fmt: skip
        params = {"category": category}
        if labels:
            params["labels"] = json.dumps(list(labels))
        if filename:
            params["filename"] = filename
        if metadata:
            params["metadata"] = json.dumps([m.as_json() for m in metadata])
        return params

    def get_sample(self, sample_id: int) -> RemoteSample:
        """One sample; ``SampleNotFound`` when it is not (or no longer) in the project."""
        data = self._request("GET", self._raw(sample_id), f"get sample {sample_id}",
                             sample_scope=True)  # fmt: skip
        sample = parse_sample(data.get("sample", data), f"sample {sample_id}")
        if sample.id != sample_id:
            raise PermanentError(f"get sample {sample_id}: the Studio API sent sample {sample.id}")
        return sample

    def set_metadata(self, sample_id: int, metadata: Mapping[str, str]) -> None:
        """Write the *full* metadata map of a sample (validated: strings only, bounded)."""
        checked = check_metadata(dict(metadata), f"metadata of sample {sample_id}")
        self._request("POST", self._raw(sample_id) + "/metadata",
                      f"set metadata of sample {sample_id}", body={"metadata": checked},
                      sample_scope=True)  # fmt: skip

    def merge_metadata(
        self, sample_id: int, changes: Mapping[str, str], *, write: bool = True,
        sample: RemoteSample | None = None,
    ) -> Merge:  # fmt: skip
        """Read the sample, merge ``changes`` into its map, write the full map if anything
        changes (``write=False``: only say what would change). Keys not in ``changes`` keep
        their values; a sample that already has every value is not written."""
        current = sample if sample is not None else self.get_sample(sample_id)
        diff = {
            k: (current.metadata.get(k), v)
            for k, v in changes.items()
            if current.metadata.get(k) != v
        }
        after = {**current.metadata, **changes}
        if diff and write:
            self.set_metadata(sample_id, after)
        return Merge(current, after, diff, written=bool(diff) and write)

    def delete_sample(self, sample_id: int) -> bool:
        """Delete a sample; False when it was already gone."""
        try:
            self._request("DELETE", self._raw(sample_id), f"delete sample {sample_id}",
                          sample_scope=True)  # fmt: skip
        except SampleNotFound:
            return False
        return True
