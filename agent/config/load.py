"""Loading the TOML config: the file read once, every table parsed and checked together.

``parse_config`` reads the core tables (``[device]``, ``[metadata]``, ``[ingestion]``,
``[queue]``, ``[[watch]]``) here and the others through their own modules (``mqtt``,
``capture``, ``ops``, ``project``), all with the same ``Table`` reader; then it checks
what spans tables: watch folders that overlap, and metadata that could never be sent.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ConfigError, InputError
from ..metadata import check_key, check_metadata
from .capture import parse_capture
from .link import parse_link
from .model import (
    AFTER_UPLOAD,
    CONFIG_CATEGORIES,
    DEFAULT_URL,
    MAX_FILES_PER_REQUEST,
    MAX_PRIORITY,
    URL_ENV,
    URL_ENV_SDK,
    CaptureConfig,
    Concurrency,
    Config,
    DiskConfig,
    HealthConfig,
    HttpConfig,
    IngestionConfig,
    QueueConfig,
    StudioConfig,
    SyncConfig,
    TaggingConfig,
    WatchConfig,
    api_key_source,
    hmac_key_source,
)
from .mqtt import parse_mqtt
from .ops import check_service_url, parse_disk, parse_health, parse_http
from .project import parse_studio, parse_sync
from .table import Table, read_toml
from .templates import Template


def default_state_dir() -> Path:
    """Where the queue lives when the config does not say: systemd's or the user's state dir."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edge-uploader"


def load_config(path: Path | None, *, check_dirs: bool = True) -> Config:
    """Load and validate ``path`` (or the built-in defaults when ``None``)."""
    if path is None:
        return parse_config({}, "defaults", Path.cwd(), check_dirs=check_dirs)
    path = path.resolve()
    return parse_config(read_toml(path), str(path), path.parent, check_dirs=check_dirs)


def parse_config(
    data: Mapping[str, Any], source: str, base: Path, *, check_dirs: bool = True
) -> Config:
    """Validate ``data`` into a ``Config``; raises ``ConfigError`` naming every problem."""
    top = Table(data, "", source, base)
    config = _parse_tables(top, source, check_dirs)
    top.finish()
    top.problems.check()
    return config


def _parse_tables(top: Table, source: str, check_dirs: bool) -> Config:
    """Every table, each attempted on its own (a broken one gets its defaults here, and
    the errors are raised together by ``parse_config``), then the checks across tables."""
    attempt = top.problems.attempt
    hostname = socket.gethostname()
    device_id = attempt(lambda: _device(top.table("device"), hostname), hostname)
    metadata = top.metadata("metadata")
    ingestion = attempt(lambda: _ingestion(top.table("ingestion"), source), IngestionConfig())
    queue = attempt(lambda: _queue(top.table("queue")), QueueConfig(default_state_dir()))
    parsed = [attempt(partial(_watch, t, check_dirs), None) for t in top.tables("watch")]
    watches = tuple(w for w in parsed if w is not None)
    attempt(lambda: _check_watches(watches, source), None)
    site = _site(metadata, device_id, hostname)
    mqtt = attempt(lambda: parse_mqtt(top, device_id, site=site, check_files=check_dirs), None)
    capture = attempt(lambda: parse_capture(top, check_dirs=check_dirs), None)
    watches = attempt(lambda: _with_capture_watch(capture, watches, source), watches)
    http = attempt(lambda: parse_http(top.table("http")), HttpConfig())
    health = attempt(lambda: parse_health(top.table("health")), HealthConfig())
    disk = attempt(lambda: parse_disk(top.table("disk")), DiskConfig())
    attempt(lambda: _check_sendable(metadata, None, device_id, source, "metadata"), None)
    for i, w in enumerate(watches):
        key = f"watch[{i}].metadata"
        attempt(partial(_check_sendable, metadata, w.metadata, device_id, source, key), None)
    studio = attempt(lambda: parse_studio(top.table("studio")), StudioConfig())
    sync = attempt(lambda: parse_sync(top.table("sync")), SyncConfig())
    tagging = attempt(lambda: _tagging(top.table("tagging")), TaggingConfig())
    return Config(
        source=source, device_id=device_id, hostname=hostname, metadata=metadata,
        ingestion=ingestion, queue=queue, watches=watches, mqtt=mqtt, capture=capture,
        http=http, health=health, disk=disk, studio=studio, sync=sync, tagging=tagging,
    )  # fmt: skip


def _device(device: Table, hostname: str) -> str:
    device_id = device.get_str("id") or hostname
    _check_plain(device, "id", device_id)
    device.finish()
    return device_id


def _site(metadata: Mapping[str, Template], device_id: str, hostname: str) -> str | None:
    """The device's ``site`` for its site topic: set, and not depending on a file's path."""
    template = metadata.get("site")
    if template is None or any(
        kind == "field" and name not in ("device_id", "hostname") for kind, name in template.parts
    ):
        return None
    return template.render(Path(), device_id, hostname) or None


def _check_sendable(
    metadata: Mapping[str, Template], watch: Mapping[str, Template] | None, device_id: str,
    source: str, key: str,
) -> None:  # fmt: skip
    """Fail at start-up when the metadata every file of a scope gets cannot be sent.

    The tagger adds ``device_id``, ``captured_at`` and ``agent_version`` to every file, so
    they count here at their usual length. Templated values count as empty (their length
    is only known per file); literal values count as they are.
    """
    merged = {k: t.source if t.is_literal else "" for k, t in metadata.items()}
    merged.update({k: t.source if t.is_literal else "" for k, t in (watch or {}).items()})
    merged.update(device_id=device_id, captured_at="2000-01-01T00:00:00.000Z",
                  agent_version=__version__)  # fmt: skip
    try:
        check_metadata(merged, key)
    except InputError as exc:
        every = "with device_id, captured_at and agent_version, which every file gets"
        raise ConfigError(source, key, f"{exc.message} ({every})") from None


def _check_plain(table: Table, name: str, value: str) -> None:
    if not value.isprintable() or "/" in value or len(value) > 128:
        raise table.error(name, "expected printable text without '/' (at most 128 characters)")


def _ingestion(t: Table, source: str) -> IngestionConfig:
    url = (t.get_str("url") or DEFAULT_URL).rstrip("/")
    env = next((n for n in (URL_ENV, URL_ENV_SDK) if os.environ.get(n, "").strip()), None)
    if not t.has("url") and env is not None:
        url = os.environ[env].strip().rstrip("/")  # the config file wins over the variable
        if not url.startswith(("http://", "https://")):
            raise ConfigError("environment", env, f"expected an http(s):// URL, got {url!r}")
    if not url.startswith(("http://", "https://")):
        raise t.error("url", f"expected an http:// or https:// URL, got {url!r}")
    d = IngestionConfig()
    cfg = IngestionConfig(
        url=url,
        api_key=api_key_source(t.key("api_key_file"), t.get_path("api_key_file"), source),
        hmac_key=hmac_key_source(t.key("hmac_key_file"), t.get_path("hmac_key_file"), source),
        category=t.choice("category", d.category, CONFIG_CATEGORIES) or d.category,
        concurrency=_concurrency(t, "concurrency", d.concurrency),
        max_concurrency=t.get_int("max_concurrency", d.max_concurrency, 1, 256),
        max_files_per_request=t.get_int("max_files_per_request", d.max_files_per_request, 1,
                                        MAX_FILES_PER_REQUEST),
        max_request_bytes=t.get_int("max_request_bytes", d.max_request_bytes, 1024, 2**31),
        timeout_seconds=t.get_float("timeout_seconds", d.timeout_seconds, 0.1, 3600.0),
        connect_timeout_seconds=t.get_float("connect_timeout_seconds",
                                            d.connect_timeout_seconds, 0.1, 600.0),
        group_key=t.get_str("group_key") or d.group_key,
        testing_fraction=t.get_float("testing_fraction", d.testing_fraction, 0.0, 1.0),
        allow_duplicates=t.get_bool("allow_duplicates", d.allow_duplicates),
        retry_base_seconds=t.get_float("retry_base_seconds", d.retry_base_seconds, 0.01, 3600.0),
        retry_max_seconds=t.get_float("retry_max_seconds", d.retry_max_seconds, 0.01, 86400.0),
        auth_pause_seconds=t.get_float("auth_pause_seconds", d.auth_pause_seconds, 0.1, 86400.0),
        ca_file=t.get_path("ca_file"),
        allow_insecure_http=t.get_bool("allow_insecure_http", d.allow_insecure_http),
        link=parse_link(t),
    )  # fmt: skip
    try:
        check_key(cfg.group_key, t.key("group_key"))
    except InputError as exc:
        raise t.error("group_key", exc.message) from None
    if cfg.ca_file is not None and not cfg.ca_file.is_file():
        raise t.error("ca_file", f"{cfg.ca_file} is not a readable file")
    t.finish()  # first: a misspelt allow_insecure_http must say "unknown key"
    check_service_url(t, "url", cfg.url, cfg.allow_insecure_http)
    return cfg


def _concurrency(t: Table, name: str, default: Concurrency) -> Concurrency:
    """``"auto"`` or a whole number from 1 to 64."""
    if t.data.get(name) == "auto":
        t.seen.add(name)
        return "auto"
    if isinstance(t.data.get(name), str):
        t.fail(name, 'expected a whole number from 1 to 64 or "auto", got a string')
        return default
    return t.get_int(name, 0, 1, 64) if t.has(name) else default


def _tagging(t: Table) -> TaggingConfig:
    cfg = TaggingConfig(captured_at=t.get_bool("captured_at", TaggingConfig().captured_at))
    t.finish()
    return cfg


def _queue(t: Table) -> QueueConfig:
    path = t.get_path("path") or default_state_dir() / "queue.db"
    default = QueueConfig(path).scan_interval_seconds
    cfg = QueueConfig(
        path=path,
        scan_interval_seconds=t.get_float("scan_interval_seconds", default, 1.0, 86400.0),
    )
    t.finish()
    return cfg


def _watch(t: Table, check_dirs: bool) -> WatchConfig:
    path = t.get_path("path")
    if path is None:
        raise t.error("path", "is required (the folder to watch)")
    if check_dirs and not path.is_dir():
        t.fail("path", f"{path} does not exist or is not a directory")
    d = WatchConfig(path)
    after = t.choice("after_upload", d.after_upload, AFTER_UPLOAD) or d.after_upload
    move_to = t.get_path("move_to")
    if after == "move" and move_to is None:
        raise t.error("move_to", 'is required when after_upload = "move"')
    if move_to is not None and after != "move":
        raise t.error("move_to", 'is only used with after_upload = "move"')
    if move_to is not None and (move_to == path or path in move_to.parents):
        raise t.error("move_to", f"{move_to} is inside the watched folder; it would loop")
    patterns = tuple(p.lower() for p in t.str_list("patterns", d.patterns))
    category = t.choice("category", None, CONFIG_CATEGORIES)
    cfg = WatchConfig(
        path=path,
        patterns=patterns,
        recursive=t.get_bool("recursive", d.recursive),
        label=t.template("label"),
        category=category,
        metadata=t.metadata("metadata"),
        after_upload=after,  # type: ignore[arg-type]
        move_to=move_to,
        settle_seconds=t.get_float("settle_seconds", d.settle_seconds, 0.0, 3600.0),
        force_polling=t.get_bool("force_polling", d.force_polling),
        priority=t.get_int("priority", d.priority, -MAX_PRIORITY, MAX_PRIORITY),
    )
    t.finish()
    return cfg


def _check_watches(watches: tuple[WatchConfig, ...], source: str) -> None:
    seen: dict[Path, int] = {}
    for i, w in enumerate(watches):
        if w.path in seen:
            raise ConfigError(
                source, f"watch[{i}].path", f"{w.path} is already watch[{seen[w.path]}]"
            )
        seen[w.path] = i


def _with_capture_watch(
    capture: CaptureConfig | None, watches: tuple[WatchConfig, ...], source: str
) -> tuple[WatchConfig, ...]:
    """``watches`` plus the capture folder's implicit watch: the watcher and the
    reconciliation scan pick captures up like any other file, so a capture interrupted by
    a crash after its data file was renamed into place is found again on the next start,
    tagged by its sidecar. Overlapping folders are a config error."""
    if capture is None:
        return watches
    for i, w in enumerate(watches):
        inside = capture.dir == w.path or w.path in capture.dir.parents
        if inside or capture.dir in w.path.parents:
            raise ConfigError(
                source,
                "capture.dir",
                f"{capture.dir} overlaps watch[{i}] ({w.path}); the capture folder is watched"
                " on its own, keep it apart from [[watch]] folders",
            )
    return (*watches, capture.watch)
