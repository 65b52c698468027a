"""The ``[studio]`` and ``[sync]`` config tables: where the Studio API is, and deletion sync.

Errors name the file and the key path like every other config error::

    [studio]
    url = "https://studio.edgeimpulse.com/v1"   # the Studio API base (tests: http://127.0.0.1:P/v1)
    project_id = 12345                          # optional: found with GET /api/projects
    timeout_seconds = 30
    concurrency = 4                             # parallel requests of backfill and sync
    allow_insecure_http = false                 # plain http:// beyond loopback: say so here

    [sync]
    delete_remote = false                       # opt-in: delete the sample when its file goes
    grace_seconds = 3600                        # wait this long after the file went
    max_deletes_per_hour = 50                   # more pending than this: delete nothing, warn
    check_interval_seconds = 300                # reconciliation pass for missed deletions

The API key is the ingestion key (``[ingestion] api_key_file`` / ``EI_API_KEY``): a project
API key works for both services.
"""

from __future__ import annotations

from functools import partial

from .model import StudioConfig, SyncConfig, default
from .ops import check_service_url
from .table import Table

_studio = partial(default, StudioConfig)
_sync = partial(default, SyncConfig)


def parse_studio(t: Table) -> StudioConfig:
    url = (t.get_str("url") or _studio("url")).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise t.error("url", f"expected an http:// or https:// URL, got {url!r}")
    allow_insecure_http = t.get_bool("allow_insecure_http", _studio("allow_insecure_http"))
    check_service_url(t, "url", url, allow_insecure_http)  # the API key travels with it
    project_id: int | None = None
    if t.has("project_id"):
        project_id = t.get_int("project_id", 0, 1, 2**53)
    cfg = StudioConfig(
        url=url,
        project_id=project_id,
        timeout_seconds=t.get_float("timeout_seconds", _studio("timeout_seconds"), 0.1, 3600.0),
        connect_timeout_seconds=t.get_float(
            "connect_timeout_seconds", _studio("connect_timeout_seconds"), 0.1, 600.0
        ),
        concurrency=t.get_int("concurrency", _studio("concurrency"), 1, 32),
        retry_attempts=t.get_int("retry_attempts", _studio("retry_attempts"), 1, 100),
        retry_base_seconds=t.get_float(
            "retry_base_seconds", _studio("retry_base_seconds"), 0.01, 3600.0
        ),
        retry_max_seconds=t.get_float(
            "retry_max_seconds", _studio("retry_max_seconds"), 0.01, 86400.0
        ),
        allow_insecure_http=allow_insecure_http,
    )
    t.finish()
    return cfg


def parse_sync(t: Table) -> SyncConfig:
    cfg = SyncConfig(
        delete_remote=t.get_bool("delete_remote", _sync("delete_remote")),
        grace_seconds=t.get_float("grace_seconds", _sync("grace_seconds"), 0.0, 30 * 86400.0),
        max_deletes_per_hour=t.get_int(
            "max_deletes_per_hour", _sync("max_deletes_per_hour"), 0, 1_000_000
        ),
        check_interval_seconds=t.get_float(
            "check_interval_seconds", _sync("check_interval_seconds"), 1.0, 86400.0
        ),
    )
    t.finish()
    return cfg
