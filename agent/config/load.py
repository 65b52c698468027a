"""The TOML config, validated once into frozen dataclasses.

Every error names the file, the dotted key path and what was expected, and the CLI turns
it into exit status 78. Unknown keys are errors too: a typo such as ``after_uplaod`` must
not silently fall back to a default on a device nobody looks at.

Relative paths are resolved against the folder that holds the config file, so the same
file works whatever the current directory is (systemd starts services in ``/``).
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .. import __version__
from ..errors import ConfigError, InputError
from ..metadata import check_key, check_metadata, check_value
from ..secrets import SecretSource
from .ops import (
    DiskConfig,
    HealthConfig,
    HttpConfig,
    check_service_url,
    parse_disk,
    parse_health,
    parse_http,
)
from .project import StudioConfig, SyncConfig, parse_studio, parse_sync
from .templates import Template, parse_template

if TYPE_CHECKING:
    from .capture import CaptureConfig, MqttConfig

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

AfterUpload = Literal["keep", "delete", "move"]


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

    @property
    def key(self) -> str:
        """Stable name of this watch in the queue's ``source`` column."""
        return f"watch:{self.path}"


@dataclass(frozen=True)
class IngestionConfig:
    url: str = DEFAULT_URL
    api_key: SecretSource = field(
        default_factory=lambda: SecretSource(
            "API key", "ingestion.api_key_file", env="EI_API_KEY", credential="api_key"
        )
    )
    hmac_key: SecretSource = field(
        default_factory=lambda: SecretSource(
            "HMAC key", "ingestion.hmac_key_file", env="EI_HMAC_KEY", credential="hmac_key"
        )
    )
    category: str = "training"
    concurrency: int = 4
    timeout_seconds: float = 60.0
    connect_timeout_seconds: float = 10.0
    group_key: str = "session"
    testing_fraction: float = 0.2
    allow_duplicates: bool = False
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    auth_pause_seconds: float = 300.0
    ca_file: Path | None = None
    allow_insecure_http: bool = False


@dataclass(frozen=True)
class QueueConfig:
    path: Path
    scan_interval_seconds: float = 300.0


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


def default_state_dir() -> Path:
    """Where the queue lives when the config does not say: systemd's or the user's state dir."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edge-uploader"


class Table:
    """A TOML table being read: typed getters that name the key path, and unknown-key checks."""

    def __init__(self, data: Mapping[str, Any], path: str, source: str, base: Path) -> None:
        self.data = data
        self.path = path
        self.source = source
        self.base = base
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.source, self.key(name), message)

    def has(self, name: str) -> bool:
        return name in self.data

    def _get(self, name: str) -> Any:
        self.seen.add(name)
        return self.data.get(name)

    def get_str(
        self, name: str, default: str | None = None, *, nonempty: bool = True
    ) -> str | None:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.error(name, f"expected a string, got {_tname(value)}")
        if nonempty and not value.strip():
            raise self.error(name, "expected a non-empty string")
        return value

    def req_str(self, name: str) -> str:
        value = self.get_str(name)
        if value is None:
            raise self.error(name, "is required")
        return value

    def get_bool(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {_tname(value)}")
        return value

    def get_int(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(
                name, f"expected a whole number from {lo} to {hi}, got {_tname(value)}"
            )
        if not lo <= value <= hi:
            raise self.error(name, f"expected a whole number from {lo} to {hi}, got {value}")
        return value

    def get_float(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"expected a number from {lo:g} to {hi:g}, got {_tname(value)}")
        if not lo <= float(value) <= hi:
            raise self.error(name, f"expected a number from {lo:g} to {hi:g}, got {value}")
        return float(value)

    def choice(self, name: str, default: str | None, choices: tuple[str, ...]) -> str | None:
        value = self.get_str(name)
        if value is None:
            return default
        if value not in choices:
            raise self.error(name, f"expected one of {', '.join(choices)}; got {value!r}")
        return value

    def get_path(self, name: str, default: Path | None = None) -> Path | None:
        value = self.get_str(name)
        if value is None:
            return default
        return (self.base / os.path.expanduser(value)).resolve()

    def str_list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(name, "expected a list of non-empty strings")
        if not value:
            raise self.error(name, "expected at least one entry")
        return tuple(value)

    def table(self, name: str) -> Table:
        value = self._get(name)
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise self.error(name, f"expected a table, got {_tname(value)}")
        return Table(value, self.key(name), self.source, self.base)

    def tables(self, name: str) -> list[Table]:
        value = self._get(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise self.error(name, f"expected an array of tables ([[{self.key(name)}]])")
        return [
            Table(v, f"{self.key(name)}[{i}]", self.source, self.base) for i, v in enumerate(value)
        ]

    def template(self, name: str) -> Template | None:
        value = self.get_str(name, nonempty=False)
        if value is None:
            return None
        return self._parse_template(value, self.key(name))

    def metadata(self, name: str) -> dict[str, Template]:
        """A table of metadata templates; every value must be a string."""
        sub = self.table(name)
        out: dict[str, Template] = {}
        for key, value in sub.data.items():
            where = sub.key(key)
            try:
                check_key(key, where)
                check_value(value, where)
            except InputError as exc:
                raise ConfigError(self.source, where, exc.message) from None
            out[key] = self._parse_template(value, where)
            sub.seen.add(key)
        return out

    def _parse_template(self, text: str, where: str) -> Template:
        try:
            return parse_template(text, where)
        except InputError as exc:
            raise ConfigError(self.source, where, exc.message) from None

    def finish(self, extra_known: tuple[str, ...] = ()) -> None:
        """Reject keys nobody read: they are typos or options of a newer version."""
        unknown = sorted(set(self.data) - self.seen - set(extra_known))
        if unknown:
            raise ConfigError(self.source, self.key(unknown[0]), "unknown key")


def _tname(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list"}
    return names.get(type(value), "a table" if isinstance(value, Mapping) else type(value).__name__)


def read_toml(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None


def load_config(path: Path | None, *, check_dirs: bool = True) -> Config:
    """Load and validate ``path`` (or the built-in defaults when ``None``)."""
    if path is None:
        return parse_config({}, "defaults", Path.cwd(), check_dirs=check_dirs)
    path = path.resolve()
    return parse_config(read_toml(path), str(path), path.parent, check_dirs=check_dirs)


def parse_config(
    data: Mapping[str, Any], source: str, base: Path, *, check_dirs: bool = True
) -> Config:
    top = Table(data, "", source, base)
    hostname = socket.gethostname()

    device = top.table("device")
    device_id = device.get_str("id") or hostname
    _check_plain(device, "id", device_id)
    device.finish()

    metadata = top.metadata("metadata")
    ingestion = _ingestion(top.table("ingestion"), source)
    queue = _queue(top.table("queue"))
    watches = tuple(_watch(t, check_dirs) for t in top.tables("watch"))
    _check_watches(watches, source)
    from .capture import implicit_watches, parse_capture, parse_mqtt

    mqtt = parse_mqtt(top, device_id, check_files=check_dirs)
    capture = parse_capture(top, check_dirs=check_dirs)
    watches = implicit_watches(capture, watches, source)
    http = parse_http(top.table("http"))
    health = parse_health(top.table("health"))
    disk = parse_disk(top.table("disk"))

    _check_sendable(metadata, None, device_id, source, "metadata")
    for i, w in enumerate(watches):
        _check_sendable(metadata, w.metadata, device_id, source, f"watch[{i}].metadata")

    studio, sync = parse_studio(top.table("studio")), parse_sync(top.table("sync"))
    top.finish()
    return Config(
        source=source,
        device_id=device_id,
        hostname=hostname,
        metadata=metadata,
        ingestion=ingestion,
        queue=queue,
        watches=watches,
        mqtt=mqtt,
        capture=capture,
        http=http,
        health=health,
        disk=disk,
        studio=studio,
        sync=sync,
    )


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
    if not t.has("url") and os.environ.get(URL_ENV, "").strip():
        url = os.environ[URL_ENV].strip().rstrip("/")  # the config file wins over the variable
        if not url.startswith(("http://", "https://")):
            raise ConfigError("environment", URL_ENV, f"expected an http(s):// URL, got {url!r}")
    if not url.startswith(("http://", "https://")):
        raise t.error("url", f"expected an http:// or https:// URL, got {url!r}")
    api_key_file = t.get_path("api_key_file")
    hmac_key_file = t.get_path("hmac_key_file")
    category = t.choice("category", "training", CONFIG_CATEGORIES) or "training"
    cfg = IngestionConfig(
        url=url,
        api_key=SecretSource(
            "API key", t.key("api_key_file"), file=api_key_file, env="EI_API_KEY",
            credential="api_key", config_source=source,
        ),
        hmac_key=SecretSource(
            "HMAC key", t.key("hmac_key_file"), file=hmac_key_file, env="EI_HMAC_KEY",
            credential="hmac_key", config_source=source,
        ),
        category=category,
        concurrency=t.get_int("concurrency", 4, 1, 64),
        timeout_seconds=t.get_float("timeout_seconds", 60.0, 0.1, 3600.0),
        connect_timeout_seconds=t.get_float("connect_timeout_seconds", 10.0, 0.1, 600.0),
        group_key=t.get_str("group_key") or "session",
        testing_fraction=t.get_float("testing_fraction", 0.2, 0.0, 1.0),
        allow_duplicates=t.get_bool("allow_duplicates", False),
        retry_base_seconds=t.get_float("retry_base_seconds", 1.0, 0.01, 3600.0),
        retry_max_seconds=t.get_float("retry_max_seconds", 300.0, 0.01, 86400.0),
        auth_pause_seconds=t.get_float("auth_pause_seconds", 300.0, 0.1, 86400.0),
        ca_file=t.get_path("ca_file"),
        allow_insecure_http=t.get_bool("allow_insecure_http", False),
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


def _queue(t: Table) -> QueueConfig:
    path = t.get_path("path") or default_state_dir() / "queue.db"
    cfg = QueueConfig(
        path=path,
        scan_interval_seconds=t.get_float("scan_interval_seconds", 300.0, 1.0, 86400.0),
    )
    t.finish()
    return cfg


def _watch(t: Table, check_dirs: bool) -> WatchConfig:
    path = t.get_path("path")
    if path is None:
        raise t.error("path", "is required (the folder to watch)")
    if check_dirs and not path.is_dir():
        raise t.error("path", f"{path} does not exist or is not a directory")
    after = t.choice("after_upload", "keep", ("keep", "delete", "move")) or "keep"
    move_to = t.get_path("move_to")
    if after == "move" and move_to is None:
        raise t.error("move_to", 'is required when after_upload = "move"')
    if move_to is not None and after != "move":
        raise t.error("move_to", 'is only used with after_upload = "move"')
    if move_to is not None and (move_to == path or path in move_to.parents):
        raise t.error("move_to", f"{move_to} is inside the watched folder; it would loop")
    patterns = tuple(p.lower() for p in t.str_list("patterns", DEFAULT_PATTERNS))
    category = t.choice("category", None, CONFIG_CATEGORIES)
    cfg = WatchConfig(
        path=path,
        patterns=patterns,
        recursive=t.get_bool("recursive", True),
        label=t.template("label"),
        category=category,
        metadata=t.metadata("metadata"),
        after_upload=after,  # type: ignore[arg-type]
        move_to=move_to,
        settle_seconds=t.get_float("settle_seconds", 2.0, 0.0, 3600.0),
        force_polling=t.get_bool("force_polling", False),
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
