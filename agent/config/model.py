"""What a validated config is: frozen dataclasses, one per TOML table, and their defaults.

Each default is written once, here, as the field's default; the parsers (``load``,
``mqtt``, ``capture``, ``ops``, ``project``) read missing keys from these fields, so the
example config, the docs and the code cannot disagree about a default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..secrets import SecretSource
from .link import LinkConfig
from .templates import Template

CATEGORIES = ("training", "testing", "validation", "post-processing", "anomaly", "split")
SPLIT_BY_GROUP = "split-by-group"
CONFIG_CATEGORIES = (*CATEGORIES, SPLIT_BY_GROUP)

DEFAULT_PATTERNS = (
    "*.json", "*.cbor", "*.csv", "*.parquet", "*.txt",
    "*.wav",
    "*.jpg", "*.jpeg", "*.png",
    "*.mp4", "*.avi",
)  # fmt: skip
"""The file types the ingestion service accepts (case-insensitive)."""

DEFAULT_URL = "https://ingestion.edgeimpulse.com"
DEFAULT_STUDIO_URL = "https://studio.edgeimpulse.com/v1"
URL_ENV = "EI_INGESTION_URL"
"""Ingestion URL used when ``[ingestion] url`` is not set (e.g. ``upload`` without a config)."""
URL_ENV_SDK = "EI_INGESTION_ENDPOINT"
"""The Edge Impulse Python SDK's name for it, accepted the same way (``URL_ENV`` wins)."""

AfterUpload = Literal["keep", "delete", "move"]
AFTER_UPLOAD: tuple[AfterUpload, ...] = ("keep", "delete", "move")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default(cls: type[Any], name: str) -> Any:
    """The default of a field of one of these dataclasses, for the parsers."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def api_key_source(key: str = "ingestion.api_key_file", file: Path | None = None,
                   config_source: str = "config") -> SecretSource:  # fmt: skip
    return SecretSource("API key", key, file=file, env="EI_API_KEY", credential="api_key",
                        config_source=config_source)  # fmt: skip


def hmac_key_source(key: str = "ingestion.hmac_key_file", file: Path | None = None,
                    config_source: str = "config") -> SecretSource:  # fmt: skip
    return SecretSource("HMAC key", key, file=file, env="EI_HMAC_KEY", credential="hmac_key",
                        config_source=config_source)  # fmt: skip


# -- the core tables -----------------------------------------------------------------------
@dataclass(frozen=True)
class WatchConfig:
    path: Path
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    recursive: bool = True
    label: Template | None = None
    category: str | None = None
    metadata: Mapping[str, Template] = field(default_factory=dict)
    after_upload: AfterUpload = "keep"
    move_to: Path | None = None
    settle_seconds: float = 2.0
    force_polling: bool = False
    priority: int = 0
    """Higher goes first; within a priority, oldest first."""

    @property
    def key(self) -> str:
        """Stable name of this watch in the queue's ``source`` column."""
        return f"watch:{self.path}"


CAPTURE_PRIORITY = 10
MAX_PRIORITY = 1000
Concurrency = int | Literal["auto"]
MAX_FILES_PER_REQUEST = 1000
"""The ingestion service's documented limit of files in one request."""


@dataclass(frozen=True)
class IngestionConfig:
    url: str = DEFAULT_URL
    api_key: SecretSource = field(default_factory=api_key_source)
    hmac_key: SecretSource = field(default_factory=hmac_key_source)
    category: str = "training"
    concurrency: Concurrency = "auto"
    """Requests in flight: "auto" adapts them to the link (1 to ``max_concurrency``); a
    number fixes them."""
    max_concurrency: int = 32
    max_files_per_request: int = 50
    """Files that agree on category, label and metadata share one request, up to this
    (50 by measurement: ``bench/links.py`` in the README)."""
    max_request_bytes: int = 1024 * 1024
    """...and up to this many bytes of files in one request."""
    timeout_seconds: float = 60.0
    connect_timeout_seconds: float = 10.0
    group_key: str = "session"
    testing_fraction: float = 0.2
    allow_duplicates: bool = False
    retry_base_seconds: float = 0.25
    """The first retry of a file that failed transiently comes within this (a sporadic
    error costs a quarter second, not a second); a sustained failure opens the breaker."""
    retry_max_seconds: float = 300.0
    auth_pause_seconds: float = 300.0
    ca_file: Path | None = None
    allow_insecure_http: bool = False
    link: LinkConfig = field(default_factory=LinkConfig)
    """The metered-link keys: bandwidth cap, upload windows, daily budget."""

    @property
    def workers(self) -> int:
        """Upload threads: as many as requests may ever be in flight."""
        return self.max_concurrency if self.concurrency == "auto" else self.concurrency


@dataclass(frozen=True)
class TaggingConfig:
    """What the tagger derives for every file."""

    captured_at: bool = True
    """The file's time as metadata. It makes every file's metadata unique, so files of one
    session can no longer share a request (see ``max_files_per_request``)."""


@dataclass(frozen=True)
class QueueConfig:
    path: Path
    scan_interval_seconds: float = 300.0


# -- [mqtt] ----------------------------------------------------------------------------------
MqttProtocol = Literal["5", "3.1.1"]


@dataclass(frozen=True)
class TlsConfig:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int
    client_id: str
    topic_prefix: str
    username: str | None
    password: SecretSource
    tls: TlsConfig | None
    protocol: MqttProtocol = "5"
    keepalive_seconds: int = 60
    heartbeat_seconds: float = 60.0
    reconnect_min_seconds: int = 1
    reconnect_max_seconds: int = 120
    site_topic_prefix: str = "edge-uploader/site"
    """Site-wide commands arrive on ``{site_topic_prefix}/{site}/capture``; "" = none."""
    fleet_topic: str = "edge-uploader/fleet/capture"
    """Fleet-wide commands; "" = none."""
    site: str | None = None
    """The device's ``[metadata] site`` value (None: no site topic)."""
    topic_pattern: str = "edge-uploader/+"
    """``topic_prefix`` with ``{device_id}`` as ``+``: every device's prefix, for the fleet view."""

    @property
    def capture_topic(self) -> str:
        return f"{self.topic_prefix}/capture"

    @property
    def site_topic(self) -> str | None:
        if not self.site_topic_prefix or self.site is None:
            return None
        return site_capture_topic(self.site_topic_prefix, self.site)

    @property
    def command_topics(self) -> tuple[str, ...]:
        """Every topic a command may arrive on: the device's own, its site's, the fleet's."""
        group = (self.site_topic, self.fleet_topic or None)
        return (self.capture_topic, *(t for t in group if t))

    def is_group_topic(self, topic: str) -> bool:
        return topic != self.capture_topic and topic in self.command_topics

    @property
    def events_topic(self) -> str:
        return f"{self.topic_prefix}/events"

    @property
    def status_topic(self) -> str:
        return f"{self.topic_prefix}/status"


def site_capture_topic(prefix: str, site: str) -> str:
    return f"{prefix}/{site}/capture"


# -- [capture] -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sensor:
    name: str
    units: str


DEFAULT_BAUDRATE = 115200


@dataclass(frozen=True)
class SerialSource:
    name: str
    port: str
    baudrate: int
    sensors: tuple[Sensor, ...]
    frequency_hz: float | None
    """None means "auto": the interval is measured from the lines' arrival times."""
    start_command: str | None = None
    stop_command: str | None = None
    line_timeout_seconds: float = 2.0
    kind: Literal["serial"] = "serial"

    extension = ".json"


@dataclass(frozen=True)
class CommandSource:
    name: str
    argv: tuple[str, ...]
    extension: str
    timeout_seconds: float = 60.0
    kind: Literal["command"] = "command"


CaptureSource = SerialSource | CommandSource


@dataclass(frozen=True)
class CaptureConfig:
    dir: Path
    sources: dict[str, CaptureSource]
    max_duration_ms: int = 60_000
    include_iat: bool = True
    after_upload: AfterUpload = "keep"
    move_to: Path | None = None
    priority: int = CAPTURE_PRIORITY
    """Captures were asked for: by default they go before a backlog of watched files."""

    @property
    def patterns(self) -> tuple[str, ...]:
        exts = sorted({s.extension.lower() for s in self.sources.values()} | {".json"})
        return tuple(f"*{e}" for e in exts)

    @property
    def watch(self) -> WatchConfig:
        """The implicit watch of the capture folder (captures are complete when renamed in)."""
        return WatchConfig(path=self.dir, patterns=self.patterns, recursive=False,
                           after_upload=self.after_upload, move_to=self.move_to,
                           settle_seconds=0.0, priority=self.priority)  # fmt: skip


# -- [http] [health] [disk] --------------------------------------------------------------------
@dataclass(frozen=True)
class HttpConfig:
    """The optional local health endpoint. ``listen`` None: no endpoint."""

    listen: tuple[str, int] | None = None

    @property
    def loopback(self) -> bool:
        return self.listen is None or is_loopback(self.listen[0])


@dataclass(frozen=True)
class HealthConfig:
    """What counts as a hung pipeline (stops the systemd watchdog pings)."""

    stall_seconds: float | None = None
    """Uploads in flight that send no byte and finish nothing for this long: hung.
    None: derived from the ingestion timeouts (see ``effective_stall_seconds``)."""

    def effective_stall_seconds(self, timeout: float, connect_timeout: float) -> float:
        """A legitimate request is silent for at most one read timeout (plus connect);
        uploads count every body chunk they send as progress, so a large file on a slow
        link never looks hung."""
        if self.stall_seconds is not None:
            return self.stall_seconds
        return max(300.0, timeout + connect_timeout + 60.0)


@dataclass(frozen=True)
class DiskConfig:
    """The free-space floor of the capture and queue file systems."""

    min_free_bytes: int = 64 * 1024 * 1024
    min_free_percent: float = 0.0
    prune_delivered: bool = False
    check_interval_seconds: float = 30.0

    def floor(self, total_bytes: int) -> int:
        """The floor in bytes for a file system of ``total_bytes``: the larger rule wins."""
        return max(self.min_free_bytes, int(total_bytes * self.min_free_percent / 100.0))


# -- [studio] [sync] -------------------------------------------------------------------------
@dataclass(frozen=True)
class StudioConfig:
    url: str = DEFAULT_STUDIO_URL
    project_id: int | None = None
    timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 10.0
    concurrency: int = 4
    retry_attempts: int = 5
    """Tries per request for transient failures (network, 408, 429, 5xx) before giving up."""
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    allow_insecure_http: bool = False


@dataclass(frozen=True)
class SyncConfig:
    delete_remote: bool = False
    grace_seconds: float = 3600.0
    max_deletes_per_hour: int = 50
    check_interval_seconds: float = 300.0


# -- the whole file --------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    source: str
    """The config file (or "defaults") for messages."""
    device_id: str
    hostname: str
    metadata: Mapping[str, Template]
    ingestion: IngestionConfig
    queue: QueueConfig
    watches: tuple[WatchConfig, ...]
    mqtt: MqttConfig | None = None
    capture: CaptureConfig | None = None
    http: HttpConfig = field(default_factory=HttpConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    disk: DiskConfig = field(default_factory=DiskConfig)
    studio: StudioConfig = field(default_factory=StudioConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    tagging: TaggingConfig = field(default_factory=TaggingConfig)

    def watch_for_key(self, key: str) -> WatchConfig | None:
        """The watch a queue row's ``source`` names, if it is still configured."""
        return next((w for w in self.watches if w.key == key), None)
